// Package tunnel keeps an edge's one SSH connection to a gateway up: it dials out, checks the
// gateway's host key against the pins, opens the tunnel channel with the edge's Hello, serves
// the yamux streams the gateway opens, sends keepalives and reconnects with backoff.
package tunnel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/cpu"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Timeouts of one connection attempt.
const (
	dialTimeout      = 10 * time.Second
	handshakeTimeout = 15 * time.Second
	defaultStable    = 30 * time.Second
)

// Config says where to connect and who the edge is.
type Config struct {
	Gateways          []string       // host:port, tried in turn; names resolved on every attempt
	Pins              *keys.Pins     // gateway host keys trusted
	Signer            ssh.Signer     // the edge's identity key
	Hello             protocol.Hello // sent when opening the tunnel channel
	KeepaliveInterval time.Duration  // SSH keepalive period; 3 missed in a row drop the connection
	BackoffMax        time.Duration  // reconnect backoff cap; also how long a connection must last to reset it
	// Dial opens the TCP connection to a gateway; nil dials directly with a 10 s timeout. The
	// edge simulator sets it to spread many edges over several local source addresses.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Serve handles one yamux stream opened by the gateway; it owns and closes the stream.
type Serve func(ctx context.Context, stream io.ReadWriteCloser)

// Run keeps the tunnel up until ctx is done, then closes the connection, waits for every
// stream handler and returns nil. It returns an error only for an unusable Config.
func Run(ctx context.Context, cfg Config, serve func(ctx context.Context, stream io.ReadWriteCloser), log *slog.Logger) error {
	if len(cfg.Gateways) == 0 || cfg.Pins == nil || cfg.Signer == nil {
		return errors.New("tunnel: gateways, host key pins and signer are required")
	}
	hello, err := json.Marshal(cfg.Hello)
	if err != nil {
		return fmt.Errorf("tunnel: encode hello: %w", err)
	}
	stable := cfg.BackoffMax
	if stable <= 0 {
		stable = defaultStable
	}
	bo := newBackoff(cfg.BackoffMax)
	nt := newNotices(cfg, stable)
	for ctx.Err() == nil {
		for _, addr := range cfg.Gateways {
			start := time.Now()
			err := runConn(ctx, cfg, addr, hello, serve, log)
			if ctx.Err() != nil {
				return nil
			}
			up := time.Since(start)
			if err != nil {
				level := slog.LevelWarn
				if nt.explain(addr, err, up, log) {
					level = slog.LevelDebug // explained at most once a minute instead
				}
				log.Log(ctx, level, "gateway connection ended", "gateway", addr, "err", err, "up", up.Round(time.Millisecond))
			}
			if up >= stable {
				bo.reset()
			}
		}
		d := bo.next()
		log.Info("reconnecting", "in", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	return nil
}

// ClientConfig is the SSH client configuration of an edge: pinned host key, public key auth
// with the name it asks for as SSH user (shown, untrusted, for a pending key; "edge" when it is
// not a valid name), and ChaCha20 first on ARM CPUs without AES instructions.
func ClientConfig(cfg Config) *ssh.ClientConfig {
	user := "edge"
	if protocol.ValidName(cfg.Hello.Name) {
		user = cfg.Hello.Name
	}
	c := &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(cfg.Signer)},
		HostKeyCallback: cfg.Pins.HostKeyCallback(),
		ClientVersion:   "SSH-2.0-mcp-ssh-edge_" + sanitizeVersion(cfg.Hello.Version),
		Timeout:         handshakeTimeout,
	}
	c.Ciphers = cipherOrder(runtime.GOARCH, cpu.ARM64.HasAES)
	return c
}

// cipherOrder is nil (the library's AES-GCM-first default) where AES has hardware support, and
// ChaCha20-Poly1305 first where it lacks it (32-bit ARM, arm64 without the AES extension, as on
// the Raspberry Pi 4 and older), where ChaCha20 is several times faster.
func cipherOrder(goarch string, arm64AES bool) []string {
	if goarch != "arm" && (goarch != "arm64" || arm64AES) {
		return nil
	}
	ciphers := []string{ssh.CipherChaCha20Poly1305}
	for _, ci := range ssh.SupportedAlgorithms().Ciphers {
		if ci != ssh.CipherChaCha20Poly1305 {
			ciphers = append(ciphers, ci)
		}
	}
	return ciphers
}

// sanitizeVersion keeps a version string valid in an SSH identification line.
func sanitizeVersion(v string) string {
	b := []byte(v)
	for i, c := range b {
		if c <= ' ' || c > '~' || c == '-' {
			b[i] = '_'
		}
	}
	if len(b) == 0 || len(b) > 64 {
		return "unknown"
	}
	return string(b)
}

// runConn makes one connection to addr and serves it until it breaks or ctx is done.
func runConn(ctx context.Context, cfg Config, addr string, hello []byte, serve Serve, log *slog.Logger) error {
	log = log.With("gateway", addr)
	c, err := connect(ctx, cfg, addr, log)
	if err != nil {
		return err
	}
	return c.run(ctx, cfg.KeepaliveInterval, hello, serve, log)
}

// clientConn is an established SSH connection to a gateway, with the Go channels that
// x/crypto/ssh feeds.
type clientConn struct {
	conn  ssh.Conn
	chans <-chan ssh.NewChannel
	reqs  <-chan *ssh.Request
}

// connect dials addr and does the SSH handshake, within handshakeTimeout.
func connect(ctx context.Context, cfg Config, addr string, log *slog.Logger) (clientConn, error) {
	dial := cfg.Dial
	if dial == nil {
		d := net.Dialer{Timeout: dialTimeout, KeepAlive: -1}
		dial = d.DialContext
	}
	dctx, cancelDial := context.WithTimeout(ctx, dialTimeout)
	nc, err := dial(dctx, "tcp", addr)
	cancelDial()
	if err != nil {
		return clientConn{}, fmt.Errorf("dial: %w", err)
	}
	// No handshake timeout exists in x/crypto/ssh: bound it with a deadline on the conn,
	// and let ctx cancel it too.
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	conn, chans, reqs, err := ssh.NewClientConn(nc, addr, ClientConfig(cfg))
	if err != nil {
		nc.Close()
		if errors.Is(err, keys.ErrHostKeyMismatch) {
			log.Error("gateway host key refused: not the pinned key (EDGE_GATEWAY_HOST_KEY); connection dropped", "err", err)
		}
		return clientConn{}, fmt.Errorf("ssh handshake: %w", err)
	}
	_ = nc.SetDeadline(time.Time{})
	return clientConn{conn: conn, chans: chans, reqs: reqs}, nil
}

// run opens the tunnel channel with the edge's hello and serves the streams the gateway
// opens, probing the gateway every interval, until the connection breaks or ctx is done.
func (c clientConn) run(ctx context.Context, interval time.Duration, hello []byte, serve Serve, log *slog.Logger) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var replaced atomic.Bool
	wg.Go(func() {
		for r := range c.reqs {
			if r.Type == ReplacedRequest {
				replaced.Store(true)
			}
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	})
	wg.Go(func() {
		for nch := range c.chans {
			_ = nch.Reject(ssh.Prohibited, "an edge accepts no channels")
		}
	})
	// Closing the connection unblocks everything below: channel, yamux session, keepalive.
	wg.Go(func() {
		<-connCtx.Done()
		c.conn.Close()
	})
	sess, err := c.openTunnel(hello, &wg, log)
	if err != nil {
		return err
	}
	log.Info("connected to gateway", "server_version", string(c.conn.ServerVersion()))
	var kaErr error
	wg.Go(func() {
		if err := protocol.NewProber(c.conn, interval, wg.Go).Run(connCtx); err != nil {
			kaErr = err
			cancel()
		}
	})
	wg.Go(func() {
		<-connCtx.Done()
		sess.Close()
	})
	serveStreams(connCtx, cancel, sess, serve)
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		log.Info("disconnected from gateway: shutting down")
		return nil
	case replaced.Load():
		return errReplaced
	case kaErr != nil:
		return kaErr
	}
	return errClosedByGateway
}

// openTunnel opens the tunnel channel and the yamux session over it; wg gets the goroutine
// that drains the channel's requests.
func (c clientConn) openTunnel(hello []byte, wg *sync.WaitGroup, log *slog.Logger) (*yamux.Session, error) {
	ch, chReqs, err := c.conn.OpenChannel(protocol.ChannelType, hello)
	if err != nil {
		return nil, fmt.Errorf("open tunnel channel: %w", err)
	}
	wg.Go(func() { ssh.DiscardRequests(chReqs) })
	sess, err := yamux.Server(protocol.Coalesce(ch), protocol.YamuxConfig(log))
	if err != nil {
		return nil, fmt.Errorf("yamux: %w", err)
	}
	return sess, nil
}

// serveStreams serves every stream the gateway opens until the session ends, then cancels
// ctx (the handlers' context) and waits for the handlers.
func serveStreams(ctx context.Context, cancel context.CancelFunc, sess *yamux.Session, serve Serve) {
	var streams sync.WaitGroup
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			break
		}
		streams.Go(func() { serve(ctx, st) })
	}
	cancel()
	streams.Wait()
}
