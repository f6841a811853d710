package tools_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// jobFleet's edges run one job that finishes, with its output, at done.
type jobFleet struct {
	*fakeFleet
	done    time.Time
	polls   atomic.Int64
	started atomic.Int64
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

func (e *jobEdge) JobStart(_ context.Context, _ string, p protocol.JobStartParams) (protocol.JobStatus, error) {
	e.f.started.Add(1)
	return protocol.JobStatus{ID: "0123456789abcdef", Status: protocol.JobRunning, Argv: p.Exec.Argv}, nil
}

// TestLongRunCommandBecomesJob: a run_command asking more than a minute from a client that
// sends no progress runs as a job: its result when it ends in time, its job_id otherwise; with
// progress (or a short timeout) it is an ordinary exec.
func TestLongRunCommandBecomesJob(t *testing.T) {
	for _, tc := range []struct {
		name     string
		timeout  int
		progress bool
		finish   time.Duration // when the job ends
		wantJob  bool
		wantErr  bool
		wantExit int
	}{
		{"ends within the wait", 300, false, 300 * time.Millisecond, true, false, 0},
		{"still running: job_id", 300, false, time.Hour, true, true, -1},
		{"with progress: ordinary exec", 300, true, 0, false, false, 0},
		{"short timeout: ordinary exec", 60, false, 0, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &jobFleet{fakeFleet: &fakeFleet{}}
			cfg := baseConfig()
			cfg.JobAnswerWait = 1500 * time.Millisecond
			h := newHarness(t, f, cfg)
			f.done = time.Now().Add(tc.finish)
			var meta *mcp.Meta
			if tc.progress {
				meta = &mcp.Meta{ProgressToken: "p1"}
			}
			res := h.callCtx(context.Background(), "run_command", map[string]any{"edge": "pi", "argv": []any{"make"}, "timeout_seconds": tc.timeout}, meta)
			var out struct {
				ExitCode int    `json:"exit_code"`
				Stdout   string `json:"stdout"`
				JobID    string `json:"job_id"`
			}
			structured(t, res, &out)
			if got := f.started.Load() == 1; got != tc.wantJob {
				t.Fatalf("ran as a job = %v, want %v", got, tc.wantJob)
			}
			if res.IsError != tc.wantErr || out.ExitCode != tc.wantExit || (out.JobID != "") != tc.wantJob {
				t.Errorf("isError=%v exit %d job_id %q: %s", res.IsError, out.ExitCode, out.JobID, text(res))
			}
			if tc.wantJob && !tc.wantErr && out.Stdout != "done\n" {
				t.Errorf("stdout %q, want the job's output", out.Stdout)
			}
			if tc.wantErr && !strings.Contains(text(res), "get_command job_id=pi/0123456789abcdef") {
				t.Errorf("the answer does not say how to follow the job: %s", text(res))
			}
		})
	}
}
