package rpc

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openAnonymous creates an unnamed file in directory d (O_TMPFILE).
func openAnonymous(d *os.File) (*os.File, error) {
	fd, err := unix.Openat(int(d.Fd()), ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "(upload)"), nil
}

// linkAnonymous gives the unnamed file f the name name in directory d. It never replaces an
// existing name: linkat fails with EEXIST instead.
func linkAnonymous(f, d *os.File, name string) error {
	err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), int(d.Fd()), name, unix.AT_SYMLINK_FOLLOW)
	if err == unix.ENOENT { // no /proc: AT_EMPTY_PATH works with CAP_DAC_READ_SEARCH
		err = unix.Linkat(int(f.Fd()), "", int(d.Fd()), name, unix.AT_EMPTY_PATH)
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: "(upload)", New: name, Err: err}
	}
	return nil
}

// startWriteback asks the kernel to start writing bytes [off, off+n) of f to disk without
// waiting for it (sync_file_range SYNC_FILE_RANGE_WRITE). Durability still comes from the
// fsync at the end; this only spreads the work, so callers may ignore the error.
func startWriteback(f *os.File, off, n int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE) }); err != nil {
		return err
	}
	return serr
}

// setDirect sets or clears O_DIRECT on f (fcntl F_SETFL): writes then bypass the page cache.
// Filesystems without direct I/O (tmpfs before Linux 6.6, some FUSE) refuse it with EINVAL.
func setDirect(f *os.File, on bool) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
		if err != nil {
			serr = err
			return
		}
		if on {
			fl |= unix.O_DIRECT
		} else {
			fl &^= unix.O_DIRECT
		}
		_, serr = unix.FcntlInt(fd, unix.F_SETFL, fl)
	}); err != nil {
		return err
	}
	return serr
}
