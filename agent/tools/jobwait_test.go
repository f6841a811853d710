package tools_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// jobFleet's edges run one job that finishes, with its output, at done.
type jobFleet struct {
	*fakeFleet
	done  time.Time
	polls atomic.Int64
}

func (f *jobFleet) Edge(ref string) (gateway.Edge, error) {
	e, err := f.fakeFleet.Edge(ref)
	return &jobEdge{Edge: e, f: f}, err
}

type jobEdge struct {
	gateway.Edge
	f *jobFleet
}

func (e *jobEdge) JobGet(_ context.Context, _ string, p protocol.JobGetParams) (protocol.JobStatus, error) {
	e.f.polls.Add(1)
	st := protocol.JobStatus{ID: p.ID, Status: protocol.JobRunning, Argv: []string{"make"}}
	if time.Now().After(e.f.done) {
		code := 0
		st.Status, st.ExitCode, st.Output, st.NextSince, st.OutputSize = protocol.JobExited, &code, []byte("done\n"), 5, 5
	}
	return st, nil
}

// TestGetCommandWaits: wait_seconds answers once the job has news (here: its end), not at once
// and not only when the wait runs out; without it get_command answers at once.
func TestGetCommandWaits(t *testing.T) {
	for _, tc := range []struct {
		name       string
		wait       int
		wantStatus string
		min, max   time.Duration
	}{
		{"no wait", 0, protocol.JobRunning, 0, 500 * time.Millisecond},
		{"waits for the end", 10, protocol.JobExited, 600 * time.Millisecond, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &jobFleet{fakeFleet: &fakeFleet{}}
			h := newHarness(t, f, baseConfig())
			start := time.Now()
			f.done = start.Add(800 * time.Millisecond)
			res := h.call("get_command", map[string]any{"job_id": "pi/0123456789abcdef", "wait_seconds": tc.wait})
			took := time.Since(start)
			var out struct {
				Status string `json:"status"`
				Output string `json:"output"`
			}
			structured(t, res, &out)
			if out.Status != tc.wantStatus || took < tc.min || took > tc.max {
				t.Fatalf("status %q after %s, want %q within [%s, %s]", out.Status, took, tc.wantStatus, tc.min, tc.max)
			}
		})
	}
	h := newHarness(t, &jobFleet{fakeFleet: &fakeFleet{}}, baseConfig())
	if res := h.call("get_command", map[string]any{"job_id": "pi/0123456789abcdef", "wait_seconds": 51}); !res.IsError {
		t.Errorf("wait_seconds 51 accepted: %s", text(res))
	}
}
