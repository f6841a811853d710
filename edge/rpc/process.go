package rpc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// proc is a process the edge's policy allows, ready to start: exec runs it at once, job_start
// hands it to the job supervisor in spec.json. prepare is the only way to make one, so the
// rules for what may run, where, as whom and with which environment live in one place.
type proc struct {
	path string              // absolute executable; /bin/sh for a shell command
	args []string            // argv, args[0] included
	dir  string              // working directory; "" = the edge's own
	env  []string            // the edge's environment, the run_as user's, then the caller's
	cred *syscall.Credential // nil = the edge's own user
}

// prepare applies the edge's policy to validated exec parameters: shell and executable
// allowlist (with the loader variables it forbids), working directory, run_as credentials,
// and the environment the process gets.
func (s *Server) prepare(p *protocol.ExecParams) (proc, error) {
	path, args, err := s.checkExec(p)
	if err != nil {
		return proc{}, err
	}
	if err := checkCwd(p.Cwd); err != nil {
		return proc{}, err
	}
	cred, userEnv, err := s.runAs(p.RunAs)
	if err != nil {
		return proc{}, err
	}
	pr := proc{path: path, args: args, dir: p.Cwd, cred: cred,
		env: mergeEnv(mergeEnv(os.Environ(), userEnv), p.Env)}
	if p.Command != "" {
		pr.path, pr.args = "/bin/sh", []string{"/bin/sh", "-c", p.Command}
	}
	return pr, nil
}

// checkCwd refuses a working directory that does not exist or is not a directory.
func checkCwd(cwd string) error {
	if cwd == "" {
		return nil
	}
	st, err := os.Stat(cwd)
	if err != nil {
		return protocol.Errorf(protocol.CodeNotFound, "cwd %s: %v", cwd, errors.Unwrap(err))
	}
	if !st.IsDir() {
		return protocol.Errorf(protocol.CodeBadRequest, "cwd %s is not a directory", cwd)
	}
	return nil
}

// mergeEnv overlays over on the edge's own environment; the result is sorted by name, one
// entry per name (the last one of base, and over's over base's). Entries without '=' are
// dropped. It sorts one slice instead of building a map: it runs before every exec.
func mergeEnv(base []string, over map[string]string) []string {
	out := make([]string, 0, len(base)+len(over))
	for _, kv := range base {
		if strings.IndexByte(kv, '=') >= 0 {
			out = append(out, kv)
		}
	}
	for k, v := range over {
		out = append(out, k+"="+v)
	}
	// Stable: of equal names the later entry stays later, so keeping the last of each run
	// keeps over's value, then base's last.
	slices.SortStableFunc(out, func(a, b string) int { return strings.Compare(envName(a), envName(b)) })
	w := 0
	for i, kv := range out {
		if i+1 < len(out) && envName(out[i+1]) == envName(kv) {
			continue
		}
		out[w] = kv
		w++
	}
	return out[:w]
}

// envName is the name of a NAME=value entry.
func envName(kv string) string {
	name, _, _ := strings.Cut(kv, "=")
	return name
}

// command builds the process in a process group of its own (so that a kill reaches
// everything it started) under its credential. The caller sets up its input and output.
func (pr proc) command() *exec.Cmd {
	return &exec.Cmd{Path: pr.path, Args: pr.args, Dir: pr.dir, Env: pr.env,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Credential: pr.cred}}
}

// jobSpec is pr as the job supervisor reads it from spec.json; the caller adds the limits.
func (pr proc) jobSpec() jobSpec {
	return jobSpec{Path: pr.path, Args: pr.args, Dir: pr.dir, Env: pr.env, Cred: pr.cred}
}

// proc is the process a spec.json describes, as prepare made it.
func (spec *jobSpec) proc() proc {
	return proc{path: spec.Path, args: spec.Args, dir: spec.Dir, env: spec.Env, cred: spec.Cred}
}

// exitStatus is how a process ended: its exit code, or -1 and the signal's name (e.g.
// "SIGKILL") when a signal killed it.
func exitStatus(ps *os.ProcessState) (code int, signal string) {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return -1, signalName(ws.Signal())
	}
	return ps.ExitCode(), ""
}

// signalName is e.g. "SIGKILL", or "SIG<n>" for a signal without a name.
func signalName(sig syscall.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("SIG%d", int(sig))
}
