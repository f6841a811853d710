// Command edgesim runs many simulated edges in one process against a real mcp-ssh-gateway and
// measures how the gateway holds them (docs/BENCHMARKS-SCALE.md). The edges are the edge's
// own code (edge/tunnel, edge/rpc via bench/scale), each with its own key and SSH connection,
// spread over several loopback source addresses.
//
//	edgesim bench -edges 10000 -procs 2 -scenarios idle,fanout,restart,upload
//	edgesim cost  -edges 1000          # goroutines and bytes the gateway spends per idle edge
//	edgesim cluster -edges 10000       # three gateways sharing the fleet through NATS
//	edgesim edges -gateway 127.0.0.1:2222 -host-key SHA256:… -ids FILE   # (a child process)
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: edgesim bench|cost|edges [flags] (-h for flags)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "bench":
		err = runBench(ctx, os.Args[2:], os.Stdout, log)
	case "cost":
		err = runCost(ctx, os.Args[2:], os.Stdout, log)
	case "edges":
		err = runEdges(ctx, os.Args[2:], os.Stdin, log)
	case "bare":
		err = runBare(ctx, os.Stdin, os.Stdout)
	case "cluster":
		err = runCluster(ctx, os.Args[2:], os.Stdout, log)
	default:
		err = fmt.Errorf("unknown command %q: bench, cost or edges", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgesim: %v\n", err)
		os.Exit(1)
	}
}

// stdinClosed is done when r reaches EOF: a child stops when its parent goes away.
func stdinClosed(ctx context.Context, r io.Reader) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		io.Copy(io.Discard, r)
		cancel()
	}()
	return ctx
}
