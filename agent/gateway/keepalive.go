package gateway

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"
)

// keepaliveRequest is the global request OpenSSH uses; any reply, even false, proves liveness.
const keepaliveRequest = "keepalive@openssh.com"

// maxMissedKeepalives intervals in a row without an answer drop the connection.
const maxMissedKeepalives = 3

// supervise is the rest of an edge connection's life, in the connection's own goroutine: it
// answers the edge's requests (all refused), refuses further channels, and probes the edge
// every KeepaliveInterval, closing the tunnel once no probe was answered for three intervals
// (measured from the last answer, so a dead link is dropped within three intervals of its
// last sign of life). At most one probe is outstanding: SendRequest has no timeout and returns
// only when the reply arrives or the connection closes. It also pulls the edge's inventory on
// the schedule of inventoryWait, one pull at a time, the first one after any connect storm
// (deferFirstPull). It returns when the tunnel is down or must be closed.
func (g *Gateway) supervise(ctx context.Context, c *sshConn, e *edge, log *slog.Logger) {
	interval := g.cfg.KeepaliveInterval
	deadline := maxMissedKeepalives * interval
	probe := time.NewTicker(interval)
	defer probe.Stop()
	dead := time.NewTimer(deadline)
	defer dead.Stop()
	replies := make(chan bool, 1)
	pending := false
	invTimer := time.NewTimer(g.inventoryWait(true))
	defer invTimer.Stop()
	firstPull := true
	invDone := make(chan struct{}, 1) // buffered: a pull never blocks once supervise returned
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
		case ok := <-replies:
			pending = false
			if ok {
				e.touch()
				dead.Reset(deadline)
			}
		case <-probe.C:
			if !pending {
				pending = true
				g.wg.Go(func() {
					_, _, err := e.conn.SendRequest(keepaliveRequest, true, nil)
					replies <- err == nil
				})
			}
		case <-invTimer.C:
			if firstPull && g.deferFirstPull(e.since) {
				// Look again in 1–2 s: few wake-ups while 10,000 edges wait, and their
				// pulls spread over a second or more once the storm is over.
				invTimer.Reset(time.Second + g.inventoryWait(true))
				continue
			}
			firstPull = false
			g.wg.Go(func() {
				if _, err := g.pullInventory(ctx, e.fp, false); err != nil {
					log.Debug("inventory pull failed", "err", err)
				}
				invDone <- struct{}{}
			})
		case <-invDone:
			if wait := g.inventoryWait(false); wait > 0 {
				invTimer.Reset(wait)
			}
		case <-dead.C:
			log.Warn("edge dropped: keepalives unanswered", "missed", maxMissedKeepalives, "interval", interval)
			return
		}
	}
}
