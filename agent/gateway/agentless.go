package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Agentless reverse tunnels (SPEC §9, second bullet). A device without the companion runs
// plain OpenSSH:
//
//	ssh -N -R 22:localhost:22 -p 2222 gateway
//
// with a key whose authorized_keys line is marked agentless,user="…",host_key="SHA256:…". The
// gateway accepts exactly one tcpip-forward global request on that connection and answers
// it (with the port asked for, or agentlessPort for port 0) but listens on nothing: the
// forward is a virtual listener. When it needs the device it opens a forwarded-tcpip channel
// to the device's ssh over that same connection (as an sshd would for a connection to the
// forwarded port), which the device's ssh connects to its own sshd; over that channel the
// AgentlessServer (package forward) runs an SSH client that pins host_key and logs in as
// user with the gateway's client key. Everything else the key asks for is refused and
// audited (once per reason a minute): sessions (exec, shell, subsystems), direct-tcpip
// (-L, -D), a second tcpip-forward, streamlocal forwards, cancelling the forward.

// KindAgentless is the Kind of an edge reached through its own ssh -R tunnel.
const KindAgentless = "agentless"

// agentlessPort is the port the gateway reports for a forward of port 0: it listens on
// nothing, so any port would do; the device's ssh prints it ("Allocated port 22").
const agentlessPort = 22

// maxForwardAddr bounds the bind address of the tcpip-forward request.
const maxForwardAddr = 255

// AgentlessTunnel is one agentless device's live connection, handed to the AgentlessServer.
type AgentlessTunnel struct {
	Name               string            // the edge's name: bound on the key's line, else agentless-<fingerprint prefix>
	Fingerprint        string            // the device's authorized key (its identity, as for companion edges)
	Labels             map[string]string // bound on the key's line; never nil
	User               string            // the login user on the device's sshd (user=)
	HostKey            ssh.PublicKey     // the pinned host key; nil when only its fingerprint is pinned
	HostKeyFingerprint string            // SHA256:… of the pinned host key (host_key=)
	RemoteAddr         string            // where the device's connection comes from

	conn     ssh.Conn
	bindAddr string // what the device asked to bind, echoed in each forwarded-tcpip open
	bindPort uint32 // the port answered
}

// Dial opens a connection to the device's forwarded port (its sshd) through the tunnel: a
// forwarded-tcpip channel on the device's own connection, wrapped as a net.Conn. Any
// deadline set on that net.Conn that expires closes it (the SSH channel has no deadlines);
// a zero deadline cancels a pending one.
func (t *AgentlessTunnel) Dial(ctx context.Context) (net.Conn, error) {
	payload := ssh.Marshal(struct {
		Addr       string
		Port       uint32
		OriginAddr string
		OriginPort uint32
	}{t.bindAddr, t.bindPort, "127.0.0.1", 0})
	type opened struct {
		ch  ssh.Channel
		err error
	}
	res := make(chan opened, 1)
	go func() {
		ch, reqs, err := t.conn.OpenChannel("forwarded-tcpip", payload)
		if err == nil {
			go ssh.DiscardRequests(reqs)
		}
		res <- opened{ch, err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return nil, fmt.Errorf("open forwarded-tcpip channel to %s's reverse tunnel: %w", t.Name, r.err)
		}
		return newTunnelConn(r.ch, t.conn), nil
	case <-ctx.Done():
		go func() { // the open may still succeed: close what it opens
			if r := <-res; r.err == nil {
				r.ch.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// AgentlessEdge serves one agentless tunnel: the Edge the tools call, and what get_status and
// find_edges show of it. Close stops it and waits until it has stopped.
type AgentlessEdge interface {
	Edge
	Status() EdgeStatus
	Inventory() *InventorySummary
	Close()
}

// AgentlessServer starts serving a tunnel (package forward's Fleet.ServeAgentless) and
// returns at once; ctx ends when the device's connection does.
type AgentlessServer func(ctx context.Context, t *AgentlessTunnel) AgentlessEdge

// SetAgentlessServer sets what serves agentless tunnels. Without one (GATEWAY_MODE=reverse:
// no client key) an agentless key's tunnel is kept but its edge stays offline, saying why.
// Tunnels already open when it is set are served from then on. It may be set once.
func (g *Gateway) SetAgentlessServer(s AgentlessServer) {
	if s == nil || !g.agentlessSrv.CompareAndSwap(nil, &s) {
		return
	}
	close(g.agentlessReady)
}

// errNoAgentlessServer is the Problem of an agentless edge the gateway cannot serve.
var errNoAgentlessServer = errors.New("agentless edges need GATEWAY_MODE=both: the gateway logs in to the device with its client key (CLIENT_KEY_FILE), which only forward mode loads")

// agentlessConn is one agentless key's live connection.
type agentlessConn struct {
	fp      string
	tunnel  *AgentlessTunnel
	sc      ssh.Conn
	since   time.Time
	served  AgentlessEdge // nil without an AgentlessServer; guarded by Gateway.agMu
	problem string
}

// agentlessName is an agentless edge's name when its line binds none.
func agentlessName(k *authKey) string {
	if k.name != "" {
		return k.name
	}
	return "agentless-" + fpID(k.fp)[:12]
}

// serveAgentless runs the connection of an agentless key once authenticated: it waits for
// the one tcpip-forward, then serves the tunnel until the connection ends.
func (g *Gateway) serveAgentless(ctx context.Context, a *admission, c *sshConn, key *authKey, log *slog.Logger) {
	log = log.With("kind", KindAgentless)
	rf := &agentlessRefusals{a: a, fp: key.fp, log: log, seen: map[string]bool{}}
	addr, port, outcome := c.awaitForward(ctx, g.cfg.HandshakeTimeout, rf, log)
	if !a.judgeTunnel(key.fp, outcome, nil, log) {
		return
	}
	a.nc.SetDeadline(time.Time{})
	t := &AgentlessTunnel{
		Name: agentlessName(key), Fingerprint: key.fp, Labels: cloneLabels(key.labels),
		User: key.agentless.user, HostKey: key.agentless.hostKey, HostKeyFingerprint: key.agentless.hostFP,
		RemoteAddr: c.sc.RemoteAddr().String(), conn: c.sc, bindAddr: addr, bindPort: port,
	}
	ac := &agentlessConn{fp: key.fp, tunnel: t, sc: c.sc, since: time.Now()}
	g.agMu.Lock()
	old := g.agConns[key.fp]
	g.agConns[key.fp] = ac
	g.agMu.Unlock()
	if old != nil {
		log.Info("agentless edge reconnected: closing its stale connection", "stale_remote_addr", old.tunnel.RemoteAddr)
		old.sc.Close()
	}
	if g.keys.lookup(key.fp) == nil { // revoked meanwhile
		g.dropAgentless(ac)
		return
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var served AgentlessEdge
	start := func() bool { // serves the tunnel once an AgentlessServer is set
		srv := g.agentlessSrv.Load()
		if srv == nil {
			return false
		}
		served = (*srv)(actx, t)
		g.agMu.Lock()
		ac.served = served
		g.agMu.Unlock()
		g.notifyEdges()
		return true
	}
	log.Info("agentless edge: reverse tunnel open", "edge", t.Name, "bind", net.JoinHostPort(addr, fmt.Sprint(port)))
	ready := g.agentlessReady
	if start() {
		ready = nil
	} else {
		g.agMu.Lock()
		ac.problem = errNoAgentlessServer.Error()
		g.agMu.Unlock()
		log.Warn("agentless edge cannot be served (yet)", "err", errNoAgentlessServer)
		g.notifyEdges()
	}
	g.superviseAgentless(ctx, c, key, rf, ready, start, log)
	cancel()
	if served != nil {
		served.Close()
	}
	lasted := time.Since(ac.since)
	a.judgeSession(key.fp, lasted, ctx.Err() != nil, log)
	g.dropAgentless(ac)
	log.Info("agentless edge: reverse tunnel closed", "edge", t.Name, "connected_ms", lasted.Milliseconds())
}

// dropAgentless forgets ac (unless a newer connection of its key took its place).
func (g *Gateway) dropAgentless(ac *agentlessConn) {
	g.agMu.Lock()
	if g.agConns[ac.fp] == ac {
		delete(g.agConns, ac.fp)
	}
	g.agMu.Unlock()
	ac.sc.Close()
	g.notifyEdges()
}

// closeAgentless closes the connections of the keys fps (revoked), returning their names.
func (g *Gateway) closeAgentless(fps []string) []string {
	var names []string
	g.agMu.Lock()
	defer g.agMu.Unlock()
	for _, fp := range fps {
		if ac := g.agConns[fp]; ac != nil {
			names = append(names, ac.tunnel.Name)
			ac.sc.Close()
		}
	}
	return names
}

// awaitForward waits for the connection's tcpip-forward request, refusing everything else
// meanwhile, and answers it. It returns the address and port the forward is known by, and
// HandshakeOK, or a failure outcome ("" when ctx ended).
func (c *sshConn) awaitForward(ctx context.Context, timeout time.Duration, rf *agentlessRefusals, log *slog.Logger) (string, uint32, string) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-c.reqs:
			if !ok {
				c.reqs = nil
				return "", 0, HandshakeProtocol
			}
			if r.Type != "tcpip-forward" {
				rf.request(r)
				continue
			}
			var req struct {
				Addr string
				Port uint32
			}
			if err := ssh.Unmarshal(r.Payload, &req); err != nil || len(req.Addr) > maxForwardAddr || req.Port > 65535 {
				rf.refuse(r, "malformed tcpip-forward request refused")
				continue
			}
			port := req.Port
			var reply []byte
			if port == 0 {
				port = agentlessPort
				reply = ssh.Marshal(struct{ Port uint32 }{port})
			}
			if r.WantReply {
				r.Reply(true, reply)
			}
			log.Debug("agentless: reverse forward accepted, nothing listens", "bind_addr", trunc(req.Addr, 64), "port", req.Port)
			return req.Addr, port, HandshakeOK
		case nch, ok := <-c.chans:
			if !ok {
				c.chans = nil
				return "", 0, HandshakeProtocol
			}
			rf.channel(nch)
		case <-timer.C:
			log.Warn("agentless edge dropped: no tcpip-forward request (ssh -R) in time", "timeout", timeout)
			return "", 0, HandshakeTimeout
		case <-ctx.Done():
			return "", 0, ""
		}
	}
}

// superviseAgentless is the rest of an agentless connection's life: requests and channels
// refused, keepalives (a device whose ssh stops answering is dropped after three intervals).
// ready (nil once served) is closed when an AgentlessServer is set: start then serves.
// A change of the key's user= or host_key= ends the connection: the device's ssh reconnects
// and is served with the new login.
func (g *Gateway) superviseAgentless(ctx context.Context, c *sshConn, key *authKey, rf *agentlessRefusals, ready <-chan struct{},
	start func() bool, log *slog.Logger) {
	alive := protocol.NewProber(c.sc, g.cfg.KeepaliveInterval, g.wg.Go)
	defer alive.Stop()
	swapped := g.keys.swappedChan()
	for {
		select {
		case <-ctx.Done():
			return
		case <-swapped:
			swapped = g.keys.swappedChan()
			if k := g.keys.lookup(key.fp); k == nil || !k.agentless.same(key.agentless) {
				log.Info("agentless key's line changed (user=, host_key= or no longer agentless): closing its connection")
				return
			}
		case <-ready:
			if start() {
				ready = nil
			}
		case r, ok := <-c.reqs:
			if !ok {
				c.reqs = nil
				return
			}
			rf.request(r)
		case nch, ok := <-c.chans:
			if !ok {
				c.chans = nil
				return
			}
			rf.channel(nch)
		case <-alive.C():
			if err := alive.Tick(); err != nil {
				log.Warn("agentless edge dropped: keepalives unanswered", "interval", g.cfg.KeepaliveInterval, "err", err)
				return
			}
		case err := <-alive.Replies():
			_ = alive.Answered(err)
		}
	}
}

// agentlessRefusals refuses what an agentless key asks for besides its one forward: each
// reason is logged once per connection and audited as edge_refused (once per key, source
// and reason a minute).
type agentlessRefusals struct {
	a    *admission
	fp   string
	log  *slog.Logger
	seen map[string]bool // reasons logged on this connection (bounded by the fixed reasons)
}

// request refuses a global request; keepalives and no-more-sessions are answered quietly.
func (rf *agentlessRefusals) request(r *ssh.Request) {
	switch r.Type {
	case "keepalive@openssh.com", "no-more-sessions@openssh.com":
		if r.WantReply {
			r.Reply(false, nil)
		}
	case "tcpip-forward":
		rf.refuse(r, "second tcpip-forward (-R) refused: an agentless key keeps exactly one reverse tunnel")
	case "cancel-tcpip-forward":
		rf.refuse(r, "cancel-tcpip-forward refused: the reverse tunnel ends with the connection")
	case "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com":
		rf.refuse(r, "streamlocal forward refused for an agentless key")
	default:
		rf.refuse(r, "global request refused for an agentless key")
	}
}

// refuse answers false to r and reports reason.
func (rf *agentlessRefusals) refuse(r *ssh.Request, reason string) {
	if r.WantReply {
		r.Reply(false, nil)
	}
	rf.report(reason, r.Type)
}

// channel refuses a channel open.
func (rf *agentlessRefusals) channel(nch ssh.NewChannel) {
	var reason string
	switch nch.ChannelType() {
	case "session":
		reason = "session (exec, shell, subsystem) refused for an agentless key"
	case "direct-tcpip":
		reason = "direct-tcpip (-L, -D) refused for an agentless key"
	case "direct-streamlocal@openssh.com":
		reason = "direct-streamlocal refused for an agentless key"
	default:
		reason = "channel refused for an agentless key"
	}
	nch.Reject(ssh.Prohibited, "this key is agentless: it may only keep one ssh -R tunnel to the gateway")
	rf.report(reason, nch.ChannelType())
}

func (rf *agentlessRefusals) report(reason, what string) {
	if !rf.seen[reason] {
		rf.seen[reason] = true
		rf.log.Warn("agentless edge: "+reason, "type", trunc(what, 64))
	}
	rf.a.refused(rf.fp, reason)
}

// agentlessStatus is get_status's line of the agentless key k (fp), live (ac) or not.
// Callers hold g.agMu.
func agentlessStatus(k *authKey, ac *agentlessConn) EdgeStatus {
	var st EdgeStatus
	if ac != nil && ac.served != nil {
		st = ac.served.Status()
	} else {
		st = EdgeStatus{Problem: "no reverse tunnel: the device's ssh -N -R to the gateway is not connected"}
		if ac != nil {
			st.Problem = ac.problem
			st.RemoteAddr = ac.tunnel.RemoteAddr
		}
	}
	st.Name, st.Fingerprint, st.Labels, st.Kind = agentlessName(k), k.fp, cloneLabels(k.labels), KindAgentless
	if st.ReportedLabels == nil {
		st.ReportedLabels = map[string]string{}
	}
	if st.Connected {
		st.Problem = ""
	}
	return st
}

// agentlessStatuses lists the agentless keys of set (only connected ones with connectedOnly).
func (g *Gateway) agentlessStatuses(set *keySet, connectedOnly bool) []EdgeStatus {
	if len(set.agentless) == 0 {
		return nil
	}
	g.agMu.Lock()
	defer g.agMu.Unlock()
	out := make([]EdgeStatus, 0, len(set.agentless))
	for _, fp := range set.agentless {
		ac := g.agConns[fp]
		if connectedOnly && ac == nil {
			continue
		}
		st := agentlessStatus(set.byFP[fp], ac)
		if connectedOnly && !st.Connected {
			continue
		}
		out = append(out, st)
	}
	return out
}

// agentlessSummary is the inventory summary of a served agentless edge, or nil.
func (g *Gateway) agentlessSummary(fp string) *InventorySummary {
	g.agMu.Lock()
	ac := g.agConns[fp]
	var served AgentlessEdge
	if ac != nil {
		served = ac.served
	}
	g.agMu.Unlock()
	if served == nil {
		return nil
	}
	return served.Inventory()
}

// agentlessEdge resolves ref (a fingerprint, or a name, case-insensitive) among the agentless
// keys: the served edge when its tunnel is up, else the key's offline handle. ok is false
// when ref names no agentless key.
func (g *Gateway) agentlessEdge(ref string) (Edge, bool) {
	set := g.keys.snapshot()
	if len(set.agentless) == 0 || ref == "" || len(ref) > maxEdgeRef {
		return nil, false
	}
	var k *authKey
	if c := set.byFP[ref]; c != nil && c.agentless != nil {
		k = c
	} else {
		lower := strings.ToLower(ref)
		for _, fp := range set.agentless {
			if c := set.byFP[fp]; agentlessName(c) == lower {
				k = c
				break
			}
		}
	}
	if k == nil {
		return nil, false
	}
	g.agMu.Lock()
	ac := g.agConns[k.fp]
	var served AgentlessEdge
	if ac != nil {
		served = ac.served
	}
	g.agMu.Unlock()
	if served == nil {
		return g.handleOf(k.fp, agentlessName(k)), true
	}
	return &agentlessHandle{AgentlessEdge: served, name: agentlessName(k), labels: cloneLabels(k.labels)}, true
}

// agentlessHandle is a served agentless edge under the name and labels its key's line binds
// now.
type agentlessHandle struct {
	AgentlessEdge
	name   string
	labels map[string]string
}

func (h *agentlessHandle) Name() string              { return h.name }
func (h *agentlessHandle) Labels() map[string]string { return h.labels }

// Kind is KindAgentless.
func (h *agentlessHandle) Kind() string { return KindAgentless }

// Kind is KindAgentless for an agentless key (offline: its tunnel is down), else
// KindCompanion.
func (h *handle) Kind() string {
	if k := h.g.keys.lookup(h.fp); k != nil && k.agentless != nil {
		return KindAgentless
	}
	return KindCompanion
}

// tunnelConn is a forwarded-tcpip channel as a net.Conn.
type tunnelConn struct {
	ssh.Channel
	local, remote net.Addr

	mu    sync.Mutex
	timer *time.Timer
}

func newTunnelConn(ch ssh.Channel, c ssh.Conn) *tunnelConn {
	return &tunnelConn{Channel: ch, local: c.LocalAddr(), remote: c.RemoteAddr()}
}

// LocalAddr is the gateway's end of the device's connection.
func (c *tunnelConn) LocalAddr() net.Addr { return c.local }

// RemoteAddr is the device's end of its connection.
func (c *tunnelConn) RemoteAddr() net.Addr { return c.remote }

// Close closes the channel and cancels a pending deadline.
func (c *tunnelConn) Close() error {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	return c.Channel.Close()
}

// SetDeadline closes the connection once t passes (at once for a past t); a zero t cancels.
func (c *tunnelConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if t.IsZero() {
		return nil
	}
	d := time.Until(t)
	if d <= 0 {
		return c.Channel.Close()
	}
	c.timer = time.AfterFunc(d, func() { c.Channel.Close() })
	return nil
}

// SetReadDeadline is SetDeadline: the channel has one deadline, which closes it.
func (c *tunnelConn) SetReadDeadline(t time.Time) error { return c.SetDeadline(t) }

// SetWriteDeadline is SetDeadline: the channel has one deadline, which closes it.
func (c *tunnelConn) SetWriteDeadline(t time.Time) error { return c.SetDeadline(t) }
