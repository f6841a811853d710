package rpc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// systemBinDirs are the only directories the device-info probes run executables from
// (`git --version`, `apt-get -s upgrade`, `systemctl --failed`, …), in the order of a usual
// root PATH. The edge's own PATH is never used for them: it may name directories that others
// can write (a home directory, /opt/…/bin, ".") or that uploads reach, and the probes run as
// the edge's user, usually root, on every get_device_info refresh. /usr/local/sbin and
// /usr/local/bin are in the list but, like every other entry, count only while they and every
// directory above them are owned by root and writable by nobody else (trustedDir); on some
// systems /usr/local is group-writable (Debian's "staff"), and then tools there are not
// probed.
var systemBinDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// lookSystemTool finds name in systemBinDirs and returns its path if it is a trusted
// executable (trustedExecutable); it never consults PATH.
func lookSystemTool(name string) (string, bool) {
	if name == "" || strings.ContainsRune(name, '/') {
		return "", false
	}
	for _, d := range systemBinDirs {
		p := filepath.Join(d, name)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if trustedExecutable(p) == nil {
			return p, true
		}
	}
	return "", false
}

// systemPATH is the PATH probes run with: the trusted systemBinDirs, so that what a probe
// starts in turn (apt-get runs dpkg, a script its interpreter) comes from them too.
func systemPATH() string {
	var dirs []string
	for _, d := range systemBinDirs {
		if trustedDir(d) == nil {
			dirs = append(dirs, d)
		}
	}
	return strings.Join(dirs, ":")
}

// trustedExecutable reports why p may not be run by a probe, or nil: the file (after
// resolving symlinks) must be a regular executable owned by root and not writable by group
// or others, and so must every directory on the way to it, both along p as named and along
// its resolved path, so that nobody but root can replace it or a link leading to it.
func trustedExecutable(p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	st, err := os.Stat(real)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not a regular executable file", real)
	}
	if err := rootOwned(real, st); err != nil {
		return err
	}
	if err := trustedDir(filepath.Dir(real)); err != nil {
		return err
	}
	return trustedDir(filepath.Dir(p))
}

// trustedDir checks dir and every directory above it: owned by root, and writable by nobody
// else. A symlink on the way must be owned by root (its target is checked separately, as
// part of the resolved path).
func trustedDir(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		st, err := os.Lstat(d)
		if err != nil {
			return err
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			if owner(st) != 0 {
				return fmt.Errorf("%s is a symlink not owned by root", d)
			}
			real, err := filepath.EvalSymlinks(d)
			if err != nil {
				return err
			}
			if err := trustedDir(real); err != nil {
				return err
			}
		} else if err := rootOwned(d, st); err != nil {
			return err
		}
		if d == "/" {
			return nil
		}
	}
}

// rootOwned refuses a file or directory not owned by root or writable by group or others.
func rootOwned(p string, st fs.FileInfo) error {
	if owner(st) != 0 {
		return fmt.Errorf("%s is not owned by root", p)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (%04o)", p, st.Mode().Perm())
	}
	return nil
}

// owner is a file's owner uid (^0 where the platform does not tell).
func owner(st fs.FileInfo) uint32 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Uid
	}
	return ^uint32(0)
}

// errNotSystemTool: a probe was asked to run something that is not an absolute path.
var errNotSystemTool = errors.New("probes run only absolute paths from the system directories")
