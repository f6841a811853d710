package rpc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func execParams(argv ...string) protocol.ExecParams {
	return protocol.ExecParams{Argv: argv, TimeoutMs: 20000, MaxOutputBytes: 1 << 20}
}

func TestExec(t *testing.T) {
	h := newHarness(t, Config{AllowShell: true})
	cwd := t.TempDir()
	realCwd, _ := filepath.EvalSymlinks(cwd)
	tests := []struct {
		name     string
		p        protocol.ExecParams
		stdin    string
		code     string
		exit     int
		stdout   string
		stderr   string
		truncOut bool
	}{
		{name: "argv untouched", p: execParams("printf", "%s|", "a b", "it's", "$HOME", `"q"`, "*"), stdout: `a b|it's|$HOME|"q"|*|`},
		{name: "non-zero exit", p: execParams("sh", "-c", "echo oops >&2; exit 3"), exit: 3, stderr: "oops\n"},
		{name: "stdin", p: func() protocol.ExecParams { p := execParams("cat"); p.Stdin = true; return p }(), stdin: strings.Repeat("line\n", 20000), stdout: strings.Repeat("line\n", 20000)},
		{name: "env", p: func() protocol.ExecParams {
			p := execParams("sh", "-c", `printf %s "$FOO"`)
			p.Env = map[string]string{"FOO": "b a$r"}
			return p
		}(), stdout: "b a$r"},
		{name: "cwd", p: func() protocol.ExecParams { p := execParams("pwd", "-P"); p.Cwd = cwd; return p }(), stdout: realCwd + "\n"},
		{name: "missing cwd", p: func() protocol.ExecParams { p := execParams("pwd"); p.Cwd = cwd + "/nope"; return p }(), code: protocol.CodeNotFound},
		{name: "command", p: protocol.ExecParams{Command: "echo $((1+2))", TimeoutMs: 5000, MaxOutputBytes: 100}, stdout: "3\n"},
		{name: "output cap", p: func() protocol.ExecParams {
			p := execParams("head", "-c", "300000", "/dev/zero")
			p.MaxOutputBytes = 1000
			return p
		}(), stdout: strings.Repeat("\x00", 1000), truncOut: true},
		{name: "not found", p: execParams("no-such-binary-xyz"), code: protocol.CodeNotFound},
		{name: "both argv and command", p: protocol.ExecParams{Argv: []string{"true"}, Command: "true", TimeoutMs: 1, MaxOutputBytes: 1}, code: protocol.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := h.open(protocol.MethodExec, tc.p)
			if tc.p.Stdin {
				(protocol.DataWriter{W: c.st, T: protocol.FrameData}).Write([]byte(tc.stdin))
				c.send(protocol.FrameData, nil)
			}
			var res protocol.ExecResult
			o := c.wait(&res)
			if o.code() != tc.code {
				t.Fatalf("code %q (%v), want %q", o.code(), o.err, tc.code)
			}
			if tc.code != "" {
				return
			}
			if res.ExitCode != tc.exit || string(o.stdout) != tc.stdout || string(o.stderr) != tc.stderr || res.StdoutTruncated != tc.truncOut {
				t.Fatalf("got exit %d stdout %.80q stderr %q trunc %v; want %d %.80q %q %v",
					res.ExitCode, o.stdout, o.stderr, res.StdoutTruncated, tc.exit, tc.stdout, tc.stderr, tc.truncOut)
			}
		})
	}
}

// groupAlive reports whether any live (non-zombie) process is in process group pgid.
func groupAlive(pgid int) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state ppid pgrp ...
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

// waitGroupGone polls until the process group has no live member, bounded in time.
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	for range 100 {
		if !groupAlive(pgid) {
			return
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Fatalf("process group %d still has live processes", pgid)
}

// readPgid reads the first stdout frame, which the test scripts make "$$\n".
func readPgid(t *testing.T, c *rpcCall) int {
	t.Helper()
	typ, p, err := c.fr.Next()
	if err != nil || typ != protocol.FrameStdout {
		t.Fatalf("first frame %s %v", typ, err)
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(p)))
	if err != nil {
		t.Fatalf("pgid %q: %v", p, err)
	}
	return pgid
}

func TestExecKillsProcessTree(t *testing.T) {
	h := newHarness(t, Config{AllowShell: true})
	script := "echo $$; sleep 30 & sleep 30"
	tests := []struct {
		name   string
		cancel func(c *rpcCall)
		check  func(r protocol.ExecResult) bool
	}{
		{"timeout", nil, func(r protocol.ExecResult) bool { return r.TimedOut && !r.Cancelled }},
		{"cancel frame", func(c *rpcCall) { c.send(protocol.FrameCancel, nil) }, func(r protocol.ExecResult) bool { return r.Cancelled && !r.TimedOut }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := execParams("sh", "-c", script)
			if tc.cancel == nil {
				p.TimeoutMs = 300
			}
			start := time.Now()
			c := h.open(protocol.MethodExec, p)
			pgid := readPgid(t, c)
			if tc.cancel != nil {
				tc.cancel(c)
			}
			var res protocol.ExecResult
			if o := c.wait(&res); o.err != nil {
				t.Fatal(o.err)
			}
			if !tc.check(res) || res.ExitCode != -1 || res.Signal != "SIGKILL" {
				t.Fatalf("result %+v", res)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("took %v", d)
			}
			waitGroupGone(t, pgid)
		})
	}
}

func TestExecGatewayGoneKills(t *testing.T) {
	h := newHarness(t, Config{AllowShell: true})
	c := h.open(protocol.MethodExec, execParams("sh", "-c", "echo $$; sleep 30 & sleep 30"))
	pgid := readPgid(t, c)
	c.st.Close() // half-close: the edge's read side sees EOF before the result
	waitGroupGone(t, pgid)
}

func TestExecPolicy(t *testing.T) {
	echo, err := filepath.EvalSymlinks(mustLookPath(t, "echo"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		p    protocol.ExecParams
		code string
	}{
		{"shell refused", Config{AllowShell: false}, protocol.ExecParams{Command: "echo hi", TimeoutMs: 1000, MaxOutputBytes: 10}, protocol.CodePolicy},
		{"argv without shell ok", Config{AllowShell: false}, execParams("echo", "hi"), ""},
		{"allowed", Config{AllowShell: true, AllowCommands: []string{echo}}, execParams("echo", "hi"), ""},
		{"allowed by absolute path", Config{AllowShell: true, AllowCommands: []string{echo}}, execParams(echo, "hi"), ""},
		{"not allowed", Config{AllowShell: true, AllowCommands: []string{echo}}, execParams("cat", "/etc/hostname"), protocol.CodePolicy},
		{"command with allowlist", Config{AllowShell: true, AllowCommands: []string{echo}}, protocol.ExecParams{Command: "echo hi", TimeoutMs: 1000, MaxOutputBytes: 10}, protocol.CodePolicy},
		{"LD_PRELOAD", Config{AllowShell: true, AllowCommands: []string{echo}}, func() protocol.ExecParams {
			p := execParams("echo")
			p.Env = map[string]string{"LD_PRELOAD": "/tmp/x.so"}
			return p
		}(), protocol.CodePolicy},
		{"PATH", Config{AllowShell: true, AllowCommands: []string{echo}}, func() protocol.ExecParams {
			p := execParams("echo")
			p.Env = map[string]string{"PATH": "/tmp"}
			return p
		}(), protocol.CodePolicy},
		{"GCONV_PATH", Config{AllowShell: true, AllowCommands: []string{echo}}, func() protocol.ExecParams {
			p := execParams("echo")
			p.Env = map[string]string{"gconv_path": "/tmp"}
			return p
		}(), protocol.CodePolicy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			o := h.open(protocol.MethodExec, tc.p).wait(nil)
			if o.code() != tc.code {
				t.Fatalf("code %q (%v), want %q", o.code(), o.err, tc.code)
			}
		})
	}
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	t.Fatalf("%s not on PATH", name)
	return ""
}
