package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

const (
	// maxHelloBytes bounds the tunnel channel's extra data (the JSON Hello).
	maxHelloBytes = 16 << 10
	// permFingerprint is the Permissions extension carrying the authenticated key.
	permFingerprint = "fp"
)

// errTooManyFiles is the accept error worth retrying after a pause.
var errTooManyFiles = syscall.EMFILE

// connAuth is what one connection's authentication remembers.
type connAuth struct {
	mu      sync.Mutex
	unknown ssh.PublicKey // the last unknown key offered (partial success)
	refused atomic.Bool   // an unauthorized key was offered (for the handshake metrics)
}

// newServerConfig allows public-key authentication against the authorized set; an unknown key
// that proves possession may go on to answer an enrolment secret (keyboard-interactive). One
// config per connection, so the callbacks share that connection's state.
func (g *Gateway) newServerConfig(st *connAuth) *ssh.ServerConfig {
	c := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-mcp-ssh-gateway_" + bannerVersion(g.cfg.Version),
		MaxAuthTries:  3,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			fp := ssh.FingerprintSHA256(key)
			if g.keys.lookup(fp) == nil {
				st.refused.Store(true)
				g.authFailure(fp, meta.RemoteAddr())
				if _, isCert := key.(*ssh.Certificate); isCert || g.cfg.StateDir == "" {
					return nil, fmt.Errorf("key %s is not authorized", fp)
				}
				// An unknown key may still enrol: it must first prove it holds the private
				// key (the library verifies the signature before honouring a partial
				// success), then answer the one-time secret.
				st.mu.Lock()
				st.unknown = key
				st.mu.Unlock()
				return nil, &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{
					KeyboardInteractiveCallback: g.enrollCallback(key),
				}}
			}
			return &ssh.Permissions{Extensions: map[string]string{permFingerprint: fp}}, nil
		},
		AuthLogCallback: func(meta ssh.ConnMetadata, method string, err error) { g.authLog(meta, st, method, err) },
	}
	c.Config = serverAlgorithms()
	c.AddHostKey(g.cfg.HostKey)
	return c
}

// serverAlgorithms is what the gateway's SSH server negotiates: the key exchanges an edge (and
// a current OpenSSH) uses, and authenticated ciphers (which need no MAC). A key exchange runs
// before authentication, so any peer may choose one; the library's default list also offers
// 2048-bit Diffie-Hellman (one with SHA-1), which costs 16.2 ms of CPU per handshake against
// 2.1 ms for the default (BenchmarkHandshake with those cases added for one run, both sides;
// docs/BENCHMARKS-SCALE.md), and NIST P-521 (6.6 ms). Fixed lists also keep a library update
// from widening what the gateway accepts.
func serverAlgorithms() ssh.Config {
	return ssh.Config{
		KeyExchanges: []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519, "curve25519-sha256@libssh.org"},
		Ciphers:      []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305},
	}
}

// bannerVersion makes a version fit the SSH identification string (printable, no spaces).
func bannerVersion(v string) string {
	v = strings.Map(func(r rune) rune {
		if r > ' ' && r < 0x7f && r != '-' {
			return r
		}
		return '_'
	}, v)
	if v == "" {
		return "dev"
	}
	return trunc(v, 64)
}

// authFailure audits an unknown key, once per key and source address per minute.
func (g *Gateway) authFailure(fp string, addr net.Addr) {
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !g.authFails.allow(fp+" "+host, time.Now()) {
		return
	}
	g.log.Warn("edge refused: unknown key", "fingerprint", fp, "remote_addr", addr.String())
	g.cfg.Audit.Write(audit.Event{Event: "auth_failure", Fingerprint: fp, RemoteAddr: addr.String(),
		Outcome: "refused", Error: "key not in authorized_keys"})
}

// failLimiter suppresses identical events within a window; its memory is bounded.
type failLimiter struct {
	mu     sync.Mutex
	window time.Duration
	last   map[string]time.Time
}

const maxFailEntries = 4096

func newFailLimiter(window time.Duration) *failLimiter {
	return &failLimiter{window: window, last: map[string]time.Time{}}
}

func (l *failLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.window {
		return false
	}
	if len(l.last) >= maxFailEntries {
		for k, t := range l.last {
			if now.Sub(t) >= l.window {
				delete(l.last, k)
			}
		}
		if len(l.last) >= maxFailEntries {
			clear(l.last)
		}
	}
	l.last[key] = now
	return true
}

// handleConn runs one edge connection: admission, handshake, tunnel, until it ends. This
// goroutine is also the connection's supervisor (requests, channels, keepalive): with the
// three of x/crypto/ssh, the two of yamux and refuseStreams, an idle edge costs seven
// goroutines.
func (g *Gateway) handleConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	if g.sourcePenalized(nc) {
		return
	}
	if !g.admit(ctx) {
		g.log.Warn("edge connection dropped: too many SSH handshakes at once", "max", g.cfg.MaxHandshakes,
			"remote_addr", nc.RemoteAddr().String())
		g.cfg.Metrics.Handshake(HandshakeBusy)
		return
	}
	if g.sourcePenalized(nc) { // the penalty may have started while it waited for a slot
		<-g.handshakes
		return
	}
	g.connects.add(time.Now())
	nc.SetDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	st := &connAuth{}
	hc := &handshakeConn{Conn: nc, penalties: g.penalties}
	sc, chans, reqs, err := ssh.NewServerConn(hc, g.newServerConfig(st))
	hc.done.Store(true)
	<-g.handshakes
	if err != nil {
		outcome := handshakeOutcome(err, st.refused.Load())
		if hc.penalized.Load() {
			outcome = HandshakePenalized
		}
		g.log.Debug("ssh handshake failed", "remote_addr", nc.RemoteAddr().String(), "err", err)
		g.cfg.Metrics.Handshake(outcome)
		return
	}
	c := &sshConn{sc: sc, reqs: reqs, chans: chans}
	defer c.close()
	log := g.log.With("remote_addr", nc.RemoteAddr().String())
	// Identity comes from the permissions of the completed handshake (CVE-2024-45337).
	fp := ""
	if sc.Permissions != nil {
		fp = sc.Permissions.Extensions[permFingerprint]
	}
	key := g.keys.lookup(fp)
	if key == nil {
		log.Warn("edge refused: key not authorized after handshake", "fingerprint", fp)
		return
	}
	log = log.With("fingerprint", fp)
	if !g.awaitPenalty(ctx, nc, c, fp, log) {
		return
	}
	t, outcome := c.awaitTunnel(ctx, g.cfg.HandshakeTimeout, log)
	if outcome != "" {
		g.cfg.Metrics.Handshake(outcome)
	}
	switch outcome {
	case HandshakeBadTunnel:
		g.refused(fp, nc.RemoteAddr(), "tunnel refused: "+t.err.Error())
		g.offend(fp, nc.RemoteAddr(), offenceViolation, log)
	case HandshakeProtocol, HandshakeTimeout: // authenticated, then no tunnel
		g.offend(fp, nc.RemoteAddr(), offenceShort, log)
	}
	if outcome != HandshakeOK {
		return
	}
	nc.SetDeadline(time.Time{})
	g.serveTunnel(ctx, c, key, t, log)
}

// sourcePenalized reports whether nc comes from a penalised address (penaltyBox.offendSource),
// which is then to be closed before the key exchange.
func (g *Gateway) sourcePenalized(nc net.Conn) bool {
	left := g.penalties.sourceLeft(nc.RemoteAddr(), time.Now())
	if left == 0 {
		return false
	}
	g.cfg.Metrics.Handshake(HandshakePenalized)
	g.log.Debug("edge connection closed: its source address is penalized", "remote_addr", nc.RemoteAddr().String(),
		"for_another", left.Round(time.Second))
	return true
}

// errSourcePenalized ends a handshake whose address was penalised while it ran.
var errSourcePenalized = errors.New("source address penalized during the handshake")

// handshakeConn is an accepted connection during its SSH handshake. A source penalty that
// starts while handshakes from the address are under way (a hundred devices connecting at
// once, the first of them misbehaving) ends those at their next packet from the peer, before
// the key exchange or authentication that packet would cost. Once done is set (the handshake
// is over) it only passes reads through: an established tunnel is never cut by a penalty.
type handshakeConn struct {
	net.Conn
	penalties *penaltyBox
	done      atomic.Bool
	penalized atomic.Bool // a read was refused
}

// Read reads from the connection, refusing what it read while the peer's address is penalised
// and the handshake is not done.
func (c *handshakeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.done.Load() && c.penalties.sourceLeft(c.RemoteAddr(), time.Now()) > 0 {
		c.penalized.Store(true)
		return 0, errSourcePenalized
	}
	return n, err
}

// sshConn is an established SSH connection with the Go channels x/crypto/ssh feeds: they are
// served by the connection's one goroutine, and drained by close so that the library's
// reader never blocks on them.
type sshConn struct {
	sc     *ssh.ServerConn
	reqs   <-chan *ssh.Request   // global requests
	chans  <-chan ssh.NewChannel // channel opens
	chReqs <-chan *ssh.Request   // requests on the tunnel channel; nil before it is open
}

// close closes the connection and drains its channels until x/crypto/ssh closes them.
func (c *sshConn) close() {
	c.sc.Close()
	for c.reqs != nil || c.chans != nil || c.chReqs != nil {
		select {
		case r, ok := <-c.reqs:
			if !ok {
				c.reqs = nil
			} else if r.WantReply {
				r.Reply(false, nil)
			}
		case nch, ok := <-c.chans:
			if !ok {
				c.chans = nil
			} else {
				nch.Reject(ssh.ConnectionFailed, "connection closing")
			}
		case r, ok := <-c.chReqs:
			if !ok {
				c.chReqs = nil
			} else if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}
}

// serveRequest answers false to a request: every global request (tcpip-forward, keepalive, …)
// and every request on the tunnel channel. It reports false once src is closed.
func serveRequest(r *ssh.Request, ok bool) bool {
	if ok && r.WantReply {
		r.Reply(false, nil)
	}
	return ok
}

// awaitTunnel waits for the first valid tunnel channel, answering requests meanwhile. The
// outcome is HandshakeOK once the tunnel is open, a failure reason otherwise, or "" when ctx
// ended (a gateway shutting down is no edge's failure).
func (c *sshConn) awaitTunnel(ctx context.Context, timeout time.Duration, log *slog.Logger) (tunnelOpen, string) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-c.reqs:
			if !serveRequest(r, ok) {
				c.reqs = nil
				return tunnelOpen{}, HandshakeProtocol
			}
		case nch, ok := <-c.chans:
			if !ok {
				c.chans = nil
				return tunnelOpen{}, HandshakeProtocol
			}
			if nch.ChannelType() != protocol.ChannelType {
				log.Debug("channel refused", "type", trunc(nch.ChannelType(), 64))
				nch.Reject(ssh.Prohibited, "only the mcp tunnel is served")
				continue
			}
			t := acceptTunnel(nch)
			if t.err != nil {
				log.Warn("edge dropped: tunnel refused", "err", t.err)
				return t, HandshakeBadTunnel
			}
			c.chReqs = t.reqs
			return t, HandshakeOK
		case <-timer.C:
			log.Warn("edge dropped: no tunnel channel opened in time", "timeout", timeout)
			return tunnelOpen{}, HandshakeTimeout
		case <-ctx.Done():
			return tunnelOpen{}, ""
		}
	}
}

// admit takes a handshake slot, waiting at most Config.AdmissionWait.
func (g *Gateway) admit(ctx context.Context) bool {
	select {
	case g.handshakes <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(g.cfg.AdmissionWait)
	defer t.Stop()
	select {
	case g.handshakes <- struct{}{}:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// tunnelOpen is the accepted tunnel channel with the edge's Hello, or why it was refused.
type tunnelOpen struct {
	ch    ssh.Channel
	reqs  <-chan *ssh.Request
	hello protocol.Hello
	err   error
}

// acceptTunnel validates the Hello of a tunnel channel open and accepts it, or rejects it.
func acceptTunnel(nch ssh.NewChannel) tunnelOpen {
	hello, err := parseHello(nch.ExtraData())
	if err != nil {
		nch.Reject(ssh.Prohibited, err.Error())
		return tunnelOpen{err: err}
	}
	ch, reqs, err := nch.Accept()
	if err != nil {
		return tunnelOpen{err: fmt.Errorf("accept tunnel channel: %w", err)}
	}
	return tunnelOpen{ch: ch, reqs: reqs, hello: hello}
}

// parseHello decodes and validates the channel-open extra data.
func parseHello(b []byte) (protocol.Hello, error) {
	var h protocol.Hello
	if len(b) > maxHelloBytes {
		return h, fmt.Errorf("hello is %d bytes (max %d)", len(b), maxHelloBytes)
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("hello is not valid JSON: %v", err)
	}
	if err := h.Validate(); err != nil {
		return h, err
	}
	return h, nil
}

// serveTunnel runs the yamux session over the tunnel channel until the connection ends.
func (g *Gateway) serveTunnel(ctx context.Context, c *sshConn, key *authKey, t tunnelOpen, log *slog.Logger) {
	// The gateway only opens streams, at most MaxConcurrent at once: the accept backlog (which
	// also bounds streams opened and not yet acknowledged) need not be larger.
	ycfg := *g.yamuxConfig
	ycfg.AcceptBacklog = min(ycfg.AcceptBacklog, max(t.hello.MaxConcurrent, 1))
	sess, err := yamux.Client(t.ch, &ycfg)
	if err != nil {
		log.Error("start yamux session", "err", err)
		t.ch.Close()
		return
	}
	e := newEdge(key.fp, t.hello, c.sc, sess)
	if old := g.reg.add(e, key.name, g.keys.boundTo); old != nil {
		log.Info("edge reconnected: closing its stale session", "stale_remote_addr", old.remote)
		old.close()
	}
	defer e.close()
	if g.keys.lookup(key.fp) == nil { // revoked while we were registering
		g.reg.remove(e)
		return
	}
	name := g.reg.nameOf(e)
	log = log.With("edge", name)
	log.Info("edge connected", "edge_version", t.hello.Version, "os", t.hello.OS, "arch", t.hello.Arch,
		"max_concurrent", t.hello.MaxConcurrent)
	g.cfg.Audit.Write(audit.Event{Event: "edge_connect", Edge: name, Fingerprint: e.fp, RemoteAddr: e.remote, Outcome: "ok"})

	g.wg.Go(func() {
		if refuseStreams(e, log) {
			g.refused(e.fp, e.conn.RemoteAddr(), "edge opened a stream (protocol violation)")
			g.offend(e.fp, e.conn.RemoteAddr(), offenceViolation, log)
		}
	})
	g.notifyEdges()
	g.supervise(ctx, c, e, log)
	// Judged before the edge leaves the registry, so that whoever sees it gone also sees
	// the penalty its reconnect will meet.
	lasted := time.Since(e.since)
	switch {
	case ctx.Err() != nil: // the gateway is stopping: not the edge's doing
	case lasted < shortSession:
		g.offend(e.fp, e.conn.RemoteAddr(), offenceShort, log)
	default:
		g.penalties.lasted(e.fp)
	}
	e.close()
	g.reg.remove(e)
	g.notifyEdges()
	since := lasted.Milliseconds()
	log.Info("edge disconnected", "connected_ms", since)
	g.cfg.Audit.Write(audit.Event{Event: "edge_disconnect", Edge: g.reg.nameOf(e), Fingerprint: e.fp, RemoteAddr: e.remote,
		DurationMs: audit.Ptr(since)})
}

// awaitPenalty holds an authenticated connection of a penalised key before its tunnel opens,
// for up to half the handshake timeout and without a handshake slot (handleConn gave it back):
// an honest edge that drew a short penalty connects late rather than not at all, and an
// attacker's reconnect loop slows to one handshake per hold. It reports whether the connection
// may go on (after a hold, with a fresh handshake deadline on nc for opening the tunnel); if
// not, the tunnel open, if already sent, is refused with the reason.
func (g *Gateway) awaitPenalty(ctx context.Context, nc net.Conn, c *sshConn, fp string, log *slog.Logger) bool {
	left := g.penalties.left(fp, time.Now())
	if left == 0 {
		return true
	}
	if g.penalties.hold(fp) { // else another connection of this key is held already
		t := time.NewTimer(min(left, g.cfg.HandshakeTimeout/2))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		g.penalties.unhold(fp)
		if ctx.Err() != nil {
			return false // the gateway is stopping
		}
		if left = g.penalties.left(fp, time.Now()); left == 0 {
			nc.SetDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
			return true
		}
	}
	g.cfg.Metrics.Handshake(HandshakePenalized)
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
	return false
}

// offend records an offence of an authorized key and, when it draws a penalty, logs and
// audits it (at most once per key a minute).
func (g *Gateway) offend(fp string, addr net.Addr, o offence, log *slog.Logger) {
	d, sourceStarted := g.penalties.offend(fp, addr, o, time.Now())
	if sourceStarted {
		g.log.Warn("source address penalized: its new connections are closed before the key exchange until the penalty ends",
			"remote_addr", addr.String(), "keys_penalized", sourceKeys, "penalty", sourcePenalty)
		g.cfg.Audit.Write(audit.Event{Event: "source_penalized", RemoteAddr: addr.String(), Outcome: "penalized",
			DurationMs: audit.Ptr(sourcePenalty.Milliseconds()), Error: fmt.Sprintf("%d keys penalized from this address", sourceKeys)})
	}
	if d == 0 || !g.authFails.allow(fp+" penalized", time.Now()) {
		return
	}
	why := "protocol violation"
	if o == offenceShort {
		why = "reconnects in a row"
	}
	log.Warn("edge penalized: until the penalty ends, its connections are held and then refused", "why", why,
		"penalty", d.Round(time.Millisecond))
	g.cfg.Audit.Write(audit.Event{Event: "edge_penalized", Fingerprint: fp, RemoteAddr: addr.String(), Outcome: "penalized",
		DurationMs: audit.Ptr(d.Milliseconds()), Error: why})
}

// refuseStreams treats a stream opened by the edge as a protocol violation: only the gateway
// opens streams, so the whole tunnel is closed.
// It reports whether that happened.
func refuseStreams(e *edge, log *slog.Logger) bool {
	s, err := e.sess.AcceptStream()
	if err != nil {
		return false // session closed
	}
	s.Close()
	log.Warn("edge opened a stream (protocol violation): closing its tunnel")
	e.close()
	return true
}

// refused audits a refusal of an authenticated edge (bad hello, protocol violation), at most
// once per key, source address and reason a minute, so a flood cannot grow the log fast.
func (g *Gateway) refused(fp string, addr net.Addr, reason string) {
	reason = trunc(reason, 200)
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !g.authFails.allow(fp+" "+host+" "+reason, time.Now()) {
		return
	}
	g.cfg.Audit.Write(audit.Event{Event: "edge_refused", Fingerprint: fp, RemoteAddr: addr.String(), Outcome: "refused", Error: reason})
}
