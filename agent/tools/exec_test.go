package tools_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestRunCommandArguments(t *testing.T) {
	tests := []struct {
		name    string
		args    map[string]any
		wantErr string // "" = the call reaches the edge
	}{
		{"argv", map[string]any{"edge": "e", "argv": []string{"uname", "-a"}}, ""},
		{"command", map[string]any{"edge": "e", "command": "ls | wc -l"}, ""},
		{"both", map[string]any{"edge": "e", "argv": []string{"ls"}, "command": "ls"}, "exactly one"},
		{"neither", map[string]any{"edge": "e"}, "exactly one"},
		{"empty argv", map[string]any{"edge": "e", "argv": []string{}}, "argv is empty"},
		{"empty argv0", map[string]any{"edge": "e", "argv": []string{""}}, "argv[0]"},
		{"empty edge", map[string]any{"edge": "", "argv": []string{"ls"}}, "get_status"},
		{"timeout over max", map[string]any{"edge": "e", "argv": []string{"ls"}, "timeout_seconds": 61}, "maximum of 60"},
		{"negative timeout", map[string]any{"edge": "e", "argv": []string{"ls"}, "timeout_seconds": -1}, "positive"},
		{"timeout at max", map[string]any{"edge": "e", "argv": []string{"ls"}, "timeout_seconds": 60}, ""},
		{"bad env name", map[string]any{"edge": "e", "argv": []string{"ls"}, "env": map[string]string{"A=B": "1"}}, "env name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFleet{}
			cfg := baseConfig()
			cfg.ExecTimeoutMax = time.Minute
			h := newHarness(t, f, cfg)
			res := h.call("run_command", tc.args)
			if tc.wantErr == "" {
				if res.IsError || f.callCount() != 1 {
					t.Fatalf("isError=%v %q, calls %v", res.IsError, text(res), f.calls)
				}
				return
			}
			if !res.IsError || !strings.Contains(text(res), tc.wantErr) || res.StructuredContent != nil {
				t.Fatalf("got isError=%v %q", res.IsError, text(res))
			}
			if f.callCount() != 0 {
				t.Fatalf("edge called: %v", f.calls)
			}
		})
	}
}

func TestRunCommandResult(t *testing.T) {
	lg, readAudit := auditLog(t)
	var got protocol.ExecParams
	var gotStdin string
	var deadline time.Duration
	f := &fakeFleet{edges: []gateway.EdgeStatus{{Name: "pi", Fingerprint: "SHA256:pi"}}}
	f.execFn = func(ctx context.Context, edge string, p protocol.ExecParams, stdin io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
		got = p
		if stdin != nil {
			b, _ := io.ReadAll(stdin)
			gotStdin = string(b)
		}
		if d, ok := ctx.Deadline(); ok {
			deadline = time.Until(d)
		}
		out(protocol.FrameStdout, []byte("0123456"))
		out(protocol.FrameStdout, []byte("789abc\xff"))
		out(protocol.FrameStderr, []byte("err\xfe"))
		return protocol.ExecResult{ExitCode: 3, DurationMs: 12}, nil
	}
	cfg := baseConfig()
	cfg.MaxOutputBytes = 10
	cfg.ExecTimeout = 7 * time.Second
	cfg.Audit = lg
	h := newHarness(t, f, cfg)
	res := h.call("run_command", map[string]any{"edge": "SHA256:pi", "argv": []string{"cat"}, "stdin": "secret-input",
		"env": map[string]string{"TOKEN": "secret-value"}, "cwd": "/tmp"})
	if res.IsError {
		t.Fatalf("non-zero exit must not be an error: %s", text(res))
	}
	var out tools.RunOutput
	structured(t, res, &out)
	want := tools.RunOutput{Edge: "pi", ExitCode: 3, Stdout: "0123456789", Stderr: "err\uFFFD", StdoutTruncated: true, DurationMs: 12}
	if out != want {
		t.Fatalf("got %+v\nwant %+v", out, want)
	}
	if got.MaxOutputBytes != 10 || got.TimeoutMs != 7000 || !got.Stdin || gotStdin != "secret-input" || got.Cwd != "/tmp" {
		t.Fatalf("exec params %+v stdin %q", got, gotStdin)
	}
	if deadline < 7*time.Second || deadline > 20*time.Second {
		t.Fatalf("call deadline %v, want timeout plus a few seconds", deadline)
	}
	evs := readAudit()
	if len(evs) != 2 || evs[0].Event != "intent" || evs[1].Event != "outcome" || evs[0].RequestID == "" ||
		evs[0].RequestID != evs[1].RequestID || evs[0].Edge != "pi" || evs[0].Fingerprint != "SHA256:pi" ||
		strings.Join(evs[0].Env, ",") != "TOKEN" || evs[1].ExitCode == nil || *evs[1].ExitCode != 3 || evs[1].Outcome != "ok" {
		t.Fatalf("audit: %+v", evs)
	}
	if raw := auditRaw(t, readAudit); strings.Contains(raw, "secret") {
		t.Fatalf("audit leaks stdin or env values: %s", raw)
	}
}

func TestRunCommandTimeout(t *testing.T) {
	tests := []struct {
		name string
		fn   func(ctx context.Context) (protocol.ExecResult, error)
	}{
		{"edge reports timeout", func(context.Context) (protocol.ExecResult, error) {
			return protocol.ExecResult{ExitCode: -1, Signal: "SIGKILL", TimedOut: true, DurationMs: 1000}, nil
		}},
		{"gateway deadline", func(ctx context.Context) (protocol.ExecResult, error) {
			<-ctx.Done()
			return protocol.ExecResult{}, ctx.Err()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFleet{}
			f.execFn = func(ctx context.Context, _ string, _ protocol.ExecParams, _ io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
				out(protocol.FrameStdout, []byte("partial"))
				// The gateway-deadline case must not wait the real grace period.
				ctx, cancel := context.WithTimeoutCause(ctx, 50*time.Millisecond, context.DeadlineExceeded)
				defer cancel()
				return tc.fn(ctx)
			}
			h := newHarness(t, f, baseConfig())
			res := h.call("run_command", map[string]any{"edge": "e", "argv": []string{"sleep", "9"}, "timeout_seconds": 1})
			if !res.IsError || res.StructuredContent == nil || !strings.Contains(text(res), "timeout_seconds") {
				t.Fatalf("isError=%v structured=%v %q", res.IsError, res.StructuredContent, text(res))
			}
			var out tools.RunOutput
			structured(t, res, &out)
			if !out.TimedOut || out.Stdout != "partial" || out.ExitCode != -1 {
				t.Fatalf("got %+v", out)
			}
		})
	}
}

func TestRunCommandCancelPropagates(t *testing.T) {
	started := make(chan struct{})
	gotErr := make(chan error, 1)
	f := &fakeFleet{}
	f.execFn = func(ctx context.Context, _ string, _ protocol.ExecParams, _ io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
		out(protocol.FrameStdout, []byte("working"))
		close(started)
		select {
		case <-ctx.Done():
			gotErr <- ctx.Err()
			return protocol.ExecResult{ExitCode: -1, Signal: "SIGKILL", Cancelled: true}, ctx.Err()
		case <-time.After(10 * time.Second):
			gotErr <- nil
			return protocol.ExecResult{}, nil
		}
	}
	lg, readAudit := auditLog(t)
	cfg := baseConfig()
	cfg.Audit = lg
	h := newHarness(t, f, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-started
		cancel()
	}()
	var req mcp.CallToolRequest
	req.Params.Name = "run_command"
	req.Params.Arguments = map[string]any{"edge": "e", "argv": []string{"sleep", "100"}}
	res, err := h.c.CallTool(ctx, req)
	if err := <-gotErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Exec saw %v, want context.Canceled", err)
	}
	if err == nil {
		h.check("run_command", res)
		if !res.IsError || !strings.Contains(text(res), "cancelled") {
			t.Fatalf("isError=%v %q", res.IsError, text(res))
		}
	}
	evs := readAudit()
	if len(evs) != 2 || evs[1].Outcome != "cancelled" {
		t.Fatalf("audit %+v", evs)
	}
}

func TestRunCommandProgressCoalesced(t *testing.T) {
	const chunks = 60
	f := &fakeFleet{}
	f.execFn = func(ctx context.Context, _ string, _ protocol.ExecParams, _ io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
		for i := range chunks {
			out(protocol.FrameStdout, []byte{'a' + byte(i%26)})
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(250 * time.Millisecond) // let the last batch go out
		return protocol.ExecResult{}, nil
	}
	h := newHarness(t, f, baseConfig())
	var mu sync.Mutex
	var msgs []string
	var progress []float64
	h.c.OnNotification(func(n mcp.JSONRPCNotification) {
		if n.Method != "notifications/progress" {
			return
		}
		p := n.Params.AdditionalFields
		if p["progressToken"] != "tok-1" {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		m, _ := p["message"].(string)
		msgs = append(msgs, m)
		v, _ := p["progress"].(float64)
		progress = append(progress, v)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res := h.callCtx(ctx, "run_command", map[string]any{"edge": "e", "argv": []string{"yes"}}, &mcp.Meta{ProgressToken: "tok-1"})
	var out tools.RunOutput
	structured(t, res, &out)
	// Notifications are delivered asynchronously: wait (bounded) for them to settle.
	want := out.Stdout
	for range 100 {
		mu.Lock()
		joined := strings.Join(msgs, "")
		mu.Unlock()
		if joined == want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(msgs, "") != want || len(want) != chunks {
		t.Fatalf("progress messages %q do not add up to the output %q", msgs, want)
	}
	// ~0.6 s of output at most 10/s: well under one notification per chunk.
	if len(msgs) < 2 || len(msgs) > 15 {
		t.Fatalf("%d notifications for %d chunks: not coalesced", len(msgs), chunks)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i] <= progress[i-1] {
			t.Fatalf("progress not increasing: %v", progress)
		}
	}
}

func TestEdgeErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"unknown", gateway.ErrUnknownEdge, `unknown edge "e": call get_status to list edges`},
		{"offline", gateway.ErrEdgeOffline, `edge "e" is not connected`},
		{"busy", gateway.ErrEdgeBusy, "retry"},
		{"policy", &protocol.Error{Code: protocol.CodePolicy, Message: "argv[0] /bin/rm is not allowed"}, "refused by the edge's policy: argv[0] /bin/rm is not allowed"},
		{"paused", &protocol.Error{Code: protocol.CodePaused, Message: "paused"}, "mcp-ssh-edge resume"},
		{"multiline peer message", &protocol.Error{Code: protocol.CodeIO, Message: "a\nb"}, "I/O error on the edge: a b"},
		{"other", errors.New("boom"), "boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFleet{}
			f.execFn = func(context.Context, string, protocol.ExecParams, io.Reader, func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
				return protocol.ExecResult{}, tc.err
			}
			f.infoFn = func(context.Context, string, bool) (protocol.DeviceInfo, error) { return protocol.DeviceInfo{}, tc.err }
			h := newHarness(t, f, baseConfig())
			for _, call := range []struct {
				tool string
				args map[string]any
			}{
				{"run_command", map[string]any{"edge": "e", "argv": []string{"ls"}}},
				{"get_device_info", map[string]any{"edge": "e"}},
			} {
				res := h.call(call.tool, call.args)
				if !res.IsError || res.StructuredContent != nil || !strings.Contains(text(res), tc.want) {
					t.Fatalf("%s: isError=%v structured=%v %q, want %q", call.tool, res.IsError, res.StructuredContent != nil, text(res), tc.want)
				}
			}
		})
	}
}
