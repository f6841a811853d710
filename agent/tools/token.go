package tools

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"sync"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
)

// Bounds of the provisioning-token failure limiter.
const (
	maxTokenFailures = 5           // wrong tokens per client within tokenWindow before refusing
	tokenWindow      = time.Minute // how long failures count
	maxTokenClients  = 1024        // clients tracked; beyond, the oldest are forgotten
)

// tokenOK compares in constant time; hashing first hides the token's length too.
func tokenOK(given, want string) bool {
	g, w := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}

// tokenGuard refuses a client that gave too many wrong provisioning tokens, at once and
// without comparing anything, until its window passes. Memory is bounded.
type tokenGuard struct {
	mu    sync.Mutex
	fails map[string][]time.Time
}

func newTokenGuard() *tokenGuard { return &tokenGuard{fails: map[string][]time.Time{}} }

// blocked reports how long client must still wait, or 0.
func (g *tokenGuard) blocked(client string, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.recent(client, now)
	if len(f) < maxTokenFailures {
		return 0
	}
	return f[0].Add(tokenWindow).Sub(now)
}

// failed records a wrong token from client.
func (g *tokenGuard) failed(client string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.fails[client]; !ok && len(g.fails) >= maxTokenClients {
		for c := range g.fails {
			if len(g.recent(c, now)) == 0 {
				delete(g.fails, c)
			}
		}
		if len(g.fails) >= maxTokenClients {
			clear(g.fails)
		}
	}
	f := append(g.recent(client, now), now)
	if len(f) > maxTokenFailures {
		f = f[len(f)-maxTokenFailures:]
	}
	g.fails[client] = f
}

// recent drops failures older than the window; callers hold mu.
func (g *tokenGuard) recent(client string, now time.Time) []time.Time {
	f := g.fails[client]
	for len(f) > 0 && now.Sub(f[0]) >= tokenWindow {
		f = f[1:]
	}
	if len(f) == 0 {
		delete(g.fails, client)
		return nil
	}
	g.fails[client] = f
	return f
}

// checkToken guards a key-changing tool: provisioning enabled, client not locked out, token
// right. It returns a one-line message for the model when the call must stop. Wrong tokens
// are audited; the token itself never is.
func (h *handlers) checkToken(ctx context.Context, tool, token string) (string, bool) {
	actor := h.actor(ctx)
	if h.cfg.ProvisionToken == "" {
		return msgProvisioningDisabled, false
	}
	now := time.Now()
	if wait := h.guard.blocked(actor, now); wait > 0 {
		h.cfg.Audit.Write(audit.Event{Event: "outcome", RequestID: newRequestID(), Actor: actor, Tool: tool,
			Outcome: "refused", Error: "too many wrong provisioning tokens"})
		return fmt.Sprintf("too many wrong provisioning tokens from this client: wait %d s, then ask the operator for PROVISION_TOKEN", int(wait.Seconds())+1), false
	}
	if !tokenOK(token, h.cfg.ProvisionToken) {
		h.guard.failed(actor, now)
		h.cfg.Audit.Write(audit.Event{Event: "outcome", RequestID: newRequestID(), Actor: actor, Tool: tool,
			Outcome: "refused", Error: "wrong provisioning token"})
		return "wrong provisioning token: ask the operator for PROVISION_TOKEN, or to run `mcp-ssh-gateway keys` on the gateway host", false
	}
	return "", true
}
