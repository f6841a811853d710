package gateway

import (
	"context"
	"log/slog"
	"time"
)

// keepaliveRequest is the global request OpenSSH uses; any reply, even false, proves liveness.
const keepaliveRequest = "keepalive@openssh.com"

// maxMissedKeepalives in a row drop the connection.
const maxMissedKeepalives = 3

// keepalive probes the edge every KeepaliveInterval and closes its tunnel after three probes
// in a row go unanswered. At most one probe is outstanding: SendRequest has no timeout and
// returns only when the reply arrives or the connection closes.
func (g *Gateway) keepalive(ctx context.Context, e *edge, log *slog.Logger) {
	interval := g.cfg.KeepaliveInterval
	replies := make(chan bool, 1)
	pending, missed := false, 0
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.gone():
			return
		case ok := <-replies:
			pending = false
			if ok {
				missed = 0
				e.touch()
			}
		case <-t.C:
			if pending {
				missed++
				if missed >= maxMissedKeepalives {
					log.Warn("edge dropped: keepalives unanswered", "missed", missed, "interval", interval)
					e.close()
					return
				}
			} else {
				pending = true
				g.wg.Go(func() {
					_, _, err := e.conn.SendRequest(keepaliveRequest, true, nil)
					replies <- err == nil
				})
			}
			t.Reset(interval)
		}
	}
}
