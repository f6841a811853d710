package rpc

import (
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

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

// checkExec applies the exec policy and returns the absolute executable path to run (empty
// for a shell command, which runs /bin/sh).
func (s *Server) checkExec(p *protocol.ExecParams) (string, error) {
	if p.Command != "" {
		if !s.cfg.AllowShell {
			return "", protocol.Errorf(protocol.CodePolicy,
				"this edge refuses shell commands (EDGE_ALLOW_SHELL=false); pass argv instead")
		}
		if len(s.cfg.AllowCommands) > 0 {
			return "", protocol.Errorf(protocol.CodePolicy,
				"this edge only runs allowed executables (EDGE_ALLOW_COMMANDS); pass argv instead of command")
		}
		return "", nil
	}
	path, err := exec.LookPath(p.Argv[0])
	if err != nil && !errors.Is(err, exec.ErrDot) {
		return "", protocol.Errorf(protocol.CodeNotFound, "executable %q not found on the edge's PATH", p.Argv[0])
	}
	if path, err = filepath.Abs(path); err != nil {
		return "", protocol.Errorf(protocol.CodeNotFound, "executable %q: %v", p.Argv[0], err)
	}
	if len(s.cfg.AllowCommands) == 0 {
		return path, nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", protocol.Errorf(protocol.CodeNotFound, "executable %q: %v", p.Argv[0], err)
	}
	if !slices.Contains(s.cfg.AllowCommands, real) {
		return "", protocol.Errorf(protocol.CodePolicy,
			"executable %s is not in this edge's EDGE_ALLOW_COMMANDS", real)
	}
	for _, k := range slices.Sorted(maps.Keys(p.Env)) {
		if protocol.ForbiddenEnv(k) {
			return "", protocol.Errorf(protocol.CodePolicy,
				"env %s may not be set on this edge (EDGE_ALLOW_COMMANDS is in force)", k)
		}
	}
	return real, nil
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
// state directory, lexically or after resolving symlinks of its directory.
func (s *Server) protectedPath(clean string) bool {
	check := func(p string) bool {
		if s.cfg.KeyFile != "" && p == filepath.Clean(s.cfg.KeyFile) {
			return true
		}
		return s.cfg.StateDir != "" && under(p, filepath.Clean(s.cfg.StateDir))
	}
	if check(clean) {
		return true
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(clean)); err == nil {
		return check(filepath.Join(dir, filepath.Base(clean)))
	}
	return false
}

// protectedDir reports whether an opened directory is the state directory or the key's
// directory: a check on the directory actually opened, immune to symlink races.
func (s *Server) protectedDir(fi fs.FileInfo) bool {
	for _, d := range []string{s.cfg.StateDir, filepath.Dir(s.cfg.KeyFile)} {
		if d == "" || d == "." {
			continue
		}
		if st, err := os.Stat(d); err == nil && os.SameFile(fi, st) {
			return true
		}
	}
	return false
}
