package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// BenchmarkHandshake measures what one edge connection costs, both sides in this process: TCP
// connect, SSH handshake (key exchange, host key signature, public key authentication), the
// tunnel channel with its Hello, the yamux session and the gateway's registration and audit
// line, then the close. Sub-benchmarks choose the key exchange the client asks for (the
// gateway offers the library's default list); "inventory" also keeps each connection until the
// gateway's first inventory pull was answered, as every real connection is. cpu-ms/op is the
// process's user+system CPU per connection (gateway and client together), the figure that
// matters on a shared machine; ns/op depends on the parallelism.
//
//	go test -run '^$' -bench Handshake -benchtime 2000x -cpuprofile /tmp/hs.prof ./agent/gateway/
func BenchmarkHandshake(b *testing.B) {
	for _, c := range []struct {
		name      string
		kex       []string
		inventory bool
	}{
		{"kex=default", nil, false},
		{"kex=" + ssh.KeyExchangeCurve25519, []string{ssh.KeyExchangeCurve25519}, false},
		{"kex=" + ssh.KeyExchangeMLKEM768X25519, []string{ssh.KeyExchangeMLKEM768X25519}, false},
		{"inventory/kex=default", nil, true},
	} {
		b.Run(c.name, func(b *testing.B) { benchHandshake(b, c.kex, c.inventory) })
	}
}

func benchHandshake(b *testing.B, kex []string, inventory bool) {
	// One key per connection: a key that reconnects within shortSession draws a penalty, and
	// eight penalized keys penalize their address, which would measure refusals instead.
	dir := b.TempDir()
	signers := make([]ssh.Signer, b.N)
	var ak strings.Builder
	for i := range signers {
		signers[i] = newSigner(b)
		ak.WriteString(authLine(signers[i], ""))
	}
	host := newSigner(b)
	akPath := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(akPath, []byte(ak.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	// Info level, as in production (the lines themselves are discarded).
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	al, err := audit.Open(filepath.Join(dir, "audit.jsonl"), log)
	if err != nil {
		b.Fatal(err)
	}
	defer al.Close()
	// Every client comes from 127.0.0.1: the per-source cap must not count them as a flood.
	g, err := New(Config{HostKey: host, Bind: "127.0.0.1:0", AuthorizedKeysFile: akPath, Version: "bench",
		Audit: al, Log: log, KeepaliveInterval: time.Minute, InventoryInterval: -1, PerSourceMaxStartups: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	addr, err := g.Listen()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	}()

	ccfg := &ssh.ClientConfig{User: "edge", HostKeyCallback: ssh.FixedHostKey(host.PublicKey()),
		Timeout: 10 * time.Second, Config: ssh.Config{KeyExchanges: kex}}
	hello, _ := json.Marshal(protocol.Hello{Protocol: protocol.Version, Version: "bench", OS: "linux", Arch: "amd64", MaxConcurrent: 8})
	var next, failed atomic.Int64
	var firstErr atomic.Value
	// 32 clients at once (64 with inventory: each connection waits up to 1 s for the pull),
	// within the gateway's 64 handshake slots, whatever GOMAXPROCS.
	clientsAtOnce := 32
	if inventory {
		clientsAtOnce = 64
	}
	b.SetParallelism(max(1, clientsAtOnce/runtime.GOMAXPROCS(0)))
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			cfg := *ccfg
			cfg.Auth = []ssh.AuthMethod{ssh.PublicKeys(signers[next.Add(1)-1])}
			if err := benchConnect(addr.String(), &cfg, hello, inventory); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d connections failed, first: %v", n, b.N, firstErr.Load())
	}
}

// benchConnect is one edge connection: handshake, tunnel, yamux; with inventory it waits for
// the gateway's first device_info call and answers it, else it closes once the tunnel is up.
func benchConnect(addr string, cfg *ssh.ClientConfig, hello []byte, inventory bool) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	if err != nil {
		nc.Close()
		return err
	}
	defer c.Close()
	go ssh.DiscardRequests(reqs)
	go func() {
		for nch := range chans {
			nch.Reject(ssh.Prohibited, "no")
		}
	}()
	ch, creqs, err := c.OpenChannel(protocol.ChannelType, hello)
	if err != nil {
		return err
	}
	go ssh.DiscardRequests(creqs)
	sess, err := yamux.Server(ch, protocol.YamuxConfig(slog.New(slog.DiscardHandler)))
	if err != nil {
		return err
	}
	defer sess.Close()
	if !inventory {
		return nil
	}
	st, err := sess.AcceptStream()
	if err != nil {
		return err
	}
	e := &testEdge{}
	e.serve(st)
	return nil
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEdges lists a fleet of 10,000 connected edges, as every get_status, find_edges and
// the MCP resource sync (up to 5 times a second while edges come and go) do.
func BenchmarkEdges(b *testing.B) {
	const n = 10000
	dir := b.TempDir()
	var ak strings.Builder
	fps := make([]string, n)
	for i := range fps {
		s := newSigner(b)
		fps[i] = ssh.FingerprintSHA256(s.PublicKey())
		ak.WriteString(authLine(s, ""))
	}
	akPath := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(akPath, []byte(ak.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	g, err := New(Config{HostKey: newSigner(b), AuthorizedKeysFile: akPath})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i, fp := range fps {
		e := &edge{fp: fp, remote: "127.0.0.2:40000", since: now,
			hello: protocol.Hello{Protocol: protocol.Version, Name: "sim-" + strconv.Itoa(n-i), Version: "edgesim", OS: "linux", Arch: "amd64", MaxConcurrent: 32}}
		e.lastSeen.Store(now.UnixNano())
		g.reg.add(e, "", g.keys.boundTo)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if got := len(g.Edges(false)); got != n {
			b.Fatalf("%d edges listed, want %d", got, n)
		}
	}
}
