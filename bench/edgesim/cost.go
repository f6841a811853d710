package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// runCost runs the gateway package in this process (the same code as the binary) with the
// edges in a child process, and reports what one idle edge costs the gateway: goroutines (by
// creator), heap, stacks and resident memory.
func runCost(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("cost", flag.ContinueOnError)
	n := fs.Int("edges", 1000, "simulated edges")
	sources := fs.Int("sources", 8, "loopback source addresses (127.0.0.2 …)")
	settle := fs.Duration("settle", 5*time.Second, "idle time before measuring")
	memProfile := fs.String("memprofile", "", "write a heap profile (in-use bytes by allocation site) to this file")
	bare := fs.Bool("bare", false, "serve the edges with the libraries alone, not the gateway: the floor they set (see bareServer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *n < 1 || *n > scale.MaxEdges {
		return fmt.Errorf("-edges must be 1-%d", scale.MaxEdges)
	}
	if *memProfile != "" {
		runtime.MemProfileRate = 1 // every allocation, so the per-edge figures are exact
	}
	if _, err := scale.RaiseFDLimit(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "edgesim-cost-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ids, err := scale.NewIdentities(*n, "cost")
	if err != nil {
		return err
	}
	authFile := filepath.Join(dir, "authorized_keys")
	if err := keys.WriteFileAtomic(authFile, scale.AuthorizedKeys(ids), 0o600); err != nil {
		return err
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	host, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var addr net.Addr
	var count func() int // edges connected
	if *bare {
		b, err := newBareServer(host)
		if err != nil {
			return err
		}
		defer b.close()
		addr, count = b.ln.Addr(), func() int { return int(b.ready.Load()) }
	} else {
		g, err := gateway.New(gateway.Config{HostKey: host, Bind: "127.0.0.1:0", AuthorizedKeysFile: authFile,
			KeepaliveInterval: 15 * time.Second})
		if err != nil {
			return err
		}
		if addr, err = g.Listen(); err != nil {
			return err
		}
		served := make(chan error, 1)
		go func() { served <- g.Serve(ctx) }()
		defer func() { cancel(); <-served }()
		count = func() int { return len(g.Edges(true)) }
	}

	time.Sleep(500 * time.Millisecond)
	before := measure()
	c := benchConfig{sources: *sources, keepalive: 15 * time.Second, backoffMax: 30 * time.Second}
	stop, err := startChildren(ctx, c, dir, addr.String(), keys.Fingerprint(host.PublicKey()), [][]scale.Identity{ids})
	if err != nil {
		return err
	}
	defer stop()
	start := time.Now()
	for count() < *n {
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("only %d of %d edges connected", count(), *n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	connected := time.Since(start)
	time.Sleep(*settle)
	after := measure()
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			return err
		}
	}
	per := func(a, b int64) string { return fmtBytes((b - a) / int64(*n)) }
	what := "gateway package"
	if *bare {
		what = "libraries alone (-bare)"
	}
	fmt.Fprintf(out, "# edgesim cost: %s in-process, %d idle edges (connected in %v)\n", what, *n, connected.Round(time.Millisecond))
	report(out, "goroutines per edge", fmt.Sprintf("%.2f", float64(after.goroutines-before.goroutines)/float64(*n)), "")
	report(out, "heap in use per edge (after GC)", per(before.heap, after.heap), "")
	report(out, "goroutine stacks per edge", per(before.stack, after.stack), "")
	report(out, "RSS per edge (after GC and FreeOSMemory)", per(before.rss, after.rss), "≤ 64 KiB")
	fmt.Fprintf(out, "per-edge goroutines by creator:\n%s", goroutinesByCreator(*n))
	return nil
}

type memFigures struct {
	goroutines       int
	heap, stack, rss int64
}

// measure collects the garbage, returns freed memory to the OS and reads the figures.
func measure() memFigures {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, _ := scale.RSS(os.Getpid())
	return memFigures{goroutines: runtime.NumGoroutine(), heap: int64(ms.HeapInuse), stack: int64(ms.StackInuse), rss: rss}
}

// goroutinesByCreator counts live goroutines by the function that created them, listing
// those with at least n/2 (the per-edge ones).
func goroutinesByCreator(n int) string {
	var b bytes.Buffer
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	counts := map[string]int{}
	for _, g := range strings.Split(b.String(), "\n\n") {
		top := ""
		if lines := strings.Split(g, "\n"); len(lines) > 1 {
			top = strings.TrimSpace(lines[1])
			if i := strings.LastIndexByte(top, '('); i > 0 {
				top = top[:i]
			}
		}
		creator := "?"
		if i := strings.Index(g, "created by "); i >= 0 {
			creator = strings.Fields(g[i+len("created by "):])[0]
		}
		counts[creator+" → "+top]++
	}
	var keysSorted []string
	for k, c := range counts {
		if c >= n/2 {
			keysSorted = append(keysSorted, k)
		}
	}
	slices.Sort(keysSorted)
	var s strings.Builder
	for _, k := range keysSorted {
		fmt.Fprintf(&s, "  %6.2f  %s\n", float64(counts[k])/float64(n), k)
	}
	return s.String()
}

// writeHeapProfile writes the heap profile to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	return nil
}

// bareServer serves edges with the libraries alone, the least any gateway built on them
// holds per idle edge: an x/crypto/ssh server connection (any key), the tunnel channel
// accepted, a yamux session over it (the gateway's configuration), and one goroutine that
// serves the connection's requests and channels, as the gateway's supervisor does. It opens
// no stream, pulls no inventory and keeps no registry.
type bareServer struct {
	ln    net.Listener
	ready atomic.Int64 // tunnels up
}

func newBareServer(host ssh.Signer) (*bareServer, error) {
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &bareServer{ln: ln}
	ycfg := protocol.YamuxConfig(slog.New(slog.DiscardHandler))
	ycfg.AcceptBacklog = 1
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(nc, cfg, ycfg)
		}
	}()
	return b, nil
}

func (b *bareServer) serve(nc net.Conn, cfg *ssh.ServerConfig, ycfg *yamux.Config) {
	defer nc.Close()
	sc, chans, reqs, err := ssh.NewServerConn(nc, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	nch, ok := <-chans
	if !ok {
		return
	}
	ch, chReqs, err := nch.Accept()
	if err != nil {
		return
	}
	sess, err := yamux.Client(ch, ycfg)
	if err != nil {
		return
	}
	defer sess.Close()
	b.ready.Add(1)
	defer b.ready.Add(-1)
	for reqs != nil || chReqs != nil || chans != nil {
		select {
		case r, ok := <-reqs:
			if !ok {
				reqs = nil
			} else if r.WantReply {
				r.Reply(false, nil)
			}
		case r, ok := <-chReqs:
			if !ok {
				chReqs = nil
			} else if r.WantReply {
				r.Reply(false, nil)
			}
		case c, ok := <-chans:
			if !ok {
				chans = nil
			} else {
				c.Reject(ssh.Prohibited, "one tunnel")
			}
		}
	}
}

// close stops accepting. The connections end with the edges' child process, stopped by the
// deferred stop that runs before this one.
func (b *bareServer) close() { b.ln.Close() }
