package forward

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// awkward are arguments a shell would mangle without exact quoting.
var awkward = []string{
	"", " ", "two words", "it's", `"double"`, `$HOME`, "$(touch /tmp/forward-pwned)", "`id`",
	"back\\slash", "trailing\\", "new\nline", "tab\there", "*", "?", "[a]", "~", "a;b", "a|b",
	"a&b", "<in", ">out", "'", "''", `'\''`, "!bang", "#hash", "{a,b}", "\x01\x7f", "ünïcödé ✓",
	"-n", "--", "\r\n", "%s%n",
}

// collector gathers streamed output.
type collector struct {
	mu             sync.Mutex
	stdout, stderr bytes.Buffer
}

func (c *collector) out(t protocol.FrameType, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t == protocol.FrameStdout {
		c.stdout.Write(b)
	} else {
		c.stderr.Write(b)
	}
}

func (c *collector) get() (string, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stdout.String(), c.stderr.String()
}

func TestShellQuoteLocalShell(t *testing.T) {
	for _, a := range awkward {
		out, err := exec.Command("/bin/sh", "-c", "printf '%s' "+ShellQuote(a)).Output()
		if err != nil {
			t.Fatalf("%q: %v", a, err)
		}
		if string(out) != a {
			t.Errorf("quoted %q came back as %q", a, out)
		}
	}
}

func TestBuildCommandLine(t *testing.T) {
	tests := []struct {
		name    string
		p       protocol.ExecParams
		want    string
		wantErr string
	}{
		{"argv", protocol.ExecParams{Argv: []string{"echo", "a b"}}, `echo $$; exec 'echo' 'a b'`, ""},
		{"command", protocol.ExecParams{Command: "ls | wc -l"}, `echo $$; exec /bin/sh -c 'ls | wc -l'`, ""},
		{"cwd and env", protocol.ExecParams{Argv: []string{"pwd"}, Cwd: "/t'mp", Env: map[string]string{"B": "2", "A": "x y"}},
			`echo $$; export A='x y' B='2'; cd '/t'\''mp' && exec 'pwd'`, ""},
		{"bad env name", protocol.ExecParams{Argv: []string{"true"}, Env: map[string]string{"A-B": "1"}}, "", "env name"},
		{"env name with digit first", protocol.ExecParams{Argv: []string{"true"}, Env: map[string]string{"1A": "1"}}, "", "env name"},
		{"dash argv0", protocol.ExecParams{Argv: []string{"-c", "x"}}, "", "starts with '-'"},
		{"too long", protocol.ExecParams{Argv: []string{"echo", strings.Repeat("'", 64<<10)}}, "", "max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BuildCommandLine(tt.p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func execP(argv ...string) protocol.ExecParams {
	return protocol.ExecParams{Argv: argv, TimeoutMs: 20000, MaxOutputBytes: 1 << 20}
}

func TestExecArgvRoundTrip(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	argv := append([]string{"printf", `%s\0`}, awkward...)
	var c collector
	res, err := fx.edge.Exec(ctx, "rid-1", execP(argv...), nil, c.out)
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := c.get()
	if res.ExitCode != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", res.ExitCode, stderr)
	}
	got := strings.Split(strings.TrimSuffix(stdout, "\x00"), "\x00")
	if len(got) != len(awkward) {
		t.Fatalf("got %d arguments, want %d: %q", len(got), len(awkward), got)
	}
	for i := range awkward {
		if got[i] != awkward[i] {
			t.Errorf("argument %d: got %q, want %q", i, got[i], awkward[i])
		}
	}
}

// anyFailure as wantCode accepts any positive exit code (shells differ).
const anyFailure = 1000

func TestExecCases(t *testing.T) {
	fx := newFixture(t)
	tests := []struct {
		name       string
		p          protocol.ExecParams
		stdin      string
		withStdin  bool
		wantCode   int
		wantSignal string
		wantOut    string
		wantErrOut string
		outCut     bool
	}{
		{name: "exit code", p: execP("sh", "-c", "exit 7"), wantCode: 7},
		{name: "signal", p: execP("sh", "-c", "kill -TERM $$"), wantCode: -1, wantSignal: "SIGTERM"},
		{name: "stderr", p: execP("sh", "-c", "echo oops >&2; exit 1"), wantCode: 1, wantErrOut: "oops\n"},
		{name: "stdin", p: execP("cat"), stdin: "line one\n$x 'q'\n", withStdin: true, wantOut: "line one\n$x 'q'\n"},
		{name: "no stdin is EOF", p: execP("cat"), wantOut: ""},
		{name: "command", p: protocol.ExecParams{Command: "echo a | tr a b; echo \"$X\"", Env: map[string]string{"X": "$y z"}, TimeoutMs: 10000, MaxOutputBytes: 1 << 20}, wantOut: "b\n$y z\n"},
		{name: "cwd", p: protocol.ExecParams{Argv: []string{"pwd"}, Cwd: "/usr/share", TimeoutMs: 10000, MaxOutputBytes: 1 << 20}, wantOut: "/usr/share\n"},
		{name: "missing cwd", p: protocol.ExecParams{Argv: []string{"pwd"}, Cwd: "/no/such/dir", TimeoutMs: 10000, MaxOutputBytes: 1 << 20}, wantCode: anyFailure},
		{name: "missing program", p: execP("/no/such/prog"), wantCode: 127},
		{name: "output cap", p: protocol.ExecParams{Argv: []string{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"}, TimeoutMs: 10000, MaxOutputBytes: 1000},
			wantOut: strings.Repeat("x", 1000), outCut: true},
		{name: "first line looks like a pid", p: execP("echo", "123"), wantOut: "123\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c collector
			var in *strings.Reader
			if tt.withStdin {
				in = strings.NewReader(tt.stdin)
			}
			var res protocol.ExecResult
			var err error
			if in != nil {
				res, err = fx.edge.Exec(context.Background(), "rid", tt.p, in, c.out)
			} else {
				res, err = fx.edge.Exec(context.Background(), "rid", tt.p, nil, c.out)
			}
			if err != nil {
				t.Fatal(err)
			}
			stdout, stderr := c.get()
			if tt.wantCode == anyFailure && res.ExitCode > 0 {
				res.ExitCode = anyFailure
			}
			if res.ExitCode != tt.wantCode || res.Signal != tt.wantSignal {
				t.Errorf("exit %d signal %q, want %d %q (stderr %q)", res.ExitCode, res.Signal, tt.wantCode, tt.wantSignal, stderr)
			}
			if stdout != tt.wantOut {
				t.Errorf("stdout %q, want %q", trunc(stdout, 80), trunc(tt.wantOut, 80))
			}
			if tt.wantErrOut != "" && stderr != tt.wantErrOut {
				t.Errorf("stderr %q, want %q", stderr, tt.wantErrOut)
			}
			if res.StdoutTruncated != tt.outCut || res.TimedOut || res.Cancelled {
				t.Errorf("result %+v", res)
			}
		})
	}
}

// waitGone waits until no process has args in its command line.
func waitGone(t *testing.T, args ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := processesWith(args...)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left running: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestExecTimeoutAndCancelKillGroup(t *testing.T) {
	fx := newFixture(t)
	tests := []struct {
		name   string
		cancel bool
	}{{"timeout", false}, {"cancel", true}}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marker := []string{"sleep", "60.4" + string(rune('1'+i))}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := protocol.ExecParams{Command: "sleep 60.4" + string(rune('1'+i)) + " & sleep 60.4" + string(rune('1'+i)) + "; echo never",
				TimeoutMs: 60000, MaxOutputBytes: 1 << 20}
			if !tt.cancel {
				p.TimeoutMs = 700
			}
			go func() {
				// Both sleeps are running before the stop.
				deadline := time.Now().Add(5 * time.Second)
				for len(processesWith(marker...)) < 2 && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if tt.cancel {
					cancel()
				}
			}()
			start := time.Now()
			var c collector
			res, err := fx.edge.Exec(ctx, "rid", p, nil, c.out)
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != -1 || res.Signal != "SIGKILL" || res.TimedOut == tt.cancel || res.Cancelled != tt.cancel {
				t.Errorf("result %+v", res)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %s", d)
			}
			waitGone(t, marker...)
		})
	}
}

func TestExecOffline(t *testing.T) {
	fx := newFixture(t)
	fx.sshd.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for fx.edge.Connected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	_, err := fx.edge.Exec(context.Background(), "rid", execP("true"), nil, nil)
	if !errors.Is(err, gateway.ErrEdgeOffline) {
		t.Fatalf("offline exec: %v", err)
	}
	if st := fx.fleet.Statuses(false); len(st) != 1 || st[0].Connected || st[0].LastError == "" || st[0].Kind != Kind {
		t.Errorf("status %+v", st)
	}
}

func TestExecValidation(t *testing.T) {
	fx := newFixture(t)
	tests := []struct {
		name string
		p    protocol.ExecParams
		code string
	}{
		{"run_as", protocol.ExecParams{Argv: []string{"id"}, RunAs: "nobody", TimeoutMs: 1000, MaxOutputBytes: 10}, CodeUnsupported},
		{"env name", protocol.ExecParams{Argv: []string{"id"}, Env: map[string]string{"a.b": "1"}, TimeoutMs: 1000, MaxOutputBytes: 10}, protocol.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fx.edge.Exec(context.Background(), "rid", tt.p, nil, nil)
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != tt.code {
				t.Fatalf("err %v, want code %s", err, tt.code)
			}
		})
	}
	if _, err := fx.edge.Exec(context.Background(), "rid", protocol.ExecParams{TimeoutMs: 1}, nil, nil); err == nil {
		t.Error("no argv nor command accepted")
	}
}

// More calls than sshd's MaxSessions at once: they queue for a session and all succeed.
func TestExecParallel(t *testing.T) {
	fx := newFixture(t)
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			var c collector
			want := strings.Repeat("x", i+1)
			res, err := fx.edge.Exec(context.Background(), "rid", execP("echo", want), nil, c.out)
			if out, _ := c.get(); err == nil && (res.ExitCode != 0 || out != want+"\n") {
				err = errors.New("wrong output " + out)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
