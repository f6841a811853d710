package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
)

// runEdges is the child process: it runs the identities of one file until ctx ends or its
// stdin closes.
func runEdges(ctx context.Context, args []string, stdin io.Reader, log *slog.Logger) error {
	fs := flag.NewFlagSet("edges", flag.ContinueOnError)
	gw := fs.String("gateway", "", "gateway host:port, or a comma-separated list: the first, then fail-over ones tried in turn")
	hostKey := fs.String("host-key", "", "gateway host key fingerprint (SHA256:…)")
	idsFile := fs.String("ids", "", "identities file (written by edgesim bench)")
	sources := fs.Int("sources", 8, "loopback source addresses to spread over (127.0.0.2 …)")
	keepalive := fs.Duration("keepalive", 15*time.Second, "EDGE_KEEPALIVE_INTERVAL")
	backoff := fs.Duration("backoff-max", 30*time.Second, "EDGE_BACKOFF_MAX")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := scale.RaiseFDLimit(); err != nil {
		return err
	}
	first, rest, _ := strings.Cut(*gw, ",")
	var also []string
	if rest != "" {
		also = strings.Split(rest, ",")
	}
	ids, err := scale.ReadIdentities(*idsFile)
	if err != nil {
		return err
	}
	fleet, err := scale.StartFleet(ctx, scale.FleetConfig{
		Gateway: first, Also: also, HostKey: *hostKey, Sources: loopbackSources(*sources),
		KeepaliveInterval: *keepalive, BackoffMax: *backoff,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	}, ids)
	if err != nil {
		return err
	}
	log.Info("edges started", "count", len(ids))
	<-stdinClosed(ctx, stdin).Done()
	return fleet.Stop()
}

// loopbackSources is n source addresses 127.0.0.2, 127.0.0.3, … (at most 250).
func loopbackSources(n int) []string {
	n = max(1, min(n, 250))
	out := make([]string, n)
	for i := range out {
		out[i] = net.IPv4(127, 0, 0, byte(2+i)).String()
	}
	return out
}

// split cuts ids into n nearly equal parts.
func split(ids []scale.Identity, n int) [][]scale.Identity {
	n = max(1, min(n, len(ids)))
	out := make([][]scale.Identity, n)
	for i, id := range ids {
		out[i%n] = append(out[i%n], id)
	}
	return out
}

// fmtBytes prints a byte count in KiB or MiB.
func fmtBytes(b int64) string {
	if b >= 10<<20 || b <= -10<<20 {
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
}
