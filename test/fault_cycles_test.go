package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	gw "github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/edge/tunnel"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// TestFaultConnectCycles: 1,000 connect/disconnect cycles of real edge tunnels against an
// in-process gateway leave no goroutine and no file descriptor behind, neither while the
// gateway keeps running nor after it stops. Not parallel: it counts the whole process.
func TestFaultConnectCycles(t *testing.T) {
	const workers, cycles = 10, 1000
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fdsStart, err := scale.OpenFDs(0)
	if err != nil {
		t.Fatal(err)
	}

	// A fresh key per cycle: the same key reconnecting a hundred times in a row would be
	// penalized as a reconnect flood (TestPenalizedKeyIsHeld in agent/gateway).
	ids, err := scale.NewIdentities(workers+cycles, "cycle")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	authFile := filepath.Join(dir, "authorized_keys")
	if err := keys.WriteFileAtomic(authFile, scale.AuthorizedKeys(ids), 0o600); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	host, _ := ssh.NewSignerFromKey(priv)
	g, err := gw.New(gw.Config{
		HostKey: host, Bind: "127.0.0.1:0", AuthorizedKeysFile: authFile,
		KeepaliveInterval: time.Second, HandshakeTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := g.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	pins, _ := keys.ParsePins(keys.Fingerprint(host.PublicKey()))
	quiet := slog.New(slog.DiscardHandler)

	connected := func(fp string) bool {
		for _, e := range g.Edges(true) {
			if e.Fingerprint == fp {
				return true
			}
		}
		return false
	}
	poll := func(limit time.Duration, cond func() bool) bool {
		deadline := time.Now().Add(limit)
		for !cond() {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(2 * time.Millisecond)
		}
		return true
	}
	// cycle connects id's edge, waits until the gateway lists it, disconnects it and waits
	// until the gateway has dropped it.
	cycle := func(id scale.Identity) error {
		fp := keys.Fingerprint(id.Signer.PublicKey())
		cctx, ccancel := context.WithCancel(ctx)
		defer ccancel()
		done := make(chan error, 1)
		go func() {
			done <- tunnel.Run(cctx, tunnel.Config{
				Gateways: []string{addr.String()}, Pins: pins, Signer: id.Signer,
				Hello: protocol.Hello{Protocol: protocol.Version, Name: id.Name, Version: "cycle",
					OS: runtime.GOOS, Arch: runtime.GOARCH, MaxConcurrent: 4},
				KeepaliveInterval: time.Second, BackoffMax: time.Second,
			}, func(_ context.Context, st io.ReadWriteCloser) { st.Close() }, quiet)
		}()
		up := poll(10*time.Second, func() bool { return connected(fp) })
		ccancel()
		select {
		case err := <-done:
			if err != nil {
				return err
			}
		case <-time.After(10 * time.Second):
			return fmt.Errorf("edge %s: Run did not return 10 s after cancel", id.Name)
		}
		if !up {
			return fmt.Errorf("edge %s never connected", id.Name)
		}
		if !poll(10*time.Second, func() bool { return !connected(fp) }) {
			return fmt.Errorf("edge %s still listed 10 s after it disconnected", id.Name)
		}
		return nil
	}
	var used atomic.Int64
	run := func(n int) error {
		var wg sync.WaitGroup
		errs := make([]error, workers)
		for w := range workers {
			wg.Go(func() {
				for range n {
					if errs[w] = cycle(ids[used.Add(1)-1]); errs[w] != nil {
						return
					}
				}
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}

	// Warm up once per worker, then take the baseline with the gateway serving.
	if err := run(1); err != nil {
		t.Fatal(err)
	}
	fdsServing, _ := scale.OpenFDs(0)
	grServing := runtime.NumGoroutine()
	start := time.Now()
	if err := run(cycles / workers); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d connect/disconnect cycles in %v", cycles, time.Since(start).Round(time.Millisecond))
	var fds, gr int
	settled := poll(10*time.Second, func() bool {
		fds, _ = scale.OpenFDs(0)
		gr = runtime.NumGoroutine()
		return fds <= fdsServing && gr <= grServing
	})
	if !settled {
		t.Errorf("after %d cycles with the gateway up: %d descriptors (baseline %d), %d goroutines (baseline %d)",
			cycles, fds, fdsServing, gr, grServing)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return 15 s after cancel")
	}
	if !poll(5*time.Second, func() bool { fds, _ = scale.OpenFDs(0); return fds <= fdsStart }) {
		t.Errorf("after the gateway stopped: %d descriptors open, %d before it started", fds, fdsStart)
	}
}
