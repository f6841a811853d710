package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// recorder is a Metrics that keeps what it was told.
type recorder struct {
	mu         sync.Mutex
	handshakes map[string]int
	rpcs       map[string]int // "method outcome"
	sent, recv int64
}

func newRecorder() *recorder {
	return &recorder{handshakes: map[string]int{}, rpcs: map[string]int{}}
}

func (r *recorder) Handshake(outcome string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.handshakes[outcome]++
}

func (r *recorder) RPC(method, outcome string, d time.Duration, sent, received int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rpcs[method+" "+outcome]++
	r.sent += sent
	r.recv += received
}

func (r *recorder) handshake(o string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handshakes[o]
}

// TestMetricsHooks: handshakes are counted by outcome, RPCs by method and outcome with the
// bytes moved each way.
func TestMetricsHooks(t *testing.T) {
	rec := newRecorder()
	f, _, _ := connected(t, protocol.Hello{}, func(c *Config) { c.Metrics = rec })
	waitFor(t, 5*time.Second, "ok handshake counted", func() bool { return rec.handshake(HandshakeOK) == 1 })

	stranger := newSigner(t)
	if c, _, _, err := sshDial(f.addr, stranger, f.host.PublicKey()); err == nil {
		c.Close()
		t.Fatal("unknown key admitted")
	}
	waitFor(t, 5*time.Second, "unknown_key handshake counted", func() bool { return rec.handshake(HandshakeUnknownKey) == 1 })

	ctx := context.Background()
	if _, err := f.g.Exec(ctx, "pi", execParams("echo", "hello", "world"), strings.NewReader("in"), nil); err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("u"), 1000)
	sum := sha256.Sum256(content)
	if _, err := f.g.Upload(ctx, "pi", protocol.UploadParams{Path: "/tmp/x", Size: 1000, SHA256: hex.EncodeToString(sum[:]), Mode: 0o644}, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	f.g.Exec(ctx, "pi", execParams("fail"), nil, nil)
	f.g.Exec(ctx, "nope", execParams("true"), nil, nil)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := map[string]int{"exec ok": 1, "upload ok": 1, "exec edge_error": 1, "resolve unknown_edge": 1}
	for k, n := range want {
		if rec.rpcs[k] != n {
			t.Errorf("rpcs[%q] = %d, want %d (all: %v)", k, rec.rpcs[k], n, rec.rpcs)
		}
	}
	if rec.sent != int64(len("in")+len(content)) {
		t.Errorf("sent %d bytes, want %d", rec.sent, len("in")+len(content))
	}
	if rec.recv != int64(len("hello worldin")+len("warn")) { // the test edge echoes stdin
		t.Errorf("received %d bytes, want %d (stdout + stderr)", rec.recv, len("hello worldin")+len("warn"))
	}
}
