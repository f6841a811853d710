package rpc

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestPrepare(t *testing.T) {
	t.Setenv("RPC_TEST_EDGE_VAR", "edge")
	echo, err := filepath.EvalSymlinks(mustLookPath(t, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	cwd := t.TempDir()
	tests := []struct {
		name  string
		cfg   Config
		p     protocol.ExecParams
		code  string
		check func(t *testing.T, pr proc)
	}{
		{"argv resolved on the edge's PATH", Config{}, protocol.ExecParams{Argv: []string{"echo", "hi"}, Cwd: cwd}, "", func(t *testing.T, pr proc) {
			if !filepath.IsAbs(pr.path) || filepath.Base(pr.path) != "echo" || !slices.Equal(pr.args, []string{"echo", "hi"}) || pr.dir != cwd || pr.cred != nil {
				t.Errorf("proc %+v", pr)
			}
		}},
		{"allowlisted argv runs the allowed path as argv[0]", Config{AllowCommands: []string{echo}}, protocol.ExecParams{Argv: []string{"echo", "x"}}, "", func(t *testing.T, pr proc) {
			if pr.path != echo || !slices.Equal(pr.args, []string{echo, "x"}) {
				t.Errorf("path %s args %v, want %s and [%s x]", pr.path, pr.args, echo, echo)
			}
		}},
		{"command runs /bin/sh -c", Config{AllowShell: true}, protocol.ExecParams{Command: "echo $X"}, "", func(t *testing.T, pr proc) {
			if pr.path != "/bin/sh" || !slices.Equal(pr.args, []string{"/bin/sh", "-c", "echo $X"}) {
				t.Errorf("proc %+v", pr)
			}
		}},
		{"caller env over the edge's", Config{}, protocol.ExecParams{Argv: []string{"echo"}, Env: map[string]string{"RPC_TEST_EDGE_VAR": "caller", "NEW": "1"}}, "", func(t *testing.T, pr proc) {
			if !slices.Contains(pr.env, "RPC_TEST_EDGE_VAR=caller") || !slices.Contains(pr.env, "NEW=1") || slices.Contains(pr.env, "RPC_TEST_EDGE_VAR=edge") {
				t.Errorf("env %v", pr.env)
			}
			if !slices.IsSorted(pr.env) {
				t.Errorf("env not sorted by name")
			}
		}},
		{"shell refused", Config{}, protocol.ExecParams{Command: "true"}, protocol.CodePolicy, nil},
		{"loader env under an allowlist", Config{AllowCommands: []string{echo}}, protocol.ExecParams{Argv: []string{"echo"}, Env: map[string]string{"LD_PRELOAD": "/x.so"}}, protocol.CodePolicy, nil},
		{"missing cwd", Config{}, protocol.ExecParams{Argv: []string{"echo"}, Cwd: filepath.Join(cwd, "nope")}, protocol.CodeNotFound, nil},
		{"run_as not allowed", Config{}, protocol.ExecParams{Argv: []string{"echo"}, RunAs: "root"}, protocol.CodePolicy, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewServer(tc.cfg, nil)
			pr, err := s.prepare(&tc.p)
			if code := errCode(err); code != tc.code {
				t.Fatalf("prepare: %v, want code %q", err, tc.code)
			}
			if tc.check != nil {
				tc.check(t, pr)
			}
		})
	}
}

// TestExecAndJobsShareRules: exec and job_start refuse the same requests the same way.
func TestExecAndJobsShareRules(t *testing.T) {
	echo, err := filepath.EvalSymlinks(mustLookPath(t, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Config{AllowCommands: []string{echo}})
	tests := []struct {
		name string
		p    protocol.ExecParams
		code string
	}{
		{"shell", protocol.ExecParams{Command: "true"}, protocol.CodePolicy},
		{"not allowlisted", protocol.ExecParams{Argv: []string{"cat"}}, protocol.CodePolicy},
		{"PATH under an allowlist", protocol.ExecParams{Argv: []string{"echo"}, Env: map[string]string{"PATH": "/tmp"}}, protocol.CodePolicy},
		{"missing cwd", protocol.ExecParams{Argv: []string{"echo"}, Cwd: "/nonexistent-dir-for-test"}, protocol.CodeNotFound},
		{"run_as", protocol.ExecParams{Argv: []string{"echo"}, RunAs: "nobody"}, protocol.CodePolicy},
		{"NUL", protocol.ExecParams{Argv: []string{"echo", "\x00"}}, protocol.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.TimeoutMs, tc.p.MaxOutputBytes = 5000, 100
			ex := h.open(protocol.MethodExec, tc.p).wait(nil)
			_, job := h.startJob(protocol.JobStartParams{Exec: tc.p})
			if ex.code() != tc.code || job.code() != tc.code {
				t.Fatalf("exec: %v; job_start: %v; want code %s from both", ex.err, job.err, tc.code)
			}
		})
	}
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		script string
		code   int
		signal string
	}{
		{"exit 0", 0, ""},
		{"exit 3", 3, ""},
		{"kill -TERM $$", -1, "SIGTERM"},
		{"kill -KILL $$", -1, "SIGKILL"},
	}
	for _, tc := range tests {
		t.Run(tc.script, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", tc.script)
			_ = cmd.Run()
			if code, signal := exitStatus(cmd.ProcessState); code != tc.code || signal != tc.signal {
				t.Fatalf("exitStatus = %d, %q; want %d, %q", code, signal, tc.code, tc.signal)
			}
		})
	}
}

// errCode is a protocol error's code, "" for nil.
func errCode(err error) string {
	if err == nil {
		return ""
	}
	if pe := (*protocol.Error)(nil); errors.As(err, &pe) {
		return pe.Code
	}
	return "not a protocol error: " + err.Error()
}

// TestMergeEnv: one entry per name, sorted; the caller's value wins over the edge's, and of
// the edge's own duplicates the last one; entries without '=' are dropped.
func TestMergeEnv(t *testing.T) {
	base := []string{"PATH=/bin", "HOME=/root", "A=1", "junk", "A=2", "LANG=C", "=odd"}
	over := map[string]string{"LANG": "C.UTF-8", "NEW": "x=y", "HOME": ""}
	got := mergeEnv(base, over)
	want := []string{"=odd", "A=2", "HOME=", "LANG=C.UTF-8", "NEW=x=y", "PATH=/bin"}
	if !slices.Equal(got, want) {
		t.Fatalf("mergeEnv = %q, want %q", got, want)
	}
	if got := mergeEnv(nil, nil); len(got) != 0 {
		t.Fatalf("mergeEnv(nil, nil) = %q", got)
	}
}

// TestAwaitExit: the pidfd wait returns once the child has exited, however it ended, and
// leaves it for cmd.Wait to reap with the real status; it returns at once for a child that
// exited before the call, and reports false for a pid that is not a waitable child.
func TestAwaitExit(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("pidfd is Linux-only; elsewhere awaitExit is a no-op returning false")
	}
	tests := []struct {
		name     string
		argv     []string
		before   time.Duration // sleep before awaiting: the child may be gone already
		wantCode int
		wantSig  string
	}{
		{"exit 0", []string{"true"}, 0, 0, ""},
		{"exit 3 after a while", []string{"sh", "-c", "sleep 0.2; exit 3"}, 0, 3, ""},
		{"exited before the call", []string{"false"}, 100 * time.Millisecond, 1, ""},
		{"killed by a signal", []string{"sh", "-c", "kill -KILL $$"}, 0, -1, "SIGKILL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(tt.argv[0], tt.argv[1:]...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(tt.before)
			if !awaitExit(cmd.Process.Pid) {
				t.Fatal("awaitExit = false for a child of this process")
			}
			_ = cmd.Wait()
			if cmd.ProcessState == nil {
				t.Fatal("cmd.Wait found nothing to reap: awaitExit reaped the child")
			}
			if code, sig := exitStatus(cmd.ProcessState); code != tt.wantCode || sig != tt.wantSig {
				t.Fatalf("exit status %d %q; want %d %q", code, sig, tt.wantCode, tt.wantSig)
			}
		})
	}
	if awaitExit(os.Getppid()) {
		t.Error("awaitExit = true for the parent process, which is no child of ours")
	}
}
