package gateway

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newSigner(t testing.TB) ssh.Signer {
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

// fixture is a running gateway on 127.0.0.1 with its files in a temporary directory.
type fixture struct {
	g         *Gateway
	addr      string
	host      ssh.Signer
	akPath    string
	auditPath string
	logs      *syncBuffer
}

// startGateway runs a gateway whose authorized_keys holds authorized (may be empty).
func startGateway(t *testing.T, authorized string, mut func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{host: newSigner(t), akPath: filepath.Join(dir, "authorized_keys"),
		auditPath: filepath.Join(dir, "audit.jsonl"), logs: &syncBuffer{}}
	if authorized != "" {
		if err := os.WriteFile(f.akPath, []byte(authorized), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	al, err := audit.Open(f.auditPath, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{HostKey: f.host, Bind: "127.0.0.1:0", AuthorizedKeysFile: f.akPath, Version: "test",
		Mode: "reverse", Audit: al, Log: log, KeepaliveInterval: time.Minute}
	if mut != nil {
		mut(&cfg)
	}
	g, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := g.Listen()
	if err != nil {
		t.Fatal(err)
	}
	f.g, f.addr = g, addr.String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
		al.Close()
	})
	return f
}

func (f *fixture) auditLines(t *testing.T) []audit.Event {
	t.Helper()
	b, err := os.ReadFile(f.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Event
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var e audit.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, e)
	}
	return out
}

// waitFor polls cond every 20 ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func authLine(s ssh.Signer, opts string) string {
	l := keys.AuthorizedLine(s.PublicKey())
	if opts != "" {
		l = opts + " " + l
	}
	return l + "\n"
}

// sshDial does the SSH handshake as an edge would.
func sshDial(addr string, key ssh.Signer, hostKey ssh.PublicKey) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	return sshDialAlgorithms(addr, key, hostKey, ssh.Config{})
}

// sshDialAlgorithms is sshDial offering only the algorithms of algs (the library's defaults
// where a list is empty).
func sshDialAlgorithms(addr string, key ssh.Signer, hostKey ssh.PublicKey, algs ssh.Config) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	return sshDialFrom(addr, "", key, hostKey, algs)
}

// sshDialFrom is sshDialAlgorithms from the local IP from ("" = any).
func sshDialFrom(addr, from string, key ssh.Signer, hostKey ssh.PublicKey, algs ssh.Config) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, nil, nil, err
	}
	hk := ssh.InsecureIgnoreHostKey()
	if hostKey != nil {
		hk = ssh.FixedHostKey(hostKey)
	}
	cfg := &ssh.ClientConfig{Config: algs, User: "edge", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: hk, Timeout: 5 * time.Second}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	nc.SetDeadline(time.Time{})
	return c, chans, reqs, nil
}

// testEdge is a minimal edge: it opens the tunnel with a Hello, serves yamux and answers RPCs.
type testEdge struct {
	conn     ssh.Conn
	sess     *yamux.Session
	release  chan struct{} // closing it lets "hold" calls finish
	wg       sync.WaitGroup
	once     sync.Once
	relOnce  sync.Once
	infos    atomic.Int64 // device_info calls served
	lastV    atomic.Int64 // protocol version of the last request
	trailers atomic.Int64 // uploads that ended with a FrameDigest
	lastID   atomic.Value // string: the request id of the last request
	replaced atomic.Bool  // the gateway said a newer connection of this key replaced this one
	lies     atomic.Bool  // report a SHA-256 of zeros for every upload
}

// releaseHeld lets every "hold" call finish.
func (e *testEdge) releaseHeld() { e.relOnce.Do(func() { close(e.release) }) }

type edgeOpts struct {
	hello       protocol.Hello
	noKeepalive bool   // never answer global requests (a hung peer)
	from        string // local IP to dial from; "" = any
}

func dialEdge(t *testing.T, f *fixture, key ssh.Signer, o edgeOpts) *testEdge {
	t.Helper()
	e, err := tryDialEdge(f, key, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func tryDialEdge(f *fixture, key ssh.Signer, o edgeOpts) (*testEdge, error) {
	c, chans, reqs, err := sshDialFrom(f.addr, o.from, key, f.host.PublicKey(), ssh.Config{})
	if err != nil {
		return nil, err
	}
	e := &testEdge{conn: c, release: make(chan struct{})}
	if !o.noKeepalive {
		e.wg.Go(func() {
			for r := range reqs {
				if r.Type == protocol.ReplacedRequest {
					e.replaced.Store(true)
				}
				if r.WantReply {
					r.Reply(false, nil)
				}
			}
		})
	}
	e.wg.Go(func() {
		for nc := range chans {
			nc.Reject(ssh.Prohibited, "no")
		}
	})
	if o.hello.Protocol == 0 {
		o.hello.Protocol = protocol.Version
	}
	hb, _ := json.Marshal(o.hello)
	ch, creqs, err := c.OpenChannel(protocol.ChannelType, hb)
	if err != nil {
		c.Close()
		e.wg.Wait()
		return nil, err
	}
	e.wg.Go(func() { ssh.DiscardRequests(creqs) })
	sess, err := yamux.Server(ch, protocol.YamuxConfig(slog.New(slog.DiscardHandler)))
	if err != nil {
		c.Close()
		e.wg.Wait()
		return nil, err
	}
	e.sess = sess
	e.wg.Go(func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				return
			}
			e.wg.Go(func() { e.serve(st) })
		}
	})
	return e, nil
}

func (e *testEdge) close() {
	e.once.Do(func() {
		e.releaseHeld()
		e.conn.Close()
		if e.sess != nil {
			e.sess.Close()
		}
	})
	e.wg.Wait()
}

func (e *testEdge) closed() <-chan struct{} {
	ch := make(chan struct{})
	go func() { e.conn.Wait(); close(ch) }()
	return ch
}

func writeResult(st io.Writer, v any, perr *protocol.Error) {
	if perr != nil {
		protocol.WriteJSON(st, protocol.FrameResult, protocol.Response{V: 1, Error: perr})
		return
	}
	r, _ := protocol.NewResult(v)
	protocol.WriteJSON(st, protocol.FrameResult, r)
}

// serve answers one stream: exec (echo, sleep, hold, fail), upload, device_info.
func (e *testEdge) serve(st *yamux.Stream) {
	defer st.Close()
	fr := protocol.NewReader(st)
	typ, p, err := fr.Next()
	if err != nil || typ != protocol.FrameRequest {
		return
	}
	req, err := protocol.DecodeRequest(p)
	if err != nil {
		writeResult(st, nil, &protocol.Error{Code: protocol.CodeBadRequest, Message: err.Error()})
		return
	}
	e.lastV.Store(int64(req.V))
	e.lastID.Store(req.ID)
	switch req.Method {
	case protocol.MethodDeviceInfo:
		e.infos.Add(1)
		writeResult(st, protocol.DeviceInfo{Hostname: "testhost", Disks: []protocol.DiskInfo{}}, nil)
	case protocol.MethodUpload:
		var up protocol.UploadParams
		if err := req.DecodeParams(&up); err != nil {
			writeResult(st, nil, &protocol.Error{Code: protocol.CodeBadRequest, Message: err.Error()})
			return
		}
		h := sha256.New()
		var n int64
		for {
			typ, p, err := fr.Next()
			if err == nil && typ == protocol.FrameDigest && up.SHA256Trailer {
				e.trailers.Add(1)
				up.SHA256 = string(p)
				break
			}
			if err != nil || typ != protocol.FrameData {
				return
			}
			if len(p) == 0 {
				break
			}
			h.Write(p)
			n += int64(len(p))
		}
		if sum := hex.EncodeToString(h.Sum(nil)); sum != up.SHA256 {
			writeResult(st, nil, &protocol.Error{Code: protocol.CodeBadRequest, Message: "sha256 mismatch: received " + sum})
			return
		}
		if e.lies.Load() { // a compromised edge reporting another file than it received
			up.SHA256 = strings.Repeat("0", 64)
		}
		writeResult(st, protocol.UploadResult{Path: up.Path, Size: n, SHA256: up.SHA256, Mode: "0644"}, nil)
	case protocol.MethodExec:
		var ep protocol.ExecParams
		if err := req.DecodeParams(&ep); err != nil {
			writeResult(st, nil, &protocol.Error{Code: protocol.CodeBadRequest, Message: err.Error()})
			return
		}
		switch ep.Argv[0] {
		case "echo":
			protocol.WriteFrame(st, protocol.FrameStdout, []byte(strings.Join(ep.Argv[1:], " ")))
			if ep.Stdin {
				for {
					typ, p, err := fr.Next()
					if err != nil || typ != protocol.FrameData {
						return
					}
					if len(p) == 0 {
						break
					}
					protocol.WriteFrame(st, protocol.FrameStdout, p)
				}
			}
			protocol.WriteFrame(st, protocol.FrameStderr, []byte("warn"))
			writeResult(st, protocol.ExecResult{ExitCode: 3}, nil)
		case "sleep": // runs until cancelled, then reports what it captured
			protocol.WriteFrame(st, protocol.FrameStdout, []byte("partial"))
			for {
				typ, _, err := fr.Next()
				if err != nil || typ == protocol.FrameCancel {
					break
				}
			}
			writeResult(st, protocol.ExecResult{ExitCode: -1, Signal: "SIGKILL", Cancelled: true}, nil)
		case "hold": // finishes when the test releases it
			<-e.release
			writeResult(st, protocol.ExecResult{}, nil)
		case "fail":
			writeResult(st, nil, &protocol.Error{Code: protocol.CodePolicy, Message: "not allowed"})
		}
	default:
		writeResult(st, nil, &protocol.Error{Code: protocol.CodeUnknownMethod, Message: req.Method})
	}
}

// Exec resolves ref and runs p on it: the tools' path (Edge, then the handle's RPC) in one
// call for tests.
func (g *Gateway) Exec(ctx context.Context, ref string, p protocol.ExecParams, stdin io.Reader,
	out func(t protocol.FrameType, b []byte)) (protocol.ExecResult, error) {
	h, err := g.Edge(ref)
	if err != nil {
		return protocol.ExecResult{}, err
	}
	return h.Exec(ctx, "", p, stdin, out)
}

// Upload resolves ref and uploads to it (see Exec).
func (g *Gateway) Upload(ctx context.Context, ref string, p protocol.UploadParams, body io.Reader) (protocol.UploadResult, error) {
	h, err := g.Edge(ref)
	if err != nil {
		return protocol.UploadResult{}, err
	}
	return h.Upload(ctx, "", p, body)
}

// DeviceInfo resolves ref and asks for its inventory (see Exec).
func (g *Gateway) DeviceInfo(ctx context.Context, ref string, refresh bool) (protocol.DeviceInfo, error) {
	h, err := g.Edge(ref)
	if err != nil {
		return protocol.DeviceInfo{}, err
	}
	return h.DeviceInfo(ctx, "", refresh)
}
