package protocol

import (
	"context"
	"fmt"
	"time"
)

// KeepaliveRequest is the SSH global request OpenSSH probes a peer with. Any reply, even a
// refusal, proves that the peer is alive.
const KeepaliveRequest = "keepalive@openssh.com"

// MaxMissedKeepalives intervals in a row without an answer mark a peer dead.
const MaxMissedKeepalives = 3

// Requester sends SSH global requests; ssh.Conn (client or server side) is one.
type Requester interface {
	SendRequest(name string, wantReply bool, payload []byte) (bool, []byte, error)
}

// Prober probes an SSH peer with KeepaliveRequest every interval and tells when none was
// answered for MaxMissedKeepalives intervals. The silence is measured from the last answer,
// so a dead link is noticed within three intervals of its last sign of life. SendRequest has
// no timeout: at most one probe is outstanding, and closing the connection ends it.
//
// A Prober lives in its owner's select loop, which receives from C and Replies and passes
// what it got to Tick and Answered; Run is that loop for an owner with nothing else to wait
// for. Only the owner's goroutine may call its methods.
type Prober struct {
	conn      Requester
	interval  time.Duration
	spawn     func(func())
	timer     *time.Timer // nil when probing is disabled
	replies   chan error  // one slot: a probe never blocks, even once the owner is gone
	pending   bool        // a probe is outstanding
	lastAlive time.Time   // the last answer, or the start
	nextProbe time.Time
}

// NewProber returns a Prober of conn that probes every interval. spawn runs each probe in a
// goroutine (a sync.WaitGroup's Go, so that the owner can wait for it once the connection is
// closed). An interval of zero or less disables probing: C never fires.
func NewProber(conn Requester, interval time.Duration, spawn func(func())) *Prober {
	p := &Prober{conn: conn, interval: interval, spawn: spawn, replies: make(chan error, 1)}
	if interval > 0 {
		now := time.Now()
		p.lastAlive, p.nextProbe = now, now.Add(interval)
		p.timer = time.NewTimer(interval)
	}
	return p
}

// C fires when Tick is due; it is nil (never ready) when probing is disabled.
func (p *Prober) C() <-chan time.Time {
	if p.timer == nil {
		return nil
	}
	return p.timer.C
}

// Replies delivers the outcome of each probe, for Answered.
func (p *Prober) Replies() <-chan error { return p.replies }

// Tick is what to do when C fires: it sends a probe when one is due and none is outstanding,
// and returns an error once the peer was silent for MaxMissedKeepalives intervals.
func (p *Prober) Tick() error {
	now := time.Now()
	deadline := p.lastAlive.Add(MaxMissedKeepalives * p.interval)
	if !now.Before(deadline) {
		return fmt.Errorf("keepalive: no answer for %d intervals in a row (%v)", MaxMissedKeepalives, MaxMissedKeepalives*p.interval)
	}
	if !now.Before(p.nextProbe) {
		p.send()
		for !now.Before(p.nextProbe) {
			p.nextProbe = p.nextProbe.Add(p.interval)
		}
	}
	wake := p.nextProbe
	if deadline.Before(wake) {
		wake = deadline
	}
	p.timer.Reset(wake.Sub(now))
	return nil
}

// Answered takes what Replies delivered. A reply, whatever it said, records the peer as
// alive (nil); a failed probe (the connection is closing) returns its error, wrapped.
func (p *Prober) Answered(err error) error {
	p.pending = false
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	p.lastAlive = time.Now()
	return nil
}

// Run probes until ctx ends (nil) or the peer is dead or gone (the error), then stops.
func (p *Prober) Run(ctx context.Context) error {
	defer p.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-p.C():
			err = p.Tick()
		case r := <-p.Replies():
			err = p.Answered(r)
		}
		if err != nil {
			return err
		}
	}
}

// Stop releases the timer. An outstanding probe ends when the connection closes.
func (p *Prober) Stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}

// send starts a probe unless one is outstanding.
func (p *Prober) send() {
	if p.pending {
		return
	}
	p.pending = true
	conn, replies := p.conn, p.replies
	p.spawn(func() {
		_, _, err := conn.SendRequest(KeepaliveRequest, true, nil)
		replies <- err
	})
}
