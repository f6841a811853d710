// Package configfile reads the gateway's configuration files (authorized_keys, the policy, the
// forward edges) one careful way: a regular file, bounded in size, with a stamp of the version
// read that the watchers' stat fallback compares to notice a change.
package configfile

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// Stamp identifies a version of a file cheaply; the zero Stamp is a file that does not exist.
// Stamps compare with ==.
type Stamp struct {
	Exists bool
	Size   int64
	Mod    time.Time
	Ino    uint64
}

// Read reads path (symlinks followed), which must be a regular file of at most max bytes;
// what names the file in errors ("policy", "authorized keys"). The Stamp is taken from the
// open file, so it describes what was read. A missing file is an error wrapping
// fs.ErrNotExist.
func Read(path, what string, max int64) ([]byte, Stamp, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Stamp{}, fmt.Errorf("read %s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, Stamp{}, fmt.Errorf("read %s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, Stamp{}, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, Stamp{}, fmt.Errorf("read %s: %w", what, err)
	}
	if int64(len(data)) > max {
		return nil, Stamp{}, fmt.Errorf("%s %s is larger than %d bytes", what, path, max)
	}
	return data, stampOf(st), nil
}

// StatStamp is path's stamp now; the zero Stamp when it cannot be stat'ed.
func StatStamp(path string) Stamp {
	st, err := os.Stat(path)
	if err != nil {
		return Stamp{}
	}
	return stampOf(st)
}

func stampOf(st fs.FileInfo) Stamp {
	s := Stamp{Exists: true, Size: st.Size(), Mod: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.Ino = sys.Ino
	}
	return s
}
