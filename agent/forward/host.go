package forward

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// ErrHostKeyMismatch is the reason a device is refused: the key it offered is not the one
// pinned in FORWARD_EDGES_FILE. The gateway never authenticates to such a device.
var ErrHostKeyMismatch = errors.New("host key does not match the pinned host_key")

// host is one entry of the file with its SSH connection, kept up by run.
type host struct {
	entry Entry
	f     *Fleet

	// sessions bounds the SSH channels used at once (OpenSSH's MaxSessions is 10 per
	// connection); waiting counts the callers queued for one.
	sessions chan struct{}
	waiting  atomic.Int32
	inFlight atomic.Int32

	mu       sync.Mutex
	conn     *conn     // nil when not connected
	since    time.Time // when conn came up
	lastSeen time.Time
	lastErr  string // why the last attempt failed, "" after a success
	mismatch bool   // the last attempt met a host key other than the pinned one
	version  string // the server's version string, from the last connection
	info     *protocol.DeviceInfo
	infoAt   time.Time
	prevCPU  []uint64 // the last /proc/stat cpu line, for CPU percent
	labels   map[string]string
	stop     context.CancelFunc
	done     chan struct{}
}

// conn is one live SSH connection to a host.
type conn struct {
	client *ssh.Client
	closed chan struct{} // closed when the connection ended

	sftpMu  sync.Mutex
	sftp    *sftp.Client
	sftpErr error
}

func newHost(f *Fleet, e Entry) *host {
	return &host{entry: e, f: f, labels: cloneLabels(e.Labels),
		sessions: make(chan struct{}, f.opts.MaxSessions), done: make(chan struct{})}
}

// start runs the connection loop until stopHost.
func (h *host) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	h.stop = cancel
	go func() {
		defer close(h.done)
		h.run(ctx)
	}()
}

// stopHost ends the connection loop and waits for it.
func (h *host) stopHost() {
	h.stop()
	<-h.done
}

// current returns the live connection, or an error wrapping gateway.ErrEdgeOffline saying
// why there is none.
func (h *host) current() (*conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn != nil {
		return h.conn, nil
	}
	why := h.lastErr
	if why == "" {
		why = "not connected yet"
	}
	return nil, fmt.Errorf("%w: %s (%s, %s): %s", gateway.ErrEdgeOffline, h.entry.Name, h.entry.kind(), h.entry.Address, why)
}

func (h *host) connected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.conn != nil
}

// run dials, serves and redials with capped exponential backoff and full jitter, until ctx.
func (h *host) run(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		c, err := h.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			h.fail(err)
			attempt++
			if !sleepCtx(ctx, backoff(h.f.opts.BackoffBase, h.f.opts.BackoffMax, attempt)) {
				return
			}
			continue
		}
		attempt = 0
		h.up(c)
		h.serve(ctx, c)
		h.down(c)
		if ctx.Err() != nil {
			return
		}
		// A short pause, so that a device that accepts and drops at once is not hammered.
		attempt = 1
		if !sleepCtx(ctx, backoff(h.f.opts.BackoffBase, h.f.opts.BackoffMax, attempt)) {
			return
		}
	}
}

// backoff is full jitter: uniform in [0, min(max, base·2^attempt)).
func backoff(base, max time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// hostKeyCallback accepts exactly the pinned key; it runs during key exchange, before any
// authentication, so a mismatch never offers the client key. What was offered instead is
// stored in offered.
func (h *host) hostKeyCallback(offered *atomic.Pointer[string]) ssh.HostKeyCallback {
	e := h.entry
	return func(_ string, _ net.Addr, key ssh.PublicKey) error {
		if e.HostKey != nil && string(key.Marshal()) == string(e.HostKey.Marshal()) ||
			e.HostKey == nil && ssh.FingerprintSHA256(key) == e.Fingerprint {
			return nil
		}
		what := key.Type() + " " + ssh.FingerprintSHA256(key)
		offered.Store(&what)
		return ErrHostKeyMismatch
	}
}

// hostKeyAlgorithms asks for the pinned key's algorithm when the key itself is pinned.
func hostKeyAlgorithms(pub ssh.PublicKey) []string {
	if pub == nil {
		return nil
	}
	if pub.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{pub.Type()}
}

// dial opens and authenticates one connection, bounded by DialTimeout (TCP and handshake).
func (h *host) dial(ctx context.Context) (*conn, error) {
	opts := h.f.opts
	dctx, cancel := context.WithTimeout(ctx, opts.DialTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	if h.entry.Dial != nil {
		nc, err = h.entry.Dial(dctx)
	} else {
		nc, err = opts.Dial(dctx, "tcp", h.entry.Address)
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", h.entry.Address, err)
	}
	deadline, _ := dctx.Deadline()
	_ = nc.SetDeadline(deadline)
	stopWatch := context.AfterFunc(dctx, func() { _ = nc.SetDeadline(time.Now()) })
	var offered atomic.Pointer[string]
	cfg := &ssh.ClientConfig{
		User:              h.entry.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(opts.ClientKey)},
		HostKeyCallback:   h.hostKeyCallback(&offered),
		HostKeyAlgorithms: hostKeyAlgorithms(h.entry.HostKey),
		ClientVersion:     "SSH-2.0-mcp-ssh-gateway",
		Timeout:           opts.DialTimeout,
	}
	sc, chans, reqs, err := ssh.NewClientConn(nc, h.entry.Address, cfg)
	stopWatch()
	if err != nil {
		nc.Close()
		what := offered.Load()
		h.mu.Lock()
		h.mismatch = what != nil
		h.mu.Unlock()
		if what != nil {
			return nil, fmt.Errorf("%w: %s offered %s, pinned %s; not authenticating (if the device's key changed on purpose, update host_key in %s)",
				ErrHostKeyMismatch, h.entry.Address, *what, h.entry.Fingerprint, cmp.Or(h.entry.PinSource, h.f.path))
		}
		return nil, fmt.Errorf("ssh %s@%s: %s", h.entry.User, h.entry.Address, trimSSH(err))
	}
	_ = nc.SetDeadline(time.Time{})
	c := &conn{client: ssh.NewClient(sc, chans, reqs), closed: make(chan struct{})}
	go func() {
		_ = c.client.Wait()
		close(c.closed)
	}()
	return c, nil
}

func trimSSH(err error) string { return strings.TrimPrefix(err.Error(), "ssh: ") }

// serve keeps c alive with keepalives until it ends or ctx does.
func (h *host) serve(ctx context.Context, c *conn) {
	opts := h.f.opts
	t := time.NewTicker(opts.KeepAlive)
	defer t.Stop()
	var probes sync.WaitGroup
	pctx, stopProbes := context.WithCancel(ctx)
	defer func() {
		stopProbes()
		probes.Wait()
	}()
	var inventory <-chan time.Time
	probe := func() {
		probes.Go(func() {
			e := &Edge{h: h, labels: map[string]string{}}
			if _, err := e.DeviceInfo(pctx, "inventory", true); err != nil && pctx.Err() == nil {
				opts.Log.Warn("forward: inventory probe failed", "edge", h.entry.Name, "err", err)
			}
		})
	}
	if opts.InventoryInterval > 0 {
		probe()
		it := time.NewTicker(opts.InventoryInterval)
		defer it.Stop()
		inventory = it.C
	}
	misses := 0
	for {
		select {
		case <-ctx.Done():
			c.close()
			<-c.closed
			return
		case <-c.closed:
			return
		case <-inventory:
			probe()
		case <-t.C:
			if c.ping(opts.KeepAlive) {
				misses = 0
				h.mu.Lock()
				h.lastSeen = time.Now()
				h.mu.Unlock()
				continue
			}
			if misses++; misses >= 3 {
				h.f.logf("forward edge %s: no keepalive answer 3 times, reconnecting", h.entry.Name)
				c.close()
				<-c.closed
				return
			}
		}
	}
}

// ping sends one keepalive and waits at most d for its answer (any answer proves liveness).
func (c *conn) ping(d time.Duration) bool {
	res := make(chan error, 1)
	go func() {
		_, _, err := c.client.SendRequest("keepalive@openssh.com", true, nil)
		res <- err
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-res:
		return err == nil
	case <-t.C:
		return false
	}
}

func (c *conn) close() {
	c.sftpMu.Lock()
	if c.sftp != nil {
		c.sftp.Close()
	}
	c.sftpMu.Unlock()
	c.client.Close()
}

// alive reports whether the connection has not ended.
func (c *conn) alive() bool {
	select {
	case <-c.closed:
		return false
	default:
		return true
	}
}

// sftpClient returns the connection's SFTP client, opening it on first use. A failure is
// kept: the device has no SFTP subsystem, and asking again on this connection is useless.
func (c *conn) sftpClient() (*sftp.Client, error) {
	c.sftpMu.Lock()
	defer c.sftpMu.Unlock()
	if c.sftp != nil || c.sftpErr != nil {
		return c.sftp, c.sftpErr
	}
	s, err := sftp.NewClient(c.client, sftp.UseConcurrentWrites(true), sftp.UseConcurrentReads(true))
	if err != nil {
		if !c.alive() {
			return nil, err
		}
		c.sftpErr = fmt.Errorf("the device offers no SFTP subsystem (file transfers need an sshd with sftp-server): %w", err)
		return nil, c.sftpErr
	}
	c.sftp = s
	return s, nil
}

func (h *host) up(c *conn) {
	now := time.Now()
	h.mu.Lock()
	h.conn, h.since, h.lastSeen, h.lastErr, h.mismatch = c, now, now, "", false
	h.version = strings.TrimPrefix(string(c.client.ServerVersion()), "SSH-2.0-")
	h.mu.Unlock()
	h.f.event(Event{Edge: h.entry.Name, Fingerprint: h.entry.id(), Kind: EventConnected, Address: h.entry.Address})
	h.f.changed()
}

func (h *host) down(c *conn) {
	h.mu.Lock()
	if h.conn == c {
		h.conn, h.since = nil, time.Time{}
		h.lastErr = "connection lost; reconnecting"
	}
	h.mu.Unlock()
	h.f.event(Event{Edge: h.entry.Name, Fingerprint: h.entry.id(), Kind: EventDisconnected, Address: h.entry.Address})
	h.f.changed()
}

// fail records a failed attempt; a host key mismatch is reported every time it is met,
// other failures once per distinct message.
func (h *host) fail(err error) {
	h.mu.Lock()
	repeat := h.lastErr == err.Error()
	h.lastErr = err.Error()
	h.mu.Unlock()
	if errors.Is(err, ErrHostKeyMismatch) {
		h.f.event(Event{Edge: h.entry.Name, Fingerprint: h.entry.id(), Kind: EventHostKeyMismatch, Address: h.entry.Address, Err: err})
		return
	}
	if !repeat {
		h.f.event(Event{Edge: h.entry.Name, Fingerprint: h.entry.id(), Kind: EventDialFailed, Address: h.entry.Address, Err: err})
	}
}

// acquire takes one session slot, waiting while ctx lasts; a full queue is gateway.ErrEdgeBusy.
func (h *host) acquire(ctx context.Context) (func(), error) {
	select {
	case h.sessions <- struct{}{}:
	default:
		if int(h.waiting.Add(1)) > h.f.opts.MaxQueue {
			h.waiting.Add(-1)
			return nil, fmt.Errorf("%w: %s", gateway.ErrEdgeBusy, h.entry.Name)
		}
		defer h.waiting.Add(-1)
		select {
		case h.sessions <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	h.inFlight.Add(1)
	return func() {
		h.inFlight.Add(-1)
		<-h.sessions
	}, nil
}

// status is the host's line in get_status.
func (h *host) status() gateway.EdgeStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := gateway.EdgeStatus{
		Name:           h.entry.Name,
		Fingerprint:    h.entry.id(),
		Connected:      h.conn != nil,
		Labels:         cloneLabels(h.labels),
		ReportedLabels: map[string]string{},
		ConnectedSince: h.since,
		LastSeen:       h.lastSeen,
		EdgeVersion:    h.version,
		InFlight:       int(h.inFlight.Load()),
		Kind:           h.entry.kind(),
	}
	if h.conn == nil {
		st.Problem = cmp.Or(h.lastErr, "not connected yet")
	}
	if h.conn != nil {
		st.RemoteAddr = h.entry.Address // empty when not connected, as for companion edges
	}
	if h.info != nil {
		st.OS, st.Arch = h.info.OS, h.info.Arch
	}
	return st
}

func cloneLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
