package tunnel

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
)

// maxMissed keepalive intervals without any answer mark the connection dead.
const maxMissed = 3

// keepalive sends keepalive@openssh.com every interval and returns an error once no answer
// arrived for maxMissed intervals in a row (measured from the last answer, so a dead link is
// noticed within three intervals of its last sign of life); nil when ctx ends. Any reply, true
// or false, proves liveness. SendRequest has no timeout, so at most one runs at a time and the
// caller closes the connection to unblock it.
func keepalive(ctx context.Context, conn ssh.Conn, interval time.Duration) error {
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	probe := time.NewTicker(interval)
	defer probe.Stop()
	dead := time.NewTimer(maxMissed * interval)
	defer dead.Stop()
	var pending chan error // nil when no probe is outstanding
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-dead.C:
			return fmt.Errorf("gateway missed %d keepalives in a row: no answer for %v", maxMissed, maxMissed*interval)
		case err := <-pending:
			pending = nil
			if err != nil {
				return fmt.Errorf("keepalive: %w", err)
			}
			dead.Reset(maxMissed * interval)
		case <-probe.C:
			if pending == nil {
				pending = make(chan error, 1)
				ch := pending
				go func() {
					_, _, err := conn.SendRequest("keepalive@openssh.com", true, nil)
					ch <- err
				}()
			}
		}
	}
}
