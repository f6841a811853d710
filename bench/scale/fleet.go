// Package scale runs many simulated edges in one process and drives a real gateway binary,
// for the scale benchmarks (bench/edgesim) and the fault suite (test/). A simulated edge is
// the edge's own code: edge/tunnel for the connection and edge/rpc for the RPCs, each with
// its own key and SSH connection; only the process is shared.
package scale

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/edge/rpc"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/edge/tunnel"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// MaxEdges bounds one fleet: beyond it a process runs out of descriptors anyway.
const MaxEdges = 100_000

// Identity is one simulated edge's name and key.
type Identity struct {
	Name   string
	Key    ed25519.PrivateKey
	Signer ssh.Signer
}

// NewIdentities makes n fresh ed25519 identities named <prefix>-00000, <prefix>-00001, …
func NewIdentities(n int, prefix string) ([]Identity, error) {
	if n < 0 || n > MaxEdges {
		return nil, fmt.Errorf("edge count %d out of range (0-%d)", n, MaxEdges)
	}
	if !protocol.ValidName(prefix + "-00000") {
		return nil, fmt.Errorf("prefix %q does not make valid edge names", prefix)
	}
	ids := make([]Identity, n)
	for i := range ids {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			return nil, fmt.Errorf("signer: %w", err)
		}
		ids[i] = Identity{Name: fmt.Sprintf("%s-%05d", prefix, i), Key: priv, Signer: s}
	}
	return ids, nil
}

// AuthorizedKeys is the authorized_keys text for ids, each key bound to its name.
func AuthorizedKeys(ids []Identity) []byte {
	var b strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&b, "name=%q %s %s\n", id.Name, keys.AuthorizedLine(id.Signer.PublicKey()), id.Name)
	}
	return []byte(b.String())
}

// FleetConfig says where simulated edges connect and how they behave.
type FleetConfig struct {
	Gateway           string        // host:port of the gateway (or of a proxy in front of it)
	Also              []string      // fail-over gateways (host:port), tried in turn after Gateway
	HostKey           string        // the gateway's host key fingerprint (SHA256:…), pinned
	Sources           []string      // local IPs dialled from, round robin (e.g. 127.0.0.2…); empty: any
	KeepaliveInterval time.Duration // as EDGE_KEEPALIVE_INTERVAL
	BackoffMax        time.Duration // as EDGE_BACKOFF_MAX
	StateDir          string        // the edges' shared EDGE_STATE_DIR (rpc.log); "" keeps none
	MaxConcurrent     int           // RPCs each edge serves at once; 0 means 32
	Log               *slog.Logger  // nil discards
}

// Fleet is a set of running simulated edges.
type Fleet struct {
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	inventory *rpc.Inventory // shared by every simulated edge
	errMu     sync.Mutex
	errs      []error
}

// StartFleet starts one edge per identity; each keeps its tunnel up until Stop.
func StartFleet(ctx context.Context, cfg FleetConfig, ids []Identity) (*Fleet, error) {
	pins, err := keys.ParsePins(cfg.HostKey)
	if err != nil {
		return nil, fmt.Errorf("gateway host key: %w", err)
	}
	if cfg.Gateway == "" {
		return nil, errors.New("no gateway address")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var sources []net.IP
	for _, s := range cfg.Sources {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("source address %q is not an IP", s)
		}
		sources = append(sources, ip)
	}
	if cfg.MaxConcurrent < 1 {
		cfg.MaxConcurrent = 32
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &Fleet{cancel: cancel, inventory: &rpc.Inventory{}}
	for i, id := range ids {
		var src net.IP
		if len(sources) > 0 {
			src = sources[i%len(sources)]
		}
		f.wg.Go(func() { f.runEdge(ctx, cfg, pins, id, src) })
	}
	return f, nil
}

// runEdge is one simulated edge: the edge's RPC server behind the edge's tunnel.
func (f *Fleet) runEdge(ctx context.Context, cfg FleetConfig, pins *keys.Pins, id Identity, src net.IP) {
	srv := rpc.NewServer(rpc.Config{
		AllowShell:    true,
		MaxConcurrent: cfg.MaxConcurrent,
		StateDir:      cfg.StateDir,
		Version:       "edgesim",
		Name:          id.Name,
		Inventory:     f.inventory, // one machine: probe it once, not once per simulated edge
	}, cfg.Log)
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	err := tunnel.Run(ctx, tunnel.Config{
		Gateways: append([]string{cfg.Gateway}, cfg.Also...),
		Pins:     pins,
		Signer:   id.Signer,
		Hello: protocol.Hello{
			Protocol: protocol.Version, Name: id.Name, Version: "edgesim",
			OS: runtime.GOOS, Arch: runtime.GOARCH, MaxConcurrent: cfg.MaxConcurrent,
		},
		KeepaliveInterval: cfg.KeepaliveInterval,
		BackoffMax:        cfg.BackoffMax,
		Dial:              d.DialContext,
	}, func(ctx context.Context, st io.ReadWriteCloser) { srv.ServeStream(ctx, st) }, cfg.Log)
	if err != nil {
		f.errMu.Lock()
		f.errs = append(f.errs, fmt.Errorf("edge %s: %w", id.Name, err))
		f.errMu.Unlock()
	}
}

// Stop closes every tunnel and waits for the edges; it returns what made any of them fail.
func (f *Fleet) Stop() error {
	f.cancel()
	f.wg.Wait()
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return errors.Join(f.errs...)
}
