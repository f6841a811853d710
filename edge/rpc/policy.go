package rpc

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// loaderEnv are variables that change which code a process loads or runs before its main:
// with an allowlist in force a caller may not set them (nor PATH), or the allowlist means
// nothing. Prefixes end in '_' or '*'.
var loaderEnvNames = []string{
	"PATH", "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH", "MALLOC_TRACE",
	"NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR", "GLIBC_TUNABLES",
	"BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "IFS", "CDPATH", "PS4", "PROMPT_COMMAND",
	"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PERL5LIB", "PERL5OPT", "PERLLIB", "RUBYLIB",
	"RUBYOPT", "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "GIT_EXEC_PATH",
	"GIT_CONFIG_GLOBAL", "GIT_SSH", "GIT_SSH_COMMAND", "EDITOR", "VISUAL", "PAGER", "SSL_CERT_FILE",
}

var loaderEnvPrefixes = []string{"LD_", "DYLD_", "MALLOC_", "BASH_FUNC_"}

// forbiddenEnv reports whether name may not be set by a caller while an allowlist is in force.
func forbiddenEnv(name string) bool {
	up := strings.ToUpper(name)
	if slices.Contains(loaderEnvNames, up) {
		return true
	}
	for _, p := range loaderEnvPrefixes {
		if strings.HasPrefix(up, p) {
			return true
		}
	}
	return false
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
	for k := range p.Env {
		if forbiddenEnv(k) {
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

// uploadRoot picks the directory an upload is confined to and the path relative to it.
// Without UploadDirs the root is "/", which still stops symlink games at the final step.
func (s *Server) uploadRoot(path string) (root, rel string, err error) {
	if slices.Contains(strings.Split(path, "/"), "..") {
		return "", "", protocol.Errorf(protocol.CodePolicy, "path %q contains '..'", path)
	}
	clean := filepath.Clean(path)
	if s.protectedPath(clean) {
		return "", "", protocol.Errorf(protocol.CodePolicy, "%s is the edge's own key or state and cannot be written", clean)
	}
	if len(s.cfg.UploadDirs) == 0 {
		return "/", strings.TrimPrefix(clean, "/"), nil
	}
	for _, d := range s.cfg.UploadDirs {
		d = filepath.Clean(d)
		if under(clean, d) && clean != d {
			r, err := filepath.Rel(d, clean)
			if err != nil {
				break
			}
			return d, r, nil
		}
	}
	return "", "", protocol.Errorf(protocol.CodePolicy,
		"%s is outside this edge's upload directories (EDGE_UPLOAD_DIRS=%s)", clean, strings.Join(s.cfg.UploadDirs, ","))
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
