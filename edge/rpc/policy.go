package rpc

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// decodeValid decodes a request's params into p and applies the protocol's validation: the
// shape and bounds (NUL bytes, sizes) that hold at the trust boundary whatever the gateway
// checked. The edge's own policy comes on top.
func decodeValid(c *call, p interface{ Validate() error }) error {
	if err := c.req.DecodeParams(p); err != nil {
		return err
	}
	if err := p.Validate(); err != nil {
		return protocol.Errorf(protocol.CodeBadRequest, "%s: %v", c.req.Method, err)
	}
	return nil
}

// checkExec applies the exec policy and returns the absolute executable path to run and the
// argv to run it with (empty for a shell command, which runs /bin/sh).
//
// argv[0] is looked up with the edge's own PATH, which the caller cannot set while an
// allowlist is in force. A lookup that lands on a relative PATH entry ("." or empty, Go's
// exec.ErrDot) is refused whether or not an allowlist is in force, and so is a relative
// argv[0] with a slash: either would run a file chosen by the working directory, which the
// caller sets, instead of by the edge.
//
// Under EDGE_ALLOW_COMMANDS the match is on the path as named (absolute and cleaned, symlinks
// not resolved), and the process runs that allowed path with argv[0] set to exactly it. Both
// halves matter for multi-call binaries such as busybox, which pick the program to be from
// argv[0]: matching on the symlink's target made "/tmp/x/sh" (a link to busybox) pass as an
// allowed "/bin/uptime" (another link to it), and passing the caller's argv[0] then made
// busybox run sh. Refusing multi-call binaries instead would need to recognise them (there is
// no reliable mark) and would make allowlists unusable on busybox systems, where most of
// /bin is such links. A caller may still name an allowed executable through another path to
// the same file with the same base name (/usr/bin/uptime for /bin/uptime on a merged /usr):
// the process is then started as the allowed path, so the program that runs is always the
// one the allowlist names.
func (s *Server) checkExec(p *protocol.ExecParams) (string, []string, error) {
	if p.Command != "" {
		if !s.cfg.AllowShell {
			return "", nil, protocol.Errorf(protocol.CodePolicy,
				"this edge refuses shell commands (EDGE_ALLOW_SHELL=false); pass argv instead")
		}
		if len(s.cfg.AllowCommands) > 0 {
			return "", nil, protocol.Errorf(protocol.CodePolicy,
				"this edge only runs allowed executables (EDGE_ALLOW_COMMANDS); pass argv instead of command")
		}
		return "", nil, nil
	}
	path, err := lookExecutable(p.Argv[0])
	if err != nil {
		return "", nil, err
	}
	if len(s.cfg.AllowCommands) == 0 {
		return path, p.Argv, nil
	}
	if slices.Contains(strings.Split(p.Argv[0], "/"), "..") {
		return "", nil, protocol.Errorf(protocol.CodePolicy,
			"executable %q contains '..' (EDGE_ALLOW_COMMANDS matches paths as named)", p.Argv[0])
	}
	allowed, ok := s.allowedCommand(path)
	if !ok {
		return "", nil, protocol.Errorf(protocol.CodePolicy,
			"executable %s is not in this edge's EDGE_ALLOW_COMMANDS (matched by the path named, not by a symlink's target)", path)
	}
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		if !protocol.SafeEnv(k) {
			return "", nil, protocol.Errorf(protocol.CodePolicy,
				"env %s may not be set on this edge: while EDGE_ALLOW_COMMANDS is in force only %s may be",
				k, strings.Join(protocol.SafeEnvNames(), ", "))
		}
		if !protocol.SafeEnvValue(k, p.Env[k]) {
			return "", nil, protocol.Errorf(protocol.CodePolicy,
				"env %s: value refused while EDGE_ALLOW_COMMANDS is in force (a short name such as C.UTF-8 or Europe/Berlin, not a path)", k)
		}
	}
	return allowed, append([]string{allowed}, p.Argv[1:]...), nil
}

// lookExecutable resolves argv[0] with the edge's PATH into an absolute, clean path. It
// refuses what would resolve relative to a working directory: an ErrDot lookup (a "." or
// empty PATH entry) and a relative name with a slash.
func lookExecutable(argv0 string) (string, error) {
	if !filepath.IsAbs(argv0) && strings.Contains(argv0, "/") {
		return "", protocol.Errorf(protocol.CodePolicy,
			"executable %q is a relative path: give a bare name (looked up on the edge's PATH) or an absolute path", argv0)
	}
	path, err := exec.LookPath(argv0)
	if errors.Is(err, exec.ErrDot) {
		return "", protocol.Errorf(protocol.CodePolicy,
			"executable %q resolves through a relative entry of the edge's PATH (%s), i.e. in the working directory: refused", argv0, path)
	}
	if err != nil {
		return "", protocol.Errorf(protocol.CodeNotFound, "executable %q not found on the edge's PATH", argv0)
	}
	if !filepath.IsAbs(path) {
		return "", protocol.Errorf(protocol.CodePolicy, "executable %q resolves to the relative path %s: refused", argv0, path)
	}
	return filepath.Clean(path), nil
}

// allowedCommand returns the EDGE_ALLOW_COMMANDS entry that path (absolute, clean) names:
// the identical entry, or else the one with the same base name that is the same file after
// resolving symlinks (see checkExec).
func (s *Server) allowedCommand(path string) (string, bool) {
	if slices.Contains(s.cfg.AllowCommands, path) {
		return path, true
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", false
	}
	for _, a := range s.cfg.AllowCommands {
		if filepath.Base(a) != filepath.Base(path) {
			continue
		}
		if ra, err := filepath.EvalSymlinks(a); err == nil && ra == real {
			return a, true
		}
	}
	return "", false
}

// ResolveAllowCommands turns EDGE_ALLOW_COMMANDS entries (bare names looked up on the edge's
// PATH, or absolute paths) into the absolute, cleaned paths Config.AllowCommands holds.
// Symlinks are deliberately not resolved: the allowlist names a path, and the process runs
// as that path (see checkExec), so that a busybox applet stays the applet.
func ResolveAllowCommands(names []string) ([]string, error) {
	out := make([]string, 0, len(names))
	for _, c := range names {
		if slices.Contains(strings.Split(c, "/"), "..") {
			return nil, fmt.Errorf("%q contains '..': name the executable by its own path", c)
		}
		p, err := lookExecutable(c)
		if err != nil {
			return nil, fmt.Errorf("%q is not an executable found on PATH: %v", c, err)
		}
		st, err := os.Stat(p)
		if err != nil || !st.Mode().IsRegular() {
			return nil, fmt.Errorf("%q (%s) is not a regular executable file", c, p)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// under reports whether path (clean, absolute) is dir or inside it.
func under(path, dir string) bool {
	dir = filepath.Clean(dir)
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// transfer is one direction of file transfer, for confine's rules and messages.
type transfer struct {
	name string   // "upload" or "download"
	env  string   // the variable that sets dirs
	verb string   // what the edge's key and state cannot be: "written" or "read"
	dirs []string // the edge's own directories for it; empty = any
}

// uploads is the edge's rule set for uploads.
func (s *Server) uploads() transfer {
	return transfer{"upload", "EDGE_UPLOAD_DIRS", "written", s.cfg.UploadDirs}
}

// downloads is the edge's rule set for downloads.
func (s *Server) downloads() transfer {
	return transfer{"download", "EDGE_DOWNLOAD_DIRS", "read", s.cfg.DownloadDirs}
}

// confinement is where one transfer may reach: outer is opened by name, inner (a directory
// below it, or "") through it, so that no "..", symlink or rename leads out of either; the
// target is rel inside the innermost of the two.
type confinement struct {
	what  string // "upload" or "download", for messages
	outer string // absolute
	inner string // relative to outer
	rel   string // the target, relative to dir()
}

// dir is the innermost directory the target is confined to.
func (cf confinement) dir() string { return filepath.Join(cf.outer, cf.inner) }

// open opens the innermost directory as an os.Root: outer by name, then inner inside it.
func (cf confinement) open() (*os.Root, error) {
	root, err := os.OpenRoot(cf.outer)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeNotFound, "%s directory %s: %v", cf.what, cf.outer, errors.Unwrap(err))
	}
	if cf.inner == "" {
		return root, nil
	}
	defer root.Close()
	in, err := root.OpenRoot(cf.inner)
	if err != nil {
		return nil, fsError(cf.what+" directory "+cf.dir(), err)
	}
	return in, nil
}

// confine checks a transfer's path against the edge's own directories (t.dirs) and the
// directories the gateway's policy confines this call to (within): the path must lie below
// one of each. Of the two, the shorter is opened by name and the longer inside it, so both
// hold without races. Without either the root is "/", which still stops symlink games at the
// final step.
func (s *Server) confine(path string, within []string, t transfer) (confinement, error) {
	if slices.Contains(strings.Split(path, "/"), "..") {
		return confinement{}, protocol.Errorf(protocol.CodePolicy, "path %q contains '..'", path)
	}
	clean := filepath.Clean(path)
	if s.protectedPath(clean) {
		return confinement{}, protocol.Errorf(protocol.CodePolicy, "%s is the edge's own key or state and cannot be %s", clean, t.verb)
	}
	cf := confinement{what: t.name, outer: "/"}
	if len(t.dirs) > 0 {
		d, ok := firstBelow(clean, t.dirs)
		if !ok {
			return cf, protocol.Errorf(protocol.CodePolicy,
				"%s is outside this edge's %s directories (%s=%s)", clean, t.name, t.env, strings.Join(t.dirs, ","))
		}
		cf.outer = d
	}
	if len(within) > 0 {
		w, ok := firstBelow(clean, within)
		if !ok {
			return cf, protocol.Errorf(protocol.CodePolicy,
				"%s is outside the directories the gateway's policy allows for this call (%s)", clean, strings.Join(within, ","))
		}
		cf.outer, cf.inner = nest(cf.outer, w)
	}
	cf.rel, _ = filepath.Rel(cf.dir(), clean)
	if cf.rel == "." {
		return cf, protocol.Errorf(protocol.CodeBadRequest, "%s is a directory, not a file", clean)
	}
	return cf, nil
}

// firstBelow returns the first of dirs that clean lies strictly below.
func firstBelow(clean string, dirs []string) (string, bool) {
	for _, d := range dirs {
		if d = filepath.Clean(d); under(clean, d) && clean != d {
			return d, true
		}
	}
	return "", false
}

// nest orders two directories that both lie above one path: the shorter is opened by name,
// the longer (relative to it) inside it. Outer "/" (no directories of the edge's own) gives
// way to w, opened by name like the edge's directories are.
func nest(outer, w string) (string, string) {
	switch {
	case outer == "/" || outer == w:
		return w, ""
	case under(w, outer):
		rel, _ := filepath.Rel(outer, w)
		return outer, rel
	default:
		rel, _ := filepath.Rel(w, outer)
		return w, rel
	}
}

// protectedPath reports whether a clean absolute path names the key file or lies in the
// state directory, lexically (as configured or as resolved at start) or after resolving
// symlinks of its directory. It is the early, by-name check; protectedDir and protectedFile
// are the ones that hold against symlinks and races.
func (s *Server) protectedPath(clean string) bool {
	check := func(p string) bool {
		for _, k := range s.keyFiles {
			if p == k {
				return true
			}
		}
		for _, d := range s.stateDirs {
			if under(p, d) {
				return true
			}
		}
		return false
	}
	if check(clean) {
		return true
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(clean)); err == nil {
		return check(filepath.Join(dir, filepath.Base(clean)))
	}
	return false
}

// protectedDir says why a transfer may not use the directory open as dir, or "": it is the
// state directory or lies anywhere below it, or it is the key file's directory; for uploads
// under EDGE_ALLOW_COMMANDS, it is also one of execDirs. Every check is by identity (device
// and inode) of the directory actually opened, walking up from it through "..", so neither
// a symlinked EDGE_STATE_DIR nor a rename race leads around it.
func (s *Server) protectedDir(dir *os.Root, t transfer) string {
	f, err := dir.Open(".")
	if err != nil {
		return "cannot be checked: " + err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "cannot be checked: " + err.Error()
	}
	for _, d := range s.keyDirs {
		if ds, err := os.Stat(d); err == nil && os.SameFile(st, ds) {
			return "is the directory of the edge's own key and cannot be " + t.verb
		}
	}
	var state []fs.FileInfo
	for _, d := range s.stateDirs {
		if ds, err := os.Stat(d); err == nil {
			state = append(state, ds)
		}
	}
	if inside, err := below(f, state); err != nil || inside {
		if err != nil {
			return "cannot be checked: " + err.Error()
		}
		return "is the edge's own state directory (EDGE_STATE_DIR) or inside it and cannot be " + t.verb
	}
	if t.name == "upload" && len(s.cfg.AllowCommands) > 0 {
		for _, d := range s.execDirs {
			if ds, err := os.Stat(d); err == nil && os.SameFile(st, ds) {
				return "holds executables (a directory on the edge's PATH, a system bin directory, or one holding an EDGE_ALLOW_COMMANDS entry) and cannot be written while EDGE_ALLOW_COMMANDS is in force"
			}
		}
	}
	return ""
}

// maxDirDepth bounds below's walk up the tree.
const maxDirDepth = 4096

// below reports whether the directory open as f is one of targets or lies below one of them,
// by identity: from f it opens ".." (openat, relative to the descriptor, not by name) up to
// the root of the filesystem tree, comparing device and inode at every step.
func below(f *os.File, targets []fs.FileInfo) (bool, error) {
	if len(targets) == 0 {
		return false, nil
	}
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return false, err
	}
	defer func() { unix.Close(fd) }()
	var prev unix.Stat_t
	for i := range maxDirDepth {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return false, err
		}
		for _, t := range targets {
			if ts, ok := t.Sys().(*syscall.Stat_t); ok && uint64(ts.Dev) == uint64(st.Dev) && ts.Ino == st.Ino {
				return true, nil
			}
		}
		if i > 0 && st.Dev == prev.Dev && st.Ino == prev.Ino {
			return false, nil // ".." of the root is the root
		}
		prev = st
		up, err := unix.Openat(fd, "..", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, err
		}
		unix.Close(fd)
		fd = up
	}
	return false, fmt.Errorf("directory tree deeper than %d", maxDirDepth)
}

// resolvedPaths returns p (clean) and, if different, p with symlinks resolved (of p itself
// if it exists, else of its directory): the names under which the edge's key and state are
// protected, fixed at start so that a symlinked EDGE_STATE_DIR protects its real path too.
func resolvedPaths(p string) []string {
	if p == "" {
		return nil
	}
	clean := filepath.Clean(p)
	if abs, err := filepath.Abs(clean); err == nil {
		clean = abs
	}
	out := []string{clean}
	real, err := filepath.EvalSymlinks(clean)
	if err != nil {
		if dir, derr := filepath.EvalSymlinks(filepath.Dir(clean)); derr == nil {
			real, err = filepath.Join(dir, filepath.Base(clean)), nil
		}
	}
	if err == nil && real != clean {
		out = append(out, real)
	}
	return out
}

// executableDirs are the directories uploads may not write while an allowlist is in force:
// every absolute entry of the edge's PATH, the system bin directories the probes use, and
// the directories holding each allowed executable (as named and as resolved), each also with
// symlinks resolved. Writing any of them would put a program where the edge, an allowed
// program or the inventory would run it.
func executableDirs(path string, allowed []string) []string {
	var out []string
	add := func(d string) {
		for _, p := range resolvedPaths(d) {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	for _, d := range filepath.SplitList(path) {
		if filepath.IsAbs(d) {
			add(d)
		}
	}
	for _, d := range systemBinDirs {
		add(d)
	}
	for _, a := range allowed {
		add(filepath.Dir(a))
		if real, err := filepath.EvalSymlinks(a); err == nil {
			add(filepath.Dir(real))
		}
	}
	return out
}
