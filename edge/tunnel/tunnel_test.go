package tunnel

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError + 4}))
}

// fakeGateway is a minimal SSH server on 127.0.0.1 playing the gateway's side of the tunnel.
type fakeGateway struct {
	t           *testing.T
	ln          net.Listener
	host        ssh.Signer
	authCalls   atomic.Int32
	accepts     atomic.Int32
	hellos      chan protocol.Hello
	versions    chan string
	dropAfter   bool // close each connection right after the hello
	replace     bool // with dropAfter: say "replaced" (ReplacedRequest) before closing
	refuseKeys  bool // authorize no key, as for an unknown edge key
	noKeepalive bool // hold keepalive requests without answering
	wg          sync.WaitGroup
	mu          sync.Mutex
	conns       []net.Conn
}

func startGateway(t *testing.T) *fakeGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{t: t, ln: ln, host: newSigner(t), hellos: make(chan protocol.Hello, 16), versions: make(chan string, 16)}
	t.Cleanup(g.close)
	return g
}

func (g *fakeGateway) serve() {
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			g.authCalls.Add(1)
			if g.refuseKeys {
				return nil, errors.New("not authorized")
			}
			return &ssh.Permissions{}, nil
		},
	}
	cfg.AddHostKey(g.host)
	g.wg.Go(func() {
		for {
			c, err := g.ln.Accept()
			if err != nil {
				return
			}
			g.accepts.Add(1)
			g.mu.Lock()
			g.conns = append(g.conns, c)
			g.mu.Unlock()
			g.wg.Go(func() { g.handle(c, cfg) })
		}
	})
}

func (g *fakeGateway) handle(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	defer sc.Close()
	g.versions <- string(sc.ClientVersion())
	g.wg.Go(func() {
		for r := range reqs {
			if g.noKeepalive {
				continue // never answered: the edge must give up on this connection
			}
			_ = r.Reply(false, nil)
		}
	})
	for nch := range chans {
		if nch.ChannelType() != protocol.ChannelType {
			_ = nch.Reject(ssh.UnknownChannelType, "no")
			continue
		}
		var h protocol.Hello
		if err := json.Unmarshal(nch.ExtraData(), &h); err != nil {
			_ = nch.Reject(ssh.ConnectionFailed, "bad hello")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			return
		}
		g.wg.Go(func() { ssh.DiscardRequests(creqs) })
		g.hellos <- h
		if g.dropAfter {
			if g.replace {
				_, _, _ = sc.SendRequest(ReplacedRequest, false, nil)
			}
			return
		}
		sess, err := yamux.Client(ch, protocol.YamuxConfig(quietLog()))
		if err != nil {
			return
		}
		defer sess.Close()
		// One RPC-like round trip: the edge's serve echoes what it reads.
		st, err := sess.OpenStream()
		if err == nil {
			_ = st.SetDeadline(time.Now().Add(5 * time.Second))
			st.Write([]byte("ping"))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(st, buf); err == nil && string(buf) == "ping" {
				g.versions <- "echo-ok"
			}
			st.Close()
		}
	}
}

func (g *fakeGateway) close() {
	g.ln.Close()
	g.mu.Lock()
	for _, c := range g.conns {
		c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

func echo(ctx context.Context, st io.ReadWriteCloser) {
	defer st.Close()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(st, buf); err == nil {
		st.Write(buf)
	}
}

func edgeConfig(t *testing.T, g *fakeGateway, pin ssh.PublicKey) Config {
	pins, err := keys.ParsePins(keys.Fingerprint(pin))
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Gateways:          []string{g.ln.Addr().String()},
		Pins:              pins,
		Signer:            newSigner(t),
		Hello:             protocol.Hello{Protocol: protocol.Version, Name: "pi-1", Version: "1.2.3", OS: "linux", Arch: "arm64", MaxConcurrent: 4},
		KeepaliveInterval: time.Second,
		BackoffMax:        2 * time.Second,
	}
}

// runEdge starts Run in the background; the returned stop cancels it and waits for it.
func runEdge(t *testing.T, cfg Config) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, echo, quietLog()) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func TestHostKeyMismatchRefusedBeforeAuth(t *testing.T) {
	g := startGateway(t)
	g.serve()
	stop := runEdge(t, edgeConfig(t, g, newSigner(t).PublicKey()))
	deadline := time.Now().Add(5 * time.Second)
	for g.accepts.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if g.accepts.Load() < 2 {
		t.Fatalf("edge made %d attempts, want it to keep retrying", g.accepts.Load())
	}
	if n := g.authCalls.Load(); n != 0 {
		t.Fatalf("edge authenticated %d times to an unpinned gateway", n)
	}
	select {
	case h := <-g.hellos:
		t.Fatalf("tunnel opened to an unpinned gateway: %+v", h)
	default:
	}
}

func TestConnectsWithHelloAndServes(t *testing.T) {
	g := startGateway(t)
	g.serve()
	cfg := edgeConfig(t, g, g.host.PublicKey())
	stop := runEdge(t, cfg)
	v := waitFor(t, g.versions, "client version")
	if !strings.HasPrefix(v, "SSH-2.0-mcp-ssh-edge_1.2.3") {
		t.Errorf("client version %q", v)
	}
	h := waitFor(t, g.hellos, "hello")
	if h.Name != "pi-1" || h.Version != "1.2.3" || h.Protocol != protocol.Version || h.MaxConcurrent != 4 {
		t.Errorf("hello %+v", h)
	}
	if got := waitFor(t, g.versions, "echo"); got != "echo-ok" {
		t.Errorf("stream round trip: %q", got)
	}
	if g.authCalls.Load() == 0 {
		t.Error("no public key auth")
	}
	stop()
}

func TestReconnectsAfterDrop(t *testing.T) {
	g := startGateway(t)
	g.dropAfter = true
	g.serve()
	stop := runEdge(t, edgeConfig(t, g, g.host.PublicKey()))
	for i := range 3 {
		waitFor(t, g.hellos, "hello #"+string(rune('1'+i)))
	}
	stop()
}

func TestReconnectsAfterMissedKeepalives(t *testing.T) {
	g := startGateway(t)
	g.noKeepalive = true
	g.serve()
	cfg := edgeConfig(t, g, g.host.PublicKey())
	cfg.KeepaliveInterval = 100 * time.Millisecond
	stop := runEdge(t, cfg)
	waitFor(t, g.hellos, "first hello")
	waitFor(t, g.hellos, "hello after keepalive loss")
	stop()
}

// TestKeepaliveRefusalsKeepTunnel: a gateway that refuses every keepalive still answers it,
// which proves it alive: the edge keeps its one connection.
func TestKeepaliveRefusalsKeepTunnel(t *testing.T) {
	g := startGateway(t)
	g.serve()
	cfg := edgeConfig(t, g, g.host.PublicKey())
	cfg.KeepaliveInterval = 50 * time.Millisecond
	stop := runEdge(t, cfg)
	waitFor(t, g.hellos, "hello")
	time.Sleep(20 * cfg.KeepaliveInterval)
	if n := g.accepts.Load(); n != 1 {
		t.Fatalf("%d connections, want the first one kept: refused keepalives were taken for silence", n)
	}
	stop()
}

func TestBackoffBounds(t *testing.T) {
	b := newBackoff(5 * time.Second)
	b.rnd = func() float64 { return 0.999999 }
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
	for i, w := range want {
		d := b.next()
		if d > w || d < w*99/100 {
			t.Errorf("delay %d = %v, want just under %v", i, d, w)
		}
	}
	b.reset()
	if d := b.next(); d > time.Second {
		t.Errorf("after reset: %v", d)
	}
	b.rnd = func() float64 { return 0 }
	if d := b.next(); d != 0 {
		t.Errorf("full jitter lower bound: %v", d)
	}
	real := newBackoff(3 * time.Second)
	for i := range 200 {
		if d := real.next(); d < 0 || d > 3*time.Second {
			t.Fatalf("delay %d = %v out of [0, 3s]", i, d)
		}
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	if err := Run(context.Background(), Config{}, echo, quietLog()); err == nil {
		t.Fatal("empty config accepted")
	}
}
