// Command demo is what `make demo` runs: it starts a throw-away gateway and one local edge on
// loopback, calls the MCP tools the way an MCP client would, prints what they return and stops
// everything it started. It builds nothing itself: it runs the binaries `make build` wrote.
//
// Usage:
//
//	go run ./test/demo [-gateway bin/mcp-ssh-gateway] [-edge bin/mcp-ssh-edge] [-timeout 2m]
//
// The binary paths default to $GATEWAY_BIN and $EDGE_BIN, else to $BIN_DIR (or bin/) joined
// with the binary's name.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// edgeName is the name bound to the demo edge's key in authorized_keys.
const edgeName = "demo-edge"

// options are the demo's command-line settings.
type options struct {
	gatewayBin string
	edgeBin    string
	timeout    time.Duration
	keep       bool
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()

	if err := run(ctx, opts); err != nil {
		fmt.Fprintf(os.Stderr, "demo: FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("demo: all calls succeeded; gateway and edge stopped, temporary files removed")
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.gatewayBin, "gateway", localfleet.DefaultBin("GATEWAY_BIN", "mcp-ssh-gateway"), "path of the mcp-ssh-gateway binary (env GATEWAY_BIN)")
	fs.StringVar(&o.edgeBin, "edge", localfleet.DefaultBin("EDGE_BIN", "mcp-ssh-edge"), "path of the mcp-ssh-edge binary (env EDGE_BIN)")
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (keys, state, audit log) for inspection")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q (see -help)", fs.Args())
	}
	if o.timeout <= 0 {
		return o, errors.New("-timeout must be positive")
	}
	return o, localfleet.ResolveBinaries(&o.gatewayBin, &o.edgeBin)
}

// run sets up, calls the tools and always tears down what it started.
func run(ctx context.Context, o options) (err error) {
	dir, err := os.MkdirTemp("", "mcp-ssh-gateway-demo-")
	if err != nil {
		return fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if o.keep {
			slog.Info("kept temporary directory", "dir", dir)
			return
		}
		if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
			err = fmt.Errorf("remove temporary directory: %w", rmErr)
		}
	}()

	fleet, err := localfleet.Prepare(ctx, localfleet.Config{
		Dir:     dir,
		EdgeBin: o.edgeBin,
		Edges:   []localfleet.EdgeSpec{{Name: edgeName, Labels: "env=demo", ReportedLabels: "site=laptop"}},
		Log:     os.Stderr, // the gateway's and the edge's warnings show beside the demo's lines
		Logger:  slog.Default(),
	})
	if err != nil {
		return err
	}

	gw, err := localfleet.StartGateway(ctx, fleet, o.gatewayBin)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := gw.Close(); cerr != nil {
			slog.Warn("gateway did not stop cleanly", "err", cerr)
		}
	}()

	edge, err := fleet.StartEnrolled(gw.SSHAddr(), edgeName)
	if err != nil {
		return err
	}
	defer edge.Stop()

	return tour(ctx, gw, edge, fleet)
}
