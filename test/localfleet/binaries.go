package localfleet

import (
	"fmt"
	"os"
	"path/filepath"
)

// DefaultBin is the default path of the binary name for the programs that run the fleet
// (demo, benchmark): $env if set, else $BIN_DIR (or bin/) joined with name.
func DefaultBin(env, name string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	dir := os.Getenv("BIN_DIR")
	if dir == "" {
		dir = "bin"
	}
	return filepath.Join(dir, name)
}

// ResolveBinaries makes each path absolute and checks that it is a file, so that a missing
// `make build` is named as such rather than failing later at exec.
func ResolveBinaries(paths ...*string) error {
	for _, p := range paths {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("resolve %s: %w", *p, err)
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() {
			return fmt.Errorf("binary %s not found: run `make build` first", abs)
		}
		*p = abs
	}
	return nil
}
