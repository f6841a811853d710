package tools

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestTokenGuard drives the provisioning-token limiter on a fake clock: five wrong tokens a
// minute lock out one client (actor and session) for the rest of that minute, other sessions
// of the actor keep theirs, 20 from all sessions lock out the actor, and the window slides.
func TestTokenGuard(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type fail struct {
		actor, session string
		at             time.Duration // after t0
	}
	burst := func(actor, session string, n int, at time.Duration) []fail {
		var out []fail
		for i := range n {
			out = append(out, fail{actor, session, at + time.Duration(i)*time.Second})
		}
		return out
	}
	tests := []struct {
		name           string
		fails          []fail
		actor, session string
		at             time.Duration
		wantWait       time.Duration
		wantWholeActor bool
	}{
		{"four wrong: not locked", burst("http", "s1", 4, 0), "http", "s1", 10 * time.Second, 0, false},
		{"five wrong: locked until the first leaves the window", burst("http", "s1", 5, 0), "http", "s1", 10 * time.Second, 50 * time.Second, false},
		{"the window slides: the first has left it", burst("http", "s1", 5, 0), "http", "s1", time.Minute, 0, false},
		{"another session of the same actor is not locked", burst("http", "s1", 5, 0), "http", "s2", 10 * time.Second, 0, false},
		{"another actor with the same session id is not locked", burst("http:ci", "s1", 5, 0), "http", "s1", 10 * time.Second, 0, false},
		{"20 from four sessions lock the actor's fresh session", append(append(append(burst("http", "a", 5, 0), burst("http", "b", 5, 0)...),
			burst("http", "c", 5, 0)...), burst("http", "d", 5, 0)...), "http", "e", 30 * time.Second, 30 * time.Second, true},
		{"19 do not", append(append(append(burst("http", "a", 5, 0), burst("http", "b", 5, 0)...),
			burst("http", "c", 5, 0)...), burst("http", "d", 4, 0)...), "http", "e", 30 * time.Second, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newTokenGuard()
			for _, f := range tc.fails {
				if wait, _, _ := g.check(f.actor, f.session, t0.Add(f.at), wrong); wait != 0 {
					t.Fatalf("guess at %s refused for %s: the test's failures must all be counted", f.at, wait)
				}
			}
			compared := false
			wait, whole, ok := g.check(tc.actor, tc.session, t0.Add(tc.at), func() bool { compared = true; return true })
			if wait != tc.wantWait || whole != tc.wantWholeActor {
				t.Fatalf("wait %s, whole actor %v; want %s, %v", wait, whole, tc.wantWait, tc.wantWholeActor)
			}
			if locked := tc.wantWait > 0; compared == locked || ok == locked {
				t.Fatalf("right token: compared %v, accepted %v; a locked-out client is refused uncompared, else accepted", compared, ok)
			}
		})
	}
}

// wrong is a comparison that fails.
func wrong() bool { return false }

// TestTokenGuardConcurrentGuesses: calls of one session at once get no more comparisons than
// calls one after another.
func TestTokenGuardConcurrentGuesses(t *testing.T) {
	g := newTokenGuard()
	now := time.Now()
	var compared atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { g.check("http", "s1", now, func() bool { compared.Add(1); return false }) })
	}
	wg.Wait()
	if n := compared.Load(); n != maxTokenFailures {
		t.Fatalf("%d guesses compared, want %d", n, maxTokenFailures)
	}
}

// TestTokenGuardBounded: however many sessions fail, the guard holds at most maxTokenClients
// of them, forgets those whose failures left the window first and keeps a locked-out client
// over ones that are not.
func TestTokenGuardBounded(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := newTokenGuard()
	for range maxTokenFailures {
		g.check("stdio", "stdio", t0, wrong)
	}
	for i := range maxTokenClients + 64 {
		// Each from its own actor, so that no actor's cap stops them: the worst case for memory.
		g.check(fmt.Sprint("http:c", i), "s", t0.Add(time.Millisecond*time.Duration(i)), wrong)
		if n, a := len(g.clients.byKey), len(g.actors.byKey); n > maxTokenClients || a > maxTokenClients {
			t.Fatalf("after %d sessions: %d clients, %d actors held (max %d)", i+1, n, a, maxTokenClients)
		}
	}
	if wait, _, _ := g.check("stdio", "stdio", t0.Add(time.Second), wrong); wait <= 0 {
		t.Fatal("the locked-out client was forgotten to make room for clients that are not locked out")
	}
	// A minute later every failure has left the window: the next one makes room by dropping them.
	g.check("http", "late", t0.Add(2*tokenWindow), wrong)
	if n := len(g.clients.byKey); n != 1 {
		t.Fatalf("%d clients held after the window passed, want 1", n)
	}
}
