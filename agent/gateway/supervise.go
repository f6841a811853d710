package gateway

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// supervise is the rest of an edge connection's life, in the connection's own goroutine: it
// answers the edge's requests (all refused), refuses further channels, probes the edge every
// KeepaliveInterval (protocol.Prober: the tunnel is closed once no probe was answered for
// three intervals) and pulls the edge's inventory (pullSchedule). It returns when the tunnel
// is down or must be closed.
func (g *Gateway) supervise(ctx context.Context, c *sshConn, e *edge, log *slog.Logger) {
	alive := protocol.NewProber(e.conn, g.cfg.KeepaliveInterval, g.wg.Go)
	defer alive.Stop()
	pulls := g.newPullSchedule(ctx, e, log)
	defer pulls.timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.gone():
			return
		case r, ok := <-c.reqs:
			if !serveRequest(r, ok) {
				c.reqs = nil
				return // the connection ended
			}
		case r, ok := <-c.chReqs:
			if !serveRequest(r, ok) {
				c.chReqs = nil
				return
			}
		case nch, ok := <-c.chans:
			if !ok {
				c.chans = nil
				return
			}
			nch.Reject(ssh.Prohibited, "only one mcp tunnel per connection")
		case <-alive.C():
			if err := alive.Tick(); err != nil {
				log.Warn("edge dropped: keepalives unanswered", "missed", protocol.MaxMissedKeepalives,
					"interval", g.cfg.KeepaliveInterval, "err", err)
				return
			}
		case err := <-alive.Replies():
			if alive.Answered(err) == nil {
				e.touch()
			}
		case <-pulls.timer.C:
			pulls.due()
		case <-pulls.done:
			pulls.finished()
		}
	}
}

// pullSchedule is when supervise pulls an edge's inventory: the first pull within a second of
// connect, put off while a connect storm lasts (deferFirstPull), then every inventoryWait,
// one pull at a time. It costs no goroutine between pulls.
type pullSchedule struct {
	g     *Gateway
	ctx   context.Context
	e     *edge
	log   *slog.Logger
	timer *time.Timer
	first bool          // the first pull is still to come
	done  chan struct{} // one slot: a pull never blocks once supervise returned
}

func (g *Gateway) newPullSchedule(ctx context.Context, e *edge, log *slog.Logger) *pullSchedule {
	return &pullSchedule{g: g, ctx: ctx, e: e, log: log, timer: time.NewTimer(g.inventoryWait(true)),
		first: true, done: make(chan struct{}, 1)}
}

// due starts the pull the timer fired for, unless a connect storm puts the first one off.
func (s *pullSchedule) due() {
	if s.first && s.g.deferFirstPull(s.e.since) {
		// Look again in 1–2 s: few wake-ups while thousands of edges wait, and their pulls
		// spread over a second or more once the storm is over.
		s.timer.Reset(time.Second + s.g.inventoryWait(true))
		return
	}
	s.first = false
	s.g.wg.Go(func() {
		if _, err := s.g.pullInventory(s.ctx, s.e.fp, false); err != nil {
			s.log.Debug("inventory pull failed", "err", err)
		}
		s.done <- struct{}{}
	})
}

// finished schedules the next pull once one has ended (none for a negative
// InventoryInterval).
func (s *pullSchedule) finished() {
	if wait := s.g.inventoryWait(false); wait > 0 {
		s.timer.Reset(wait)
	}
}
