package tools

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
)

// Bounds of the provisioning-token failure limiter. A client is one MCP session of one actor:
// every client using MCP_HTTP_TOKEN is the actor "http", so keying on the actor alone would let
// one client's typos lock out all the others. Session IDs are the client's to choose (a legacy
// HTTP client may send any well-formed Mcp-Session-Id; a 2026-07-28 request has none), so the
// actor as a whole is bounded too: fresh sessions buy no more than maxActorTokenFailures
// guesses a minute.
const (
	maxTokenFailures      = 5           // wrong tokens per client (actor and session) within tokenWindow before refusing
	maxActorTokenFailures = 20          // wrong tokens per actor, all its sessions together, within tokenWindow
	tokenWindow           = time.Minute // how long failures count
	maxTokenClients       = 1024        // clients (and actors) tracked; beyond, stale ones are forgotten, else one not locked out
)

// tokenLockoutNote ends the description of every tool that takes the provisioning token.
const tokenLockoutNote = " Do not guess the token: after 5 wrong tokens within a minute, this MCP session has every token refused, the right one too, " +
	"until that minute has passed (after 20 from all sessions of one HTTP client together, all of them are)."

// tokenOK compares in constant time; hashing first hides the token's length too.
func tokenOK(given, want string) bool {
	g, w := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// tokenGuard refuses a client that gave too many wrong provisioning tokens, at once and
// without comparing anything, until its window passes: per client (actor and MCP session) after
// maxTokenFailures, and per actor after maxActorTokenFailures. Memory is bounded: at most
// maxTokenClients entries in each map, each holding at most its limit of timestamps.
type tokenGuard struct {
	mu      sync.Mutex
	clients *failures // by clientKey(actor, session)
	actors  *failures // by actor
}

func newTokenGuard() *tokenGuard {
	return &tokenGuard{clients: newFailures(maxTokenFailures), actors: newFailures(maxActorTokenFailures)}
}

// clientKey names one client: the actor and its MCP session.
func clientKey(actor, session string) string { return actor + "\x00" + session }

// check compares the token (ok) for the client (actor, session) unless it is locked out, and
// records a wrong one. Check and record are one step under the lock, so that concurrent calls
// of one session get no more guesses than sequential ones. wait > 0 means refused uncompared.
func (g *tokenGuard) check(actor, session string, now time.Time, ok func() bool) (wait time.Duration, wholeActor, right bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if wait, wholeActor = g.blockedLocked(actor, session, now); wait > 0 {
		return wait, wholeActor, false
	}
	if ok() {
		return 0, false, true
	}
	g.failedLocked(actor, session, now)
	return 0, false, false
}

// blockedLocked reports how long the client (actor, session) must still wait, or 0, and
// whether it is its actor as a whole that is locked out. Callers hold g.mu.
func (g *tokenGuard) blockedLocked(actor, session string, now time.Time) (time.Duration, bool) {
	a := g.actors.wait(actor, now)
	c := g.clients.wait(clientKey(actor, session), now)
	return max(a, c), a > 0 && a >= c
}

// failedLocked records a wrong token from the client (actor, session). Callers hold g.mu.
func (g *tokenGuard) failedLocked(actor, session string, now time.Time) {
	g.clients.add(clientKey(actor, session), now)
	g.actors.add(actor, now)
}

// failures keeps, per key, the times of the latest wrong tokens within tokenWindow. Callers
// hold tokenGuard.mu.
type failures struct {
	limit int
	byKey map[string][]time.Time
}

func newFailures(limit int) *failures {
	return &failures{limit: limit, byKey: map[string][]time.Time{}}
}

// wait is how long key stays refused: until the oldest of its last limit failures leaves the
// window; 0 when it has fewer.
func (f *failures) wait(key string, now time.Time) time.Duration {
	t := f.recent(key, now)
	if len(t) < f.limit {
		return 0
	}
	return t[0].Add(tokenWindow).Sub(now)
}

// add records a failure of key at now, making room first when maxTokenClients keys are held.
func (f *failures) add(key string, now time.Time) {
	if _, ok := f.byKey[key]; !ok && len(f.byKey) >= maxTokenClients {
		f.evict(now)
	}
	t := append(f.recent(key, now), now)
	if len(t) > f.limit {
		t = t[len(t)-f.limit:]
	}
	f.byKey[key] = t
}

// evict forgets the keys whose failures have all left the window; when none has, it forgets one
// key: one not locked out if there is any, the one whose latest failure is oldest among them.
func (f *failures) evict(now time.Time) {
	victim, vLocked, vLast := "", false, time.Time{}
	for k := range f.byKey {
		t := f.recent(k, now)
		if len(t) == 0 {
			continue
		}
		locked, last := len(t) >= f.limit, t[len(t)-1]
		if victim == "" || !locked && vLocked || locked == vLocked && last.Before(vLast) {
			victim, vLocked, vLast = k, locked, last
		}
	}
	if len(f.byKey) >= maxTokenClients {
		delete(f.byKey, victim)
	}
}

// recent drops key's failures older than the window and returns the rest.
func (f *failures) recent(key string, now time.Time) []time.Time {
	t := f.byKey[key]
	for len(t) > 0 && now.Sub(t[0]) >= tokenWindow {
		t = t[1:]
	}
	if len(t) == 0 {
		delete(f.byKey, key)
		return nil
	}
	f.byKey[key] = t
	return t
}

// sessionID is the MCP session calling through ctx ("" when there is none, e.g. a 2026-07-28
// HTTP request).
func sessionID(ctx context.Context) string {
	if s := server.ClientSessionFromContext(ctx); s != nil {
		return s.SessionID()
	}
	return ""
}

// checkToken guards a key-changing tool: provisioning enabled, client not locked out, token
// right. It returns a one-line message for the model when the call must stop. Wrong tokens
// are audited; the token itself never is.
func (h *handlers) checkToken(ctx context.Context, tool, token string) (string, bool) {
	actor := h.actor(ctx)
	if h.cfg.ProvisionToken == "" {
		return msgProvisioningDisabled, false
	}
	wait, wholeActor, right := h.guard.check(actor, sessionID(ctx), time.Now(), func() bool { return tokenOK(token, h.cfg.ProvisionToken) })
	if wait > 0 {
		who := "this MCP session"
		if wholeActor {
			who = "all sessions of client " + actor
		}
		h.cfg.Audit.Write(audit.Event{Event: "outcome", RequestID: newRequestID(), Actor: actor, Tool: tool,
			Outcome: "refused", Error: "too many wrong provisioning tokens"})
		return fmt.Sprintf("too many wrong provisioning tokens from %s: every token, even the right one, is refused for %d s more; then call again with the token the operator gives you (PROVISION_TOKEN)",
			who, int(wait.Seconds())+1), false
	}
	if !right {
		h.cfg.Audit.Write(audit.Event{Event: "outcome", RequestID: newRequestID(), Actor: actor, Tool: tool,
			Outcome: "refused", Error: "wrong provisioning token"})
		return "wrong provisioning token: ask the operator for PROVISION_TOKEN, or to run `mcp-ssh-gateway keys add` on the gateway host", false
	}
	return "", true
}
