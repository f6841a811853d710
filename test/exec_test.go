package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

// execEnv is one gateway (MAX_OUTPUT_BYTES 4096) with one connected edge named "runner".
type execEnv struct {
	f *fixture
	g *gateway
	e *edgeProc
}

const execMaxOutput = 4096

func newExecEnv(t *testing.T) execEnv {
	t.Helper()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "runner", "")
	g := f.startGateway(t, map[string]string{"MAX_OUTPUT_BYTES": fmt.Sprint(execMaxOutput), "EXEC_TIMEOUT": "20s"})
	e := f.startEdge(t, k, g.addr, nil)
	g.waitConnected(t, k.Fingerprint, nil)
	return execEnv{f: f, g: g, e: e}
}

func (x execEnv) run(t *testing.T, args map[string]any) (execOut, result) {
	t.Helper()
	if _, ok := args["edge"]; !ok {
		args["edge"] = "runner"
	}
	r := x.g.call(t, "run_command", args)
	if r.Structured == nil {
		return execOut{}, r
	}
	return decode[execOut](t, r.Structured), r
}

// TestRunCommand covers run_command's inputs and outputs on a live edge.
func TestRunCommand(t *testing.T) {
	t.Parallel()
	x := newExecEnv(t)
	cwd := t.TempDir()
	if real, err := filepath.EvalSymlinks(cwd); err == nil {
		cwd = real
	}
	for _, tc := range []struct {
		name       string
		args       map[string]any
		wantExit   int
		wantStdout string
		wantStderr string
	}{
		{"argv passes spaces quotes and dollars untouched",
			map[string]any{"argv": []any{"printf", `%s\n`, "a b", `"q"`, "$HOME", "it's", "`id`", "*"}},
			0, "a b\n\"q\"\n$HOME\nit's\n`id`\n*\n", ""},
		{"non-zero exit is a normal result",
			map[string]any{"argv": []any{"sh", "-c", "echo out; echo err >&2; exit 3"}}, 3, "out\n", "err\n"},
		{"stdin", map[string]any{"argv": []any{"cat"}, "stdin": "line one\nline two"}, 0, "line one\nline two", ""},
		{"env", map[string]any{"argv": []any{"sh", "-c", `printf %s "$E2E_VAR"`}, "env": map[string]any{"E2E_VAR": "v a l $x"}}, 0, "v a l $x", ""},
		{"cwd", map[string]any{"argv": []any{"pwd"}, "cwd": cwd}, 0, cwd + "\n", ""},
		{"command through /bin/sh", map[string]any{"command": "echo $((40+2)) | tr 4 x"}, 0, "x2\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, r := x.run(t, tc.args)
			if r.IsError {
				t.Fatalf("isError: %s", r.Text)
			}
			if out.ExitCode != tc.wantExit || out.Stdout != tc.wantStdout || out.Stderr != tc.wantStderr {
				t.Errorf("exit %d stdout %q stderr %q; want %d %q %q", out.ExitCode, out.Stdout, out.Stderr, tc.wantExit, tc.wantStdout, tc.wantStderr)
			}
			if out.Edge != "runner" || out.Signal != "" || out.TimedOut || out.StdoutTruncated || out.StderrTruncated || out.DurationMs < 0 {
				t.Errorf("result = %+v", out)
			}
		})
	}

	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"both argv and command", map[string]any{"argv": []any{"true"}, "command": "true"}},
		{"neither argv nor command", map[string]any{}},
		{"unknown edge", map[string]any{"edge": "no-such-edge", "argv": []any{"true"}}},
		{"empty argv", map[string]any{"argv": []any{}}},
		{"relative cwd", map[string]any{"argv": []any{"true"}, "cwd": "relative/dir"}},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			_, r := x.run(t, tc.args)
			if !r.IsError || strings.TrimSpace(r.Text) == "" {
				t.Errorf("isError %v, text %q; want an error result with a message", r.IsError, r.Text)
			}
		})
	}

	t.Run("missing executable", func(t *testing.T) {
		out, r := x.run(t, map[string]any{"argv": []any{"/nonexistent/e2e-binary"}})
		if !r.IsError && (out.ExitCode != 127 || out.Stderr == "") {
			t.Errorf("isError %v, result %+v; want an error result, or exit 127 with a message", r.IsError, out)
		}
	})

	t.Run("output past MAX_OUTPUT_BYTES is cut and flagged", func(t *testing.T) {
		out, r := x.run(t, map[string]any{"argv": []any{"sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a; echo done >&2"}})
		if r.IsError {
			t.Fatalf("isError: %s", r.Text)
		}
		if !out.StdoutTruncated || len(out.Stdout) > execMaxOutput || len(out.Stdout) == 0 || strings.Trim(out.Stdout, "a") != "" {
			t.Errorf("stdout %d bytes, truncated %v; want 1..%d bytes of a, truncated true", len(out.Stdout), out.StdoutTruncated, execMaxOutput)
		}
		if out.StderrTruncated || out.Stderr != "done\n" || out.ExitCode != 0 {
			t.Errorf("stderr %q truncated %v exit %d; want done, false, 0", out.Stderr, out.StderrTruncated, out.ExitCode)
		}
	})

	t.Run("timeout kills the process tree", func(t *testing.T) {
		marker := fmt.Sprintf("31.%06d", rand.IntN(1000000))
		start := time.Now()
		out, r := x.run(t, map[string]any{
			"argv":            []any{"sh", "-c", "echo started; sleep " + marker + " & sleep " + marker + "; "},
			"timeout_seconds": 1,
		})
		elapsed := time.Since(start)
		if !r.IsError || r.Structured == nil {
			t.Fatalf("isError %v, structured %v; want isError with the captured result", r.IsError, r.Structured != nil)
		}
		if !out.TimedOut || out.Stdout != "started\n" || out.ExitCode != -1 || out.Signal == "" {
			t.Errorf("result = %+v; want timed_out, stdout started, exit_code -1, a signal", out)
		}
		if elapsed > 15*time.Second {
			t.Errorf("a 1 s timeout took %v", elapsed)
		}
		var left []string
		if !waitFor(3*time.Second, func() bool { left = procsWith(marker); return len(left) == 0 }) {
			t.Errorf("processes with %q still alive 3 s after the timeout: %v", marker, left)
		}
	})

	t.Run("eight parallel calls do not block get_status", func(t *testing.T) {
		var wg sync.WaitGroup
		results := make([]*mcp.CallToolResult, 8)
		errs := make([]error, 8)
		start := time.Now()
		for i := range 8 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				defer cancel()
				req := mcp.CallToolRequest{}
				req.Params.Name = "run_command"
				req.Params.Arguments = map[string]any{"edge": "runner", "argv": []any{"sleep", "3"}}
				results[i], errs[i] = x.g.c.CallTool(ctx, req)
			})
		}
		time.Sleep(700 * time.Millisecond)
		var inFlight int
		for i := range 3 {
			t0 := time.Now()
			st := x.g.status(t, nil)
			if d := time.Since(t0); d > time.Second {
				t.Errorf("get_status #%d took %v while 8 commands ran, want < 1 s", i, d)
			}
			for _, e := range st.Edges {
				if e.Name == "runner" && e.InFlight != nil {
					inFlight = max(inFlight, *e.InFlight)
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		wg.Wait()
		for i := range 8 {
			if errs[i] != nil {
				t.Errorf("call %d: %v", i, errs[i])
				continue
			}
			r := x.g.check(t, "run_command", results[i])
			if out := decode[execOut](t, r.Structured); r.IsError || out.ExitCode != 0 {
				t.Errorf("sleep 3: isError %v exit %d %s", r.IsError, out.ExitCode, r.Text)
			}
		}
		if total := time.Since(start); total > 9*time.Second {
			t.Errorf("8 parallel sleep 3 took %v: calls were serialized", total)
		}
		if inFlight < 2 {
			t.Errorf("in_flight peaked at %d while 8 commands ran", inFlight)
		}
	})
}

// procsWith lists pids whose command line contains marker.
func procsWith(marker string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(marker)) {
			out = append(out, e.Name()+":"+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}
