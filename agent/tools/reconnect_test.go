package tools_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// youngFleet is a fakeFleet whose gateway started at started and that signals edge changes.
type youngFleet struct {
	*fakeFleet
	started time.Time
	changes chan struct{}
}

func (f *youngFleet) Info() gateway.Info { return gateway.Info{Started: f.started} }

func (f *youngFleet) WatchEdges(context.Context) <-chan struct{} { return f.changes }

// reconnect marks the edge connected after d and signals the change.
func (f *youngFleet) reconnect(d time.Duration) {
	time.AfterFunc(d, func() {
		f.mu.Lock()
		f.edges[0].Connected = true
		f.mu.Unlock()
		f.changes <- struct{}{}
	})
}

// TestCallWaitsForReconnectingEdge: in the gateway's first minute a call for a known edge
// that is not yet back waits for it (bounded) instead of failing; later it fails at once.
func TestCallWaitsForReconnectingEdge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		age      time.Duration
		back     bool // the edge reconnects 300 ms after the call
		wantOK   bool
		maxTaken time.Duration
	}{
		{"young gateway, edge comes back", time.Second, true, true, 5 * time.Second},
		{"old gateway fails at once", 2 * time.Minute, false, false, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &youngFleet{started: time.Now().Add(-tc.age), changes: make(chan struct{}, 1),
				fakeFleet: &fakeFleet{edges: []gateway.EdgeStatus{{Name: "pi", Fingerprint: "SHA256:pi", Labels: map[string]string{}}}}}
			f.execFn = func(_ context.Context, edge string, _ protocol.ExecParams, _ io.Reader, _ func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if !f.edges[0].Connected {
					return protocol.ExecResult{}, gateway.ErrEdgeOffline
				}
				return protocol.ExecResult{}, nil
			}
			h := newHarness(t, f, baseConfig())
			if tc.back {
				f.reconnect(300 * time.Millisecond)
			}
			start := time.Now()
			res := h.call("run_command", map[string]any{"edge": "pi", "argv": []any{"true"}})
			took := time.Since(start)
			if res.IsError == tc.wantOK {
				t.Fatalf("isError = %v, want %v: %s", res.IsError, !tc.wantOK, text(res))
			}
			if !tc.wantOK && !strings.Contains(text(res), "not connected") {
				t.Errorf("error does not say the edge is not connected: %s", text(res))
			}
			if took > tc.maxTaken || tc.back && took < 250*time.Millisecond {
				t.Errorf("call took %s (want it to wait for the reconnect, at most %s)", took, tc.maxTaken)
			}
		})
	}
}
