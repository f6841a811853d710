package gateway

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestLockState(t *testing.T) {
	dir := t.TempDir() + "/state"
	release, err := LockState(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockState(dir)
	want := fmt.Sprintf("in use by another gateway (pid %d)", os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %v, want %q", err, want)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v %v", st, err)
	}
	release()
	release2, err := LockState(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	release2()
}
