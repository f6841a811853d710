package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// maxHelloBytes bounds the tunnel channel's extra data (the JSON Hello).
const maxHelloBytes = 16 << 10

// errTooManyFiles is the accept error worth retrying after a pause.
var errTooManyFiles = syscall.EMFILE

// newServerConfig allows public-key authentication against the authorized set (checkKey);
// an unknown key that proves possession may go on to answer an enrolment secret
// (keyboard-interactive). One config per connection, so the callbacks share that
// connection's state.
func (g *Gateway) newServerConfig(st *connAuth) *ssh.ServerConfig {
	c := &ssh.ServerConfig{
		ServerVersion: g.serverVersion(),
		MaxAuthTries:  3,
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			return g.checkKey(st, key)
		},
		AuthLogCallback: func(meta ssh.ConnMetadata, method string, err error) { g.authLog(meta, st, method, err) },
		// Called at the first authentication request: the key exchange is done.
		BannerCallback: func(ssh.ConnMetadata) string { st.adm.kexDone(); return "" },
	}
	c.Config = serverAlgorithms()
	c.AddHostKey(g.cfg.HostKey)
	return c
}

// serverVersion is the gateway's SSH identification string.
func (g *Gateway) serverVersion() string {
	return "SSH-2.0-mcp-ssh-gateway_" + bannerVersion(g.cfg.Version)
}

// versionLine is the identification line the gateway sends (admission.awaitVersion) and
// x/crypto/ssh writes again at the start of its handshake (left out by handshakeConn.Write).
func (g *Gateway) versionLine() []byte { return []byte(g.serverVersion() + "\r\n") }

// serverAlgorithms is what the gateway's SSH server negotiates: the key exchanges an edge (and
// a current OpenSSH) uses, and authenticated ciphers (which need no MAC). A key exchange runs
// before authentication, so any peer may choose one; the library's default list also offers
// 2048-bit Diffie-Hellman (one with SHA-1) and the NIST curves, which cost the gateway several
// times the CPU of the default per handshake (see docs/BENCHMARKS-SCALE.md). Fixed lists also
// keep a library update from widening what the gateway accepts.
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

// handleConn runs one edge connection: admission, handshake, tunnel, until it ends. This
// goroutine is also the connection's supervisor (requests, channels, keepalive, streams the
// edge must not open): with the three of x/crypto/ssh and the two of yamux, an idle edge
// costs six goroutines.
func (g *Gateway) handleConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	a := g.newAdmission(nc)
	defer a.release()
	if !a.accept() || !a.awaitVersion(ctx) || !a.waitSlot(ctx) || !a.afterSlot() {
		return
	}
	g.connects.add(time.Now())
	st := &connAuth{adm: a}
	sc, chans, reqs, err := ssh.NewServerConn(a.duringHandshake(), g.newServerConfig(st))
	a.endHandshake()
	if err != nil {
		a.judgeHandshake(err)
		return
	}
	c := &sshConn{sc: sc, reqs: reqs, chans: chans}
	defer c.close()
	log := g.log.With("remote_addr", nc.RemoteAddr().String())
	key := g.authenticatedKey(sc, log)
	if key == nil {
		a.refuseUnknownKey("")
		return
	}
	a.refuseUnknownKey(key.fp)
	log = log.With("fingerprint", key.fp)
	if !a.afterAuth(ctx, c, key.fp, log) {
		return
	}
	if key.agentless != nil {
		g.serveAgentless(ctx, a, c, key, log)
		return
	}
	t, outcome := c.awaitTunnel(ctx, g.cfg.HandshakeTimeout, log)
	if !a.judgeTunnel(key.fp, outcome, t.err, log) {
		return
	}
	nc.SetDeadline(time.Time{})
	g.serveTunnel(ctx, a, c, key, t, log)
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
func (g *Gateway) serveTunnel(ctx context.Context, a *admission, c *sshConn, key *authKey, t tunnelOpen, log *slog.Logger) {
	e, log := g.register(c, key, t, log)
	if e == nil {
		return
	}
	defer e.close()
	g.notifyEdges()
	if g.supervise(ctx, c, e, log) {
		e.close()
		a.judgeStream(e.fp, log)
	}
	// Judged before the edge leaves the registry, so that whoever sees it gone also sees
	// the penalty its reconnect will meet.
	lasted := time.Since(e.since)
	a.judgeSession(e.fp, lasted, ctx.Err() != nil, log)
	g.unregister(e, lasted, log)
}

// register starts the yamux session and enters the edge in the registry, closing a stale
// session of the same key. It returns nil when the session cannot start or the key was
// revoked meanwhile, and the logger named for the edge.
// replaced closes old, the connection a newer one of the same key (e) took the place of, after
// telling its edge why. Two hosts taking turns with one key (a cloned SD card, a copied key
// file) make the tunnel flap forever: that is warned about, at most once a minute per key.
func (g *Gateway) replaced(old, e *edge, log *slog.Logger) {
	oldHost, _, _ := net.SplitHostPort(old.remote)
	newHost, _, _ := net.SplitHostPort(e.remote)
	if oldHost != newHost && g.sharedKeys.allow(e.fp, time.Now()) {
		log.Warn("one edge key is used from two places: each connection replaces the other; give each device its own key",
			"fingerprint", e.fp, "remote_addr", e.remote, "previous_remote_addr", old.remote)
		g.cfg.Audit.Write(audit.Event{Event: "edge_key_shared", Fingerprint: e.fp, RemoteAddr: e.remote,
			Outcome: "warning", Error: "the same key is connected from " + old.remote + " and " + e.remote})
	} else {
		log.Info("edge reconnected: closing its stale session", "stale_remote_addr", old.remote)
	}
	_, _, _ = old.conn.SendRequest(protocol.ReplacedRequest, false, nil)
	old.close()
}

func (g *Gateway) register(c *sshConn, key *authKey, t tunnelOpen, log *slog.Logger) (*edge, *slog.Logger) {
	// The gateway only opens streams, at most MaxConcurrent at once: the accept backlog (which
	// also bounds streams opened and not yet acknowledged) need not be larger.
	ycfg := *g.yamuxConfig
	ycfg.AcceptBacklog = min(ycfg.AcceptBacklog, max(t.hello.MaxConcurrent, 1))
	streams := newStreamWatch(t.ch)
	sess, err := yamux.Client(protocol.Coalesce(streams), &ycfg)
	if err != nil {
		log.Error("start yamux session", "err", err)
		t.ch.Close()
		return nil, log
	}
	if key.name == "" {
		g.claimName(t.hello.Name, key.fp)
	}
	e := newEdge(key.fp, t.hello, c.sc, sess, streams)
	if old := g.reg.add(e, key.name, g.nameTaken); old != nil {
		g.replaced(old, e, log)
	}
	if g.keys.lookup(key.fp) == nil { // revoked while we were registering
		g.reg.remove(e)
		e.close()
		return nil, log
	}
	name := g.reg.nameOf(e)
	if key.name == "" && name == strings.ToLower(strings.TrimSpace(t.hello.Name)) {
		g.binder.add(key.fp, name)
	}
	log = log.With("edge", name)
	log.Info("edge connected", "edge_version", t.hello.Version, "os", t.hello.OS, "arch", t.hello.Arch,
		"max_concurrent", t.hello.MaxConcurrent)
	g.cfg.Audit.Write(audit.Event{Event: "edge_connect", Edge: name, Fingerprint: e.fp, RemoteAddr: e.remote, Outcome: "ok"})
	return e, log
}

// unregister closes the edge's tunnel, takes it out of the registry and logs and audits the
// disconnection.
func (g *Gateway) unregister(e *edge, lasted time.Duration, log *slog.Logger) {
	e.close()
	g.reg.remove(e)
	g.notifyEdges()
	ms := lasted.Milliseconds()
	log.Info("edge disconnected", "connected_ms", ms)
	g.cfg.Audit.Write(audit.Event{Event: "edge_disconnect", Edge: g.reg.nameOf(e), Fingerprint: e.fp, RemoteAddr: e.remote,
		DurationMs: audit.Ptr(ms)})
}
