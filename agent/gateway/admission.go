package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
)

// admission takes one accepted edge connection through the gateway's gate. handleConn calls
// its phases in this order, each reporting whether the connection may go on:
//
//  1. accept: a connection from a penalized source address is closed before anything else;
//     then it is counted as unauthenticated (startupGate), or dropped: beyond
//     PerSourceMaxStartups from its source (an IPv4 address, an IPv6 /64), or at random
//     once many are (MaxStartups start:rate:full).
//  2. awaitVersion: the peer's SSH version line must arrive within KexTimeout of the
//     accept, before the connection may wait for a slot: a silent socket never holds one.
//  3. waitSlot: it waits up to AdmissionWait for one of MaxHandshakes handshake slots.
//  4. afterSlot: the source is checked again, as its penalty may have started meanwhile.
//  5. duringHandshake: the key exchange must end within KexTimeout of taking the slot
//     (kexDone, at the first authentication request), the whole handshake within
//     HandshakeTimeout; the connection the SSH handshake reads from refuses what the peer
//     sends once its source is penalized. endHandshake ends that, gives the slot back and
//     uncounts the connection as unauthenticated.
//  6. afterAuth: an authenticated key under penalty is held, then let on or refused.
//
// The outcome is judged by authFailure (an unknown key whose signature verified),
// judgeHandshake, judgeTunnel, judgeStream and judgeSession: they count it in the handshake
// metric, record the offences that draw penalties (penaltyBox) and audit what the operator
// must see. Every kind of event has its own bounded de-duplication, so that a flood of one
// kind cannot make another repeat: auth failures (Gateway.refusals), refusals and penalties
// (penaltyBox.refusedEvents, penaltyBox.penalizedEvents), pending keys (Gateway.pendingKey).
type admission struct {
	g          *Gateway
	nc         net.Conn
	src        netip.Prefix   // what the source is counted as (sourcePrefix)
	accepted   time.Time      // when the connection was accepted
	version    []byte         // what awaitVersion read: the peer's version line, and more
	hc         *handshakeConn // set by duringHandshake
	slot       bool           // a handshake slot is held
	startup    bool           // counted in the startup gate (unauthenticated)
	authBy     time.Time      // the handshake's deadline once the key exchange is done
	unknownKey atomic.Bool    // an unauthorized key was offered (for the handshake metric)
	unknownFP  atomic.Value   // string: an unknown key whose signature verified, refused if the handshake fails
}

func (g *Gateway) newAdmission(nc net.Conn) *admission {
	return &admission{g: g, nc: nc, src: sourcePrefix(nc.RemoteAddr()), accepted: time.Now()}
}

// accept reports whether the connection may go on to awaitVersion: not while its source
// address is penalized, nor when the startup gate drops it (counted as HandshakeBusy).
func (a *admission) accept() bool {
	if a.sourcePenalized() {
		return false
	}
	if why := a.g.startups.enter(a.src); why != dropNone {
		a.dropped(why)
		return false
	}
	a.startup = true
	return true
}

// dropped counts and logs a connection dropped before its handshake: the log line at most
// once per reason every dropLogWindow, so that a flood does not flood stderr.
func (a *admission) dropped(why string) {
	a.g.cfg.Metrics.Handshake(HandshakeBusy)
	if a.g.dropLog.allow(why, time.Now()) {
		total, fromSrc := a.g.startups.counts(a.src)
		a.g.log.Warn("edge connection dropped before its handshake (logged once per reason every "+dropLogWindow.String()+")",
			"why", why, "remote_addr", a.nc.RemoteAddr().String(), "unauthenticated", total, "from_source", fromSrc)
	}
}

// maxVersionRead bounds what awaitVersion reads while looking for the end of the peer's
// version line (which SSH bounds to 255 bytes).
const maxVersionRead = 512

// awaitVersion sends the gateway's SSH version line, as an SSH server does at once, then
// waits, until KexTimeout after the accept, for the end of the first line the peer sends
// (its version line). What it read is handed to the handshake, and the library's own write
// of the version line is left out (duringHandshake). A peer that sends nothing is closed
// then, without ever having held a handshake slot (counted as HandshakeTimeout); a stopping
// gateway ends the wait.
func (a *admission) awaitVersion(ctx context.Context) bool {
	a.nc.SetDeadline(a.accepted.Add(a.g.cfg.KexTimeout))
	stop := context.AfterFunc(ctx, func() { a.nc.SetDeadline(time.Now()) })
	defer stop()
	if _, err := a.nc.Write(a.g.versionLine()); err != nil {
		a.g.cfg.Metrics.Handshake(HandshakeProtocol)
		return false
	}
	buf := make([]byte, 0, maxVersionRead)
	for !bytes.ContainsRune(buf, '\n') && len(buf) < maxVersionRead {
		n, err := a.nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil {
			var ne net.Error
			switch {
			case ctx.Err() != nil:
			case errors.As(err, &ne) && ne.Timeout():
				a.g.cfg.Metrics.Handshake(HandshakeTimeout)
				a.g.log.Debug("edge connection closed: no SSH version line in time", "remote_addr", a.nc.RemoteAddr().String(),
					"timeout", a.g.cfg.KexTimeout)
			default:
				a.g.cfg.Metrics.Handshake(HandshakeProtocol)
			}
			return false
		}
	}
	a.version = buf
	a.nc.SetDeadline(time.Time{})
	return true
}

// waitSlot takes a handshake slot, waiting at most Config.AdmissionWait. It reports false,
// counting the connection as HandshakeBusy, when none came free in time or ctx ended.
func (a *admission) waitSlot(ctx context.Context) bool {
	select {
	case a.g.handshakes <- struct{}{}:
		a.slot = true
		return true
	default:
	}
	t := time.NewTimer(a.g.cfg.AdmissionWait)
	defer t.Stop()
	select {
	case a.g.handshakes <- struct{}{}:
		a.slot = true
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	a.dropped(fmt.Sprintf("no handshake slot free within %s (MaxHandshakes %d)", a.g.cfg.AdmissionWait, a.g.cfg.MaxHandshakes))
	return false
}

// afterSlot checks the source again once the slot is taken: a penalty may have started while
// the connection waited. A refused connection gives its slot back.
func (a *admission) afterSlot() bool {
	if a.sourcePenalized() {
		a.releaseSlot()
		return false
	}
	return true
}

// duringHandshake sets the handshake's deadline (KexTimeout for the key exchange, see
// kexDone) and returns the connection for the SSH handshake to read from (handshakeConn),
// which first hands over what awaitVersion read.
func (a *admission) duringHandshake() net.Conn {
	now := time.Now()
	a.authBy = now.Add(a.g.cfg.HandshakeTimeout)
	a.nc.SetDeadline(now.Add(min(a.g.cfg.KexTimeout, a.g.cfg.HandshakeTimeout)))
	a.hc = &handshakeConn{Conn: a.nc, penalties: a.g.penalties, pre: a.version, sent: a.g.versionLine()}
	return a.hc
}

// kexDone is called at the peer's first authentication request, once the key exchange is
// done: authentication has until HandshakeTimeout after the slot was taken.
func (a *admission) kexDone() { a.nc.SetDeadline(a.authBy) }

// endHandshake ends the handshake phase: reads are no longer refused (an established tunnel
// is never cut by a source penalty), the handshake slot is given back and the connection is
// no longer counted as unauthenticated.
func (a *admission) endHandshake() {
	if a.hc != nil {
		a.hc.done.Store(true)
	}
	a.release()
}

// release gives back what the connection holds: its handshake slot and its place in the
// startup gate. It may be called more than once.
func (a *admission) release() {
	a.releaseSlot()
	if a.startup {
		a.startup = false
		a.g.startups.leave(a.src)
	}
}

func (a *admission) releaseSlot() {
	if a.slot {
		a.slot = false
		<-a.g.handshakes
	}
}

// sourcePenalized reports whether the connection comes from a penalized address (counted as
// HandshakePenalized), which is then to be closed before the key exchange.
func (a *admission) sourcePenalized() bool {
	left := a.g.penalties.sourceLeft(a.nc.RemoteAddr(), time.Now())
	if left == 0 {
		return false
	}
	a.g.cfg.Metrics.Handshake(HandshakePenalized)
	a.g.log.Debug("edge connection closed: its source address is penalized", "remote_addr", a.nc.RemoteAddr().String(),
		"for_another", left.Round(time.Second))
	return true
}

// afterAuth holds an authenticated connection of a penalized key before its tunnel opens, for
// up to half the handshake timeout and without a handshake slot: an honest edge that drew a
// short penalty connects late rather than not at all, and an attacker's reconnect loop slows
// to one handshake per hold. Only one connection of a key is held at a time. It reports
// whether the connection may go on (after a hold, with a fresh handshake deadline for opening
// the tunnel); if not, the tunnel open, if already sent, is refused with the reason.
func (a *admission) afterAuth(ctx context.Context, c *sshConn, fp string, log *slog.Logger) bool {
	left := a.g.penalties.left(fp, time.Now())
	if left == 0 {
		return true
	}
	if a.g.penalties.hold(fp) { // else another connection of this key is held already
		left = a.hold(ctx, fp, left)
		if ctx.Err() != nil {
			return false // the gateway is stopping
		}
		if left == 0 {
			a.nc.SetDeadline(time.Now().Add(a.g.cfg.HandshakeTimeout))
			return true
		}
	}
	a.refusePenalized(c, left, log)
	return false
}

// hold waits out fp's penalty, for at most half the handshake timeout, and returns what is
// left of it.
func (a *admission) hold(ctx context.Context, fp string, left time.Duration) time.Duration {
	defer a.g.penalties.unhold(fp)
	t := time.NewTimer(min(left, a.g.cfg.HandshakeTimeout/2))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return a.g.penalties.left(fp, time.Now())
}

// refusePenalized counts a penalized key's connection and refuses its tunnel open, if sent.
func (a *admission) refusePenalized(c *sshConn, left time.Duration, log *slog.Logger) {
	a.g.cfg.Metrics.Handshake(HandshakePenalized)
	msg := fmt.Sprintf("key penalized for repeated misbehaviour (protocol violations or reconnects in a row) for another %s",
		left.Truncate(time.Second)+time.Second)
	select {
	case nch, ok := <-c.chans:
		if ok {
			nch.Reject(ssh.Prohibited, msg)
		} else {
			c.chans = nil
		}
	default:
	}
	log.Debug("edge refused: penalized", "left", left)
}

// authFailure notes an unknown key whose signature verified. It is judged with the
// handshake: refused (logged and audited as the refusal log lets it: the first of each source
// per interval, the rest summed up) only if the handshake fails, since the same connection may
// still enrol the key with a secret.
func (a *admission) authFailure(fp string) {
	a.unknownKey.Store(true)
	a.unknownFP.Store(fp)
}

// refuseUnknownKey refuses the unknown key the connection offered, if any, unless it is the
// key that authenticated in the end (enrolled with a secret in the same connection).
func (a *admission) refuseUnknownKey(authenticated string) {
	fp, _ := a.unknownFP.Load().(string)
	if fp == "" || fp == authenticated {
		return
	}
	addr := a.nc.RemoteAddr()
	a.g.refuseUnauthenticated(addr, audit.Event{Event: "auth_failure", Fingerprint: fp, RemoteAddr: addr.String(),
		Outcome: "refused", Error: "key not in authorized_keys"}, "edge refused: unknown key")
}

// judgeHandshake counts a failed SSH handshake by its reason, and refuses the unknown key it
// offered, if any.
func (a *admission) judgeHandshake(err error) {
	a.refuseUnknownKey("")
	outcome := handshakeOutcome(err, a.unknownKey.Load())
	if a.hc != nil && a.hc.penalized.Load() {
		outcome = HandshakePenalized
	}
	a.g.log.Debug("ssh handshake failed", "remote_addr", a.nc.RemoteAddr().String(), "err", err)
	a.g.cfg.Metrics.Handshake(outcome)
}

// judgeTunnel counts how opening the tunnel ended (outcome from sshConn.awaitTunnel) and
// reports whether the tunnel is open. A refused tunnel is a protocol violation; an
// authenticated connection that opened none counts as a reconnect.
func (a *admission) judgeTunnel(fp, outcome string, tunnelErr error, log *slog.Logger) bool {
	if outcome != "" {
		a.g.cfg.Metrics.Handshake(outcome)
	}
	switch outcome {
	case HandshakeBadTunnel:
		a.refused(fp, "tunnel refused: "+tunnelErr.Error())
		a.offend(fp, offenceViolation, log)
	case HandshakeProtocol, HandshakeTimeout:
		a.offend(fp, offenceShort, log)
	}
	return outcome == HandshakeOK
}

// judgeStream judges a stream the edge opened: a protocol violation (only the gateway opens
// streams).
func (a *admission) judgeStream(fp string, log *slog.Logger) {
	a.refused(fp, "edge opened a stream (protocol violation)")
	a.offend(fp, offenceViolation, log)
}

// judgeSession judges a tunnel that ended after lasted: one shorter than shortSession counts
// as a reconnect, a longer one ends the key's streak of reconnects. A gateway that is
// stopping is no edge's doing.
func (a *admission) judgeSession(fp string, lasted time.Duration, stopping bool, log *slog.Logger) {
	switch {
	case stopping:
	case lasted < shortSession:
		a.offend(fp, offenceShort, log)
	default:
		a.g.penalties.lasted(fp)
	}
}

// offend records an offence of an authorized key and, when it draws a penalty, logs and
// audits it (at most once per key a minute), and the source penalty it may start.
func (a *admission) offend(fp string, o offence, log *slog.Logger) {
	addr := a.nc.RemoteAddr()
	d, sourceStarted := a.g.penalties.offend(fp, addr, o, time.Now())
	if sourceStarted {
		a.g.log.Warn("source address penalized: its new connections are closed before the key exchange until the penalty ends",
			"remote_addr", addr.String(), "keys_penalized", sourceKeys, "penalty", sourcePenalty)
		a.g.cfg.Audit.Write(audit.Event{Event: "source_penalized", RemoteAddr: addr.String(), Outcome: "penalized",
			DurationMs: audit.Ptr(sourcePenalty.Milliseconds()), Error: fmt.Sprintf("%d keys penalized from this address", sourceKeys)})
	}
	if d == 0 || !a.g.penalties.penalizedEvents.allow(fp, time.Now()) {
		return
	}
	why := "protocol violation"
	if o == offenceShort {
		why = "reconnects in a row"
	}
	log.Warn("edge penalized: until the penalty ends, its connections are held and then refused", "why", why,
		"penalty", d.Round(time.Millisecond))
	a.g.cfg.Audit.Write(audit.Event{Event: "edge_penalized", Fingerprint: fp, RemoteAddr: addr.String(), Outcome: "penalized",
		DurationMs: audit.Ptr(d.Milliseconds()), Error: why})
}

// refused audits a refusal of an authenticated edge (bad hello, protocol violation), at most
// once per key, source address and reason a minute, so that a flood cannot grow the log fast.
func (a *admission) refused(fp, reason string) {
	reason = trunc(reason, 200)
	addr := a.nc.RemoteAddr().String()
	if !a.g.penalties.refusedEvents.allow(fp+" "+hostOf(addr)+" "+reason, time.Now()) {
		return
	}
	a.g.cfg.Audit.Write(audit.Event{Event: "edge_refused", Fingerprint: fp, RemoteAddr: addr, Outcome: "refused", Error: reason})
}

// hostOf is the host part of a host:port address (the address itself when it has no port).
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// errSourcePenalized ends a handshake whose source address was penalized while it ran.
var errSourcePenalized = errors.New("source address penalized during the handshake")

// handshakeConn is an accepted connection during its SSH handshake. A source penalty that
// starts while handshakes from the address are under way (a hundred devices connecting at
// once, the first of them misbehaving) ends those at their next packet from the peer, before
// the key exchange or authentication that packet would cost. Once done is set (the handshake
// is over) it only passes reads through: an established tunnel is never cut by a penalty.
type handshakeConn struct {
	net.Conn
	penalties *penaltyBox
	pre       []byte // read before the handshake (admission.awaitVersion), to be read first
	sent      []byte // the version line awaitVersion sent, which the library's first write repeats
	done      atomic.Bool
	penalized atomic.Bool // a read was refused
}

// errVersionWrite ends a handshake whose first write is not the version line already sent.
var errVersionWrite = errors.New("ssh handshake: the first write is not the version line already sent")

// Write writes to the connection, leaving out the library's write of the version line (sent
// already by awaitVersion). Should the library ever write it otherwise, the handshake fails
// rather than send it twice.
func (c *handshakeConn) Write(p []byte) (int, error) {
	if c.sent == nil {
		return c.Conn.Write(p)
	}
	if !bytes.HasPrefix(p, c.sent) {
		return 0, errVersionWrite
	}
	k := len(c.sent)
	c.sent = nil
	if k == len(p) {
		return k, nil
	}
	n, err := c.Conn.Write(p[k:])
	return k + n, err
}

// Read reads from the connection, refusing what it read while the peer's address is
// penalized and the handshake is not done.
func (c *handshakeConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 { // the library reads from one goroutine at a time
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if n > 0 && !c.done.Load() && c.penalties.sourceLeft(c.RemoteAddr(), time.Now()) > 0 {
		c.penalized.Store(true)
		return 0, errSourcePenalized
	}
	return n, err
}
