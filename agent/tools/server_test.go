package tools_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestToolsListed(t *testing.T) {
	h := newHarness(t, &adminFleet{fakeFleet: &fakeFleet{}}, baseConfig())
	// readOnly, destructive, idempotent, openWorld, for every tool (the README's tool table).
	want := map[string][4]bool{
		"start_command":           {false, true, false, true},
		"get_command":             {true, false, true, false},
		"cancel_command":          {false, true, true, false},
		"list_commands":           {true, false, true, false},
		"download_file":           {true, false, true, true},
		"revoke_edge_key":         {false, true, true, false},
		"list_pending_edges":      {true, false, true, false},
		"approve_edge":            {false, false, true, false},
		"create_enrollment_token": {false, false, false, false},
		"explain_policy":          {true, false, true, false},
		"get_status":              {true, false, true, false},
		"register_edge_key":       {false, false, true, false},
		"get_agent_pubkey":        {true, false, true, false},
		"run_command":             {false, true, false, true},
		"upload_file":             {false, true, false, true},
		"get_device_info":         {true, false, true, true},
		"run_on_edges":            {false, true, false, true},
		"find_edges":              {true, false, true, false},
	}
	if len(h.tools) != len(want) {
		t.Fatalf("got %d tools, want %d", len(h.tools), len(want))
	}
	for name, ann := range want {
		t.Run(name, func(t *testing.T) {
			tool, ok := h.tools[name]
			if !ok {
				t.Fatal("not listed")
			}
			a := tool.Annotations
			if a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
				t.Fatalf("annotations not all set: %+v", a)
			}
			got := [4]bool{*a.ReadOnlyHint, *a.DestructiveHint, *a.IdempotentHint, *a.OpenWorldHint}
			if got != ann {
				t.Errorf("annotations = %v, want %v", got, ann)
			}
			if len(tool.Description) < 80 {
				t.Errorf("description too short for a model: %q", tool.Description)
			}
			var wire struct {
				In  map[string]any `json:"inputSchema"`
				Out map[string]any `json:"outputSchema"`
			}
			if err := json.Unmarshal([]byte(mustJSON(t, tool)), &wire); err != nil {
				t.Fatal(err)
			}
			in, out := wire.In, wire.Out
			if in["type"] != "object" || in["additionalProperties"] == nil {
				t.Errorf("input schema = %v", in)
			}
			checkDescriptions(t, "input", in)
			if out["type"] != "object" || len(tool.OutputSchema.Properties) == 0 {
				t.Fatalf("no output schema: %+v", out)
			}
			checkDescriptions(t, "output", out)
		})
	}
	if !strings.Contains(h.init.Instructions, "get_status") || !strings.Contains(h.init.Instructions, "argv") ||
		!strings.Contains(h.init.Instructions, "timeout_seconds") {
		t.Errorf("instructions lack the workflow: %q", h.init.Instructions)
	}
}

// checkDescriptions requires a description on every property, recursively.
func checkDescriptions(t *testing.T, where string, schema map[string]any) {
	t.Helper()
	props, _ := schema["properties"].(map[string]any)
	for name, p := range props {
		ps, _ := p.(map[string]any)
		if d, _ := ps["description"].(string); d == "" {
			t.Errorf("%s property %q has no description", where, name)
		}
		checkDescriptions(t, where+"."+name, ps)
		if items, ok := ps["items"].(map[string]any); ok {
			checkDescriptions(t, where+"."+name+"[]", items)
		}
	}
}

func TestUnknownToolIsJSONRPCError(t *testing.T) {
	h := newHarness(t, &fakeFleet{}, baseConfig())
	var req mcp.CallToolRequest
	req.Params.Name = "no_such_tool"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.c.CallTool(ctx, req); err == nil {
		t.Fatal("unknown tool did not give a JSON-RPC error")
	}
}

func TestBadArgumentsAreToolErrors(t *testing.T) {
	f := &fakeFleet{}
	h := newHarness(t, f, baseConfig())
	tests := []struct {
		tool string
		args map[string]any
	}{
		{"run_command", map[string]any{"argv": []string{"true"}}},                   // no edge
		{"run_command", map[string]any{"edge": "a", "argv": "true"}},                // wrong type
		{"run_command", map[string]any{"edge": "a", "argv": []string{"x"}, "x": 1}}, // unknown field
		{"upload_file", map[string]any{"edge": "a", "path": "/x"}},                  // no content
		{"get_status", map[string]any{"limit": "ten"}},
	}
	for _, tc := range tests {
		res := h.call(tc.tool, tc.args)
		if !res.IsError || res.StructuredContent != nil {
			t.Errorf("%s %v: isError=%v structured=%v", tc.tool, tc.args, res.IsError, res.StructuredContent)
		}
	}
	if f.callCount() != 0 {
		t.Errorf("fleet called on bad arguments: %v", f.calls)
	}
}

// TestServeStdio runs the stdio transport over pipes: 64 calls must be served at once (they
// all block until every one has started), and EOF on stdin ends the server with nil.
func TestServeStdio(t *testing.T) {
	const n = 64
	var started atomic.Int32
	all := make(chan struct{})
	f := &fakeFleet{}
	f.execFn = func(ctx context.Context, _ string, _ protocol.ExecParams, _ io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
		if started.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
		case <-ctx.Done():
			return protocol.ExecResult{}, ctx.Err()
		case <-time.After(20 * time.Second):
			return protocol.ExecResult{ExitCode: 99}, nil
		}
		out(protocol.FrameStdout, []byte("hi"))
		return protocol.ExecResult{}, nil
	}
	s := tools.NewServer(f, baseConfig())
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- tools.ServeStdio(context.Background(), s, inR, outW); _ = outW.Close() }()

	lines := make(chan map[string]any, 2*n)
	go func() {
		sc := bufio.NewScanner(outR)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				lines <- m
			}
		}
		close(lines)
	}()
	send := func(s string) {
		if _, err := io.WriteString(inW, s+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}`)
	send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	for i := 1; i <= n; i++ {
		send(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"run_command","arguments":{"edge":"e","argv":["true"]}}}`, i))
	}
	got := 0
	deadline := time.After(30 * time.Second)
	for got < n+1 {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatal("stdout closed early")
			}
			if id, ok := m["id"].(float64); ok && id > 0 {
				res, _ := m["result"].(map[string]any)
				sc, _ := res["structuredContent"].(map[string]any)
				if sc["exit_code"] != float64(0) || sc["stdout"] != "hi" {
					t.Fatalf("call %v: %v", id, m)
				}
			}
			got++
		case <-deadline:
			t.Fatalf("only %d of %d responses (started %d)", got, n+1, started.Load())
		}
	}
	_ = inW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeStdio after EOF: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeStdio did not return after EOF")
	}
	for range lines {
	}
}

func TestServeStdioContextDone(t *testing.T) {
	s := tools.NewServer(&fakeFleet{}, baseConfig())
	inR, inW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tools.ServeStdio(ctx, s, inR, io.Discard) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ServeStdio after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeStdio did not return after its context was cancelled")
	}
	_ = inW.Close() // releases mcp-go's pending stdin read
	_ = inR.Close()
}
