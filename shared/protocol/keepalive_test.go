package protocol

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fakePeer answers keepalive probes as told: the first answers probes get a reply, later ones
// hang until the peer is closed (-1: every probe is answered); fail makes every probe fail.
type fakePeer struct {
	answers     int
	fail        error
	closed      chan struct{}
	sent        atomic.Int32
	outstanding atomic.Int32
	maxOut      atomic.Int32
	mu          sync.Mutex
	lastReply   time.Time
}

func newFakePeer(answers int, fail error) *fakePeer {
	return &fakePeer{answers: answers, fail: fail, closed: make(chan struct{})}
}

func (f *fakePeer) SendRequest(name string, wantReply bool, _ []byte) (bool, []byte, error) {
	n := f.sent.Add(1)
	if out := f.outstanding.Add(1); out > f.maxOut.Load() {
		f.maxOut.Store(out)
	}
	defer f.outstanding.Add(-1)
	switch {
	case name != KeepaliveRequest || !wantReply:
		return false, nil, errors.New("not a keepalive probe")
	case f.fail != nil:
		return false, nil, f.fail
	case f.answers >= 0 && int(n) > f.answers:
		<-f.closed
		return false, nil, errors.New("connection closed")
	}
	f.mu.Lock()
	f.lastReply = time.Now()
	f.mu.Unlock()
	return false, nil, nil // a refusal proves liveness as well as an acceptance
}

func (f *fakePeer) last() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReply
}

func TestProber(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const interval = 30 * time.Millisecond
	broken := errors.New("broken pipe")
	tests := []struct {
		name     string
		peer     *fakePeer
		interval time.Duration
		run      time.Duration // how long the peer is given at most
		wantErr  string        // "" for a Prober still running when run ends
		minSent  int32
		maxSent  int32
	}{
		{"answered probes keep the peer alive", newFakePeer(-1, nil), interval, 12 * interval, "", 6, 13},
		{"silence from the start ends it after three intervals", newFakePeer(0, nil), interval, 40 * interval, "no answer for 3 intervals", 1, 1},
		{"silence after answers ends it three intervals after the last", newFakePeer(3, nil), interval, 40 * interval, "no answer for 3 intervals", 4, 4},
		{"a failed probe ends it with the error", newFakePeer(-1, broken), interval, 40 * interval, "broken pipe", 1, 1},
		{"a zero interval never probes", newFakePeer(-1, nil), 0, 5 * interval, "", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			ctx, cancel := context.WithTimeout(context.Background(), tc.run)
			defer cancel()
			start := time.Now()
			p := NewProber(tc.peer, tc.interval, wg.Go)
			err := p.Run(ctx)
			ended := time.Now()
			close(tc.peer.closed)
			waitProbes(t, p, &wg)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Run = %v, want it still probing after %v", err, tc.run)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("Run = %v, want an error with %q", err, tc.wantErr)
			}
			if n := tc.peer.sent.Load(); n < tc.minSent || n > tc.maxSent {
				t.Errorf("%d probes sent, want %d to %d", n, tc.minSent, tc.maxSent)
			}
			if out := tc.peer.maxOut.Load(); out > 1 {
				t.Errorf("%d probes outstanding at once, want at most one", out)
			}
			if !strings.Contains(tc.wantErr, "no answer") {
				return
			}
			alive := start
			if l := tc.peer.last(); !l.IsZero() {
				alive = l
			}
			if silent := ended.Sub(alive); silent < MaxMissedKeepalives*tc.interval || silent > (MaxMissedKeepalives+3)*tc.interval {
				t.Errorf("dead after %v of silence, want %v (and not much more)", silent, MaxMissedKeepalives*tc.interval)
			}
		})
	}
}

// waitProbes waits for the probes still outstanding once the peer is closed, taking their
// replies (which nobody reads any more: a Prober's one reply slot holds only one).
func waitProbes(t *testing.T, p *Prober, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case <-done:
			return
		case <-p.Replies():
		case <-timeout:
			t.Fatal("probes still running 5 s after the peer closed")
		}
	}
}
