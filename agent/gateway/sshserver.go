package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
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
	// admissionWait is how long a connection waits for a handshake slot before being closed.
	admissionWait = time.Second
	// permFingerprint is the Permissions extension carrying the authenticated key.
	permFingerprint = "fp"
)

// errTooManyFiles is the accept error worth retrying after a pause.
var errTooManyFiles = syscall.EMFILE

// newServerConfig allows public-key authentication only, against the authorized set.
func (g *Gateway) newServerConfig() *ssh.ServerConfig {
	c := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-mcp-ssh-gateway_" + bannerVersion(g.cfg.Version),
		MaxAuthTries:  3,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			fp := ssh.FingerprintSHA256(key)
			if g.keys.lookup(fp) == nil {
				g.authFailure(fp, meta.RemoteAddr())
				return nil, fmt.Errorf("key %s is not authorized", fp)
			}
			return &ssh.Permissions{Extensions: map[string]string{permFingerprint: fp}}, nil
		},
	}
	c.AddHostKey(g.cfg.HostKey)
	return c
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

// handleConn runs one edge connection: admission, handshake, tunnel, until it ends.
func (g *Gateway) handleConn(ctx context.Context, nc net.Conn) {
	defer nc.Close()
	log := g.log.With("remote_addr", nc.RemoteAddr().String())
	if !g.admit(ctx) {
		log.Warn("edge connection dropped: too many SSH handshakes at once", "max", g.cfg.MaxHandshakes)
		return
	}
	nc.SetDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, g.sshConfig)
	<-g.handshakes
	if err != nil {
		log.Debug("ssh handshake failed", "err", err)
		return
	}
	defer sc.Close()
	// Every global request (tcpip-forward, keepalive, …) is answered false.
	g.wg.Go(func() { ssh.DiscardRequests(reqs) })
	connDone := make(chan struct{})
	g.wg.Go(func() {
		sc.Wait()
		close(connDone)
	})
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
	tunnels := make(chan tunnelOpen, 1)
	g.wg.Go(func() { g.routeChannels(chans, tunnels, log) })

	timer := time.NewTimer(g.cfg.HandshakeTimeout)
	defer timer.Stop()
	var t tunnelOpen
	select {
	case t = <-tunnels:
	case <-timer.C:
		log.Warn("edge dropped: no tunnel channel opened in time", "timeout", g.cfg.HandshakeTimeout)
		return
	case <-connDone:
		return
	case <-ctx.Done():
		return
	}
	if t.err != nil {
		log.Warn("edge dropped: tunnel refused", "err", t.err)
		return
	}
	nc.SetDeadline(time.Time{})
	g.serveTunnel(ctx, sc, key, t, connDone, log)
}

// admit takes a handshake slot, waiting at most admissionWait.
func (g *Gateway) admit(ctx context.Context) bool {
	select {
	case g.handshakes <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(admissionWait)
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
	hello protocol.Hello
	err   error
}

// routeChannels drains chans for the life of the connection: the first valid tunnel channel is
// accepted and handed over, everything else is refused.
func (g *Gateway) routeChannels(chans <-chan ssh.NewChannel, tunnels chan<- tunnelOpen, log *slog.Logger) {
	accepted := false
	for nc := range chans {
		switch {
		case nc.ChannelType() != protocol.ChannelType:
			log.Debug("channel refused", "type", trunc(nc.ChannelType(), 64))
			nc.Reject(ssh.Prohibited, "only the mcp tunnel is served")
		case accepted:
			nc.Reject(ssh.Prohibited, "only one mcp tunnel per connection")
		default:
			accepted = true
			hello, err := parseHello(nc.ExtraData())
			if err != nil {
				nc.Reject(ssh.Prohibited, err.Error())
				tunnels <- tunnelOpen{err: err}
				continue
			}
			ch, reqs, err := nc.Accept()
			if err != nil {
				tunnels <- tunnelOpen{err: fmt.Errorf("accept tunnel channel: %w", err)}
				continue
			}
			g.wg.Go(func() { ssh.DiscardRequests(reqs) }) // no request on the tunnel is served
			tunnels <- tunnelOpen{ch: ch, hello: hello}
		}
	}
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
func (g *Gateway) serveTunnel(ctx context.Context, sc *ssh.ServerConn, key *authKey, t tunnelOpen, connDone <-chan struct{}, log *slog.Logger) {
	sess, err := yamux.Client(t.ch, protocol.YamuxConfig(g.cfg.Log))
	if err != nil {
		log.Error("start yamux session", "err", err)
		t.ch.Close()
		return
	}
	e := newEdge(key.fp, t.hello, sc, sess)
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

	g.wg.Go(func() { g.keepalive(ctx, e, log) })
	g.wg.Go(func() { refuseStreams(e, log) })
	g.wg.Go(func() { g.inventoryLoop(ctx, e, log) })
	g.notifyEdges()
	select {
	case <-ctx.Done():
	case <-sess.CloseChan():
	case <-connDone:
	}
	e.close()
	g.reg.remove(e)
	g.notifyEdges()
	since := time.Since(e.since).Milliseconds()
	log.Info("edge disconnected", "connected_ms", since)
	g.cfg.Audit.Write(audit.Event{Event: "edge_disconnect", Edge: g.reg.nameOf(e), Fingerprint: e.fp, RemoteAddr: e.remote,
		DurationMs: audit.Ptr(since)})
}

// refuseStreams treats a stream opened by the edge as a protocol violation: only the gateway
// opens streams, so the whole tunnel is closed.
func refuseStreams(e *edge, log *slog.Logger) {
	s, err := e.sess.AcceptStream()
	if err != nil {
		return // session closed
	}
	s.Close()
	log.Warn("edge opened a stream (protocol violation): closing its tunnel")
	e.close()
}
