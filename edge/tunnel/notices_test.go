package tunnel

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// syncBuffer is a log sink safe for the edge's goroutines and the test's.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// lines returns the logged lines at level WARN or above that contain sub.
func (s *syncBuffer) lines(sub string) []string {
	var out []string
	for l := range strings.Lines(s.String()) {
		if strings.Contains(l, sub) && !strings.Contains(l, "level=DEBUG") && !strings.Contains(l, "level=INFO") {
			out = append(out, l)
		}
	}
	return out
}

// TestEdgeExplainsRefusals runs the edge against a gateway that keeps refusing it in one
// way: it names the cause once (not once per attempt), with its fingerprint and, for an
// unknown key, the command that admits it; the raw per-attempt error is not repeated.
func TestEdgeExplainsRefusals(t *testing.T) {
	for _, tc := range []struct {
		name       string
		refuseKeys bool
		replace    bool
		want       string // in the one explanation
		attempts   int32
	}{
		{"unknown key", true, false, "`mcp-ssh-gateway keys approve SHA256:", 3},
		{"replaced by a newer connection of the same key", false, true, "another device is using this edge's key", 3},
		{"closed soon after connecting, again and again", false, false, "closed this connection 3 times in a row", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := startGateway(t)
			g.refuseKeys, g.dropAfter, g.replace = tc.refuseKeys, !tc.refuseKeys, tc.replace
			g.serve()
			cfg := edgeConfig(t, g, g.host.PublicKey())
			cfg.BackoffMax = time.Second
			fp := keys.Fingerprint(cfg.Signer.PublicKey())
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg, echo, log) }()
			go func() { // drain what the fake gateway reports
				for {
					select {
					case <-g.hellos:
					case <-g.versions:
					case <-ctx.Done():
						return
					}
				}
			}()
			deadline := time.Now().Add(15 * time.Second)
			for g.accepts.Load() < tc.attempts && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the last attempt's end is logged
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if n := g.accepts.Load(); n < tc.attempts {
				t.Fatalf("%d attempts, want %d", n, tc.attempts)
			}
			got := logs.lines(tc.want)
			if len(got) != 1 || !strings.Contains(got[0], fp) {
				t.Errorf("explanations %q, want one line naming %s\nlog:\n%s", got, fp, logs.String())
			}
			if n := len(logs.lines("gateway connection ended")); n > 2 {
				t.Errorf("%d warnings \"gateway connection ended\": the explained failure is repeated per attempt\nlog:\n%s", n, logs.String())
			}
		})
	}
}

// TestNoticesOncePerMinute: an explanation comes again only after a minute, and a
// connection that lasted resets the count of quick closes.
func TestNoticesOncePerMinute(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	now := time.Unix(1_000_000, 0)
	n := &notices{fp: "SHA256:x", name: "pi", stable: 30 * time.Second, now: func() time.Time { return now }, last: map[string]time.Time{}}
	authErr := errors.New("ssh handshake: ssh: handshake failed: ssh: unable to authenticate, attempted methods [none publickey], no supported methods remain")
	for _, step := range []struct {
		advance   time.Duration
		err       error
		up        time.Duration
		explained bool
		lines     int // explanations logged so far
	}{
		{0, authErr, 0, true, 1},
		{10 * time.Second, authErr, 0, true, 1},
		{59 * time.Second, authErr, 0, true, 2},
		{time.Second, errClosedByGateway, time.Second, false, 2},
		{time.Second, errClosedByGateway, time.Second, false, 2},
		{time.Second, errClosedByGateway, time.Hour, false, 2}, // lasted: not a flap
		{time.Second, errClosedByGateway, time.Second, false, 2},
		{time.Second, errClosedByGateway, time.Second, false, 2},
		{time.Second, errClosedByGateway, time.Second, true, 3},
		{time.Second, errors.New("dial: connection refused"), 0, false, 3},
	} {
		now = now.Add(step.advance)
		if got := n.explain("gw:2222", step.err, step.up, log); got != step.explained {
			t.Errorf("after %v: explained %v, want %v", step.err, got, step.explained)
		}
		if got := strings.Count(logs.String(), "\n"); got != step.lines {
			t.Fatalf("after %v: %d lines logged, want %d:\n%s", step.err, got, step.lines, logs.String())
		}
	}
}
