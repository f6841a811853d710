package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
)

// Bounds of the name binder.
const (
	// bindDelay gathers the bindings of a reconnect storm into few rewrites of authorized_keys.
	bindDelay = 100 * time.Millisecond
	// maxPendingBinds bounds the bindings waiting; beyond it new ones are dropped (logged):
	// the edge keeps its name while connected and is bound on a later connection.
	maxPendingBinds = 100_000
	// bindRetry: after a failed rewrite, how long bindings are not attempted.
	bindRetry = time.Minute
)

// nameBinder binds the name an edge without a bound name asked for, and got, to its key in
// authorized_keys (keyStore.bindNames): from then on the name is the key's, as if it had
// been registered with it, and an edge of another key that asks for it while this one is
// offline gets <name>-<fingerprint prefix> (SPEC §5). Without that, any authorized key could
// take a name while its edge is offline, keep it, and receive the calls and files meant for
// it. Bindings are applied by one goroutine (run), a batch per rewrite of the file.
type nameBinder struct {
	g       *Gateway
	mu      sync.Mutex
	pending map[string]string // fingerprint → name
	kick    chan struct{}     // one token: pending is not empty
	// failedUntil: after a failed rewrite (a read-only authorized_keys), bindings are
	// dropped until then, so that every reconnect does not retry and log. Used by run only.
	failedUntil time.Time
}

func newNameBinder(g *Gateway) *nameBinder {
	return &nameBinder{g: g, pending: map[string]string{}, kick: make(chan struct{}, 1)}
}

// add asks for name to be bound to fp.
func (b *nameBinder) add(fp, name string) {
	b.mu.Lock()
	full := len(b.pending) >= maxPendingBinds
	if !full {
		b.pending[fp] = name
	}
	b.mu.Unlock()
	if full {
		b.g.log.Warn("name binding dropped: too many waiting", "fingerprint", fp, "name", name)
		return
	}
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// run applies the bindings until ctx ends, then those still waiting.
func (b *nameBinder) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			b.flush()
			return
		case <-b.kick:
		}
		t := time.NewTimer(bindDelay)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		b.flush()
	}
}

// flush binds what is waiting, and logs and audits each binding.
func (b *nameBinder) flush() {
	b.mu.Lock()
	want := b.pending
	b.pending = map[string]string{}
	b.mu.Unlock()
	if len(want) == 0 {
		return
	}
	if time.Now().Before(b.failedUntil) {
		return
	}
	bound, err := b.g.keys.bindNames(want)
	if err != nil {
		b.failedUntil = time.Now().Add(bindRetry)
		b.g.log.Warn("cannot bind edge names to their keys in authorized_keys: another key may take a name while its edge is offline; retrying on later connections in "+bindRetry.String(),
			"names", len(want), "err", err)
		return
	}
	for _, fp := range bound {
		b.g.log.Info("name bound to the edge's key on its first connection", slog.String("name", want[fp]), slog.String("fingerprint", fp))
		b.g.cfg.Audit.Write(audit.Event{Event: "name_bound", Edge: want[fp], Fingerprint: fp, Outcome: "ok"})
	}
}
