package tools_test

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// TestRunOnEdges: label selection over gateway-bound labels only, and one slow, one failing
// and one offline edge each get their own entry without hiding the others.
func TestRunOnEdges(t *testing.T) {
	f := &fakeFleet{edges: []gateway.EdgeStatus{
		{Name: "ok1", Connected: true, Labels: map[string]string{"role": "web"}},
		{Name: "slow", Connected: true, Labels: map[string]string{"role": "web"}},
		{Name: "broken", Connected: true, Labels: map[string]string{"role": "web"}},
		{Name: "off", Connected: false, Labels: map[string]string{"role": "web"}},
		{Name: "db", Connected: true, Labels: map[string]string{"role": "db"}, ReportedLabels: map[string]string{"role": "web"}},
	}}
	f.execFn = func(ctx context.Context, edge string, p protocol.ExecParams, _ io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
		switch edge {
		case "slow":
			<-ctx.Done() // never answers: the gateway's deadline ends it
			return protocol.ExecResult{}, ctx.Err()
		case "broken":
			return protocol.ExecResult{}, gateway.ErrDisconnected
		}
		out(protocol.FrameStdout, []byte(edge+"\n"))
		return protocol.ExecResult{ExitCode: 0, DurationMs: 1}, nil
	}
	cfg := baseConfig()
	h := newHarness(t, f, cfg)
	start := time.Now()
	res := h.call("run_on_edges", map[string]any{"target": "role=web", "argv": []string{"hostname"}, "timeout_seconds": 1})
	if res.IsError {
		t.Fatalf("isError: %s", text(res))
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v", d)
	}
	var out struct {
		Matched, Succeeded, Failed int
		Results                    []struct {
			Edge, Stdout, Error string
			ExitCode            int  `json:"exit_code"`
			TimedOut            bool `json:"timed_out"`
		}
	}
	b, _ := json.Marshal(res.StructuredContent)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Matched != 4 || out.Succeeded != 1 || out.Failed != 3 || len(out.Results) != 4 {
		t.Fatalf("%s", b)
	}
	for _, r := range out.Results {
		switch r.Edge {
		case "ok1":
			if r.Stdout != "ok1\n" || r.Error != "" {
				t.Errorf("ok1: %+v", r)
			}
		case "slow":
			if !r.TimedOut || r.Error == "" {
				t.Errorf("slow: %+v", r)
			}
		case "broken", "off":
			if r.Error == "" || r.ExitCode != -1 {
				t.Errorf("%s: %+v", r.Edge, r)
			}
		default:
			t.Errorf("unexpected edge %s", r.Edge)
		}
	}
	for _, bad := range []map[string]any{
		{"target": "", "argv": []string{"true"}},
		{"target": "role=web,=x", "argv": []string{"true"}},
		{"target": "role=none", "argv": []string{"true"}},
		{"target": "*", "argv": []string{"true"}, "concurrency": 1000},
		{"target": "*"},
	} {
		if res := h.call("run_on_edges", bad); !res.IsError {
			t.Errorf("%v accepted", bad)
		}
	}
}
