package tunnel

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/crypto/ssh"
)

// maxMissed keepalives in a row without an answer mark the connection dead.
const maxMissed = 3

// keepalive sends keepalive@openssh.com every interval and returns an error once maxMissed in
// a row went unanswered within an interval; nil when ctx ends. Any reply, true or false,
// proves liveness. SendRequest has no timeout, so at most one runs at a time and the caller
// closes the connection to unblock it.
func keepalive(ctx context.Context, conn ssh.Conn, interval time.Duration) error {
	if interval <= 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var pending chan error
	missed := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if pending == nil {
			pending = make(chan error, 1)
			ch := pending
			go func() {
				_, _, err := conn.SendRequest("keepalive@openssh.com", true, nil)
				ch <- err
			}()
		}
		select {
		case err := <-pending:
			pending = nil
			if err != nil {
				return fmt.Errorf("keepalive: %w", err)
			}
			missed = 0
			continue
		case <-time.After(interval / 2):
		case <-ctx.Done():
			return nil
		}
		missed++
		if missed >= maxMissed {
			return fmt.Errorf("gateway missed %d keepalives in a row (every %v)", missed, interval)
		}
	}
}
