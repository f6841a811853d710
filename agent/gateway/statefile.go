package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// maxStateFile bounds a JSON state file (pending keys, enrolment secrets) read from STATE_DIR.
const maxStateFile = 4 << 20

// updateStateFile runs a read-modify-write of the JSON file STATE_DIR/name under an flock on
// name+".lock", so the gateway and the admin CLI never lose each other's changes. A missing
// file decodes as the zero value. change returns whether to write v back.
func updateStateFile[T any](dir, name string, change func(v *T) (bool, error)) error {
	if dir == "" {
		return errors.New("no STATE_DIR configured")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, name)
	unlock, err := flockFile(path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	var v T
	if err := readStateFile(path, &v); err != nil {
		return err
	}
	write, err := change(&v)
	if err != nil || !write {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return keys.WriteFileAtomic(path, append(b, '\n'), 0o600)
}

// readStateFile decodes path into v, bounded; a missing file leaves v as it is.
func readStateFile(path string, v any) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxStateFile {
		return fmt.Errorf("%s is larger than %d bytes", path, maxStateFile)
	}
	if len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is not valid JSON (fix or delete it): %w", path, err)
	}
	return nil
}
