package localfleet

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The two directions of a Proxy, as toxiproxy names them.
const (
	Upstream   = "upstream"   // from the dialling side (the edge) to the upstream (the gateway)
	Downstream = "downstream" // from the upstream (the gateway) back to the dialling side
)

// Proxy is the fleet's fault proxy: an in-process toxiproxy listening on a port the kernel
// picks on 127.0.0.1 and forwarding every connection to one upstream address. Toxics
// (toxiproxy's faults: latency, bandwidth, timeout, reset_peer, …) are added and removed
// while connections run.
type Proxy struct {
	p *toxiproxy.Proxy
}

// NewProxy starts a proxy in front of upstream (host:port). The caller must Close it.
func NewProxy(upstream string) (*Proxy, error) {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "localfleet", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("start toxiproxy in front of %s: %w", upstream, err)
	}
	return &Proxy{p: p}, nil
}

// Addr is the host:port to dial instead of the upstream.
func (p *Proxy) Addr() string { return p.p.Listen }

// AddToxic adds a toxic of type typ with attrs (toxiproxy's attributes of that type) to each
// of streams, Upstream and Downstream when none is given. Each is named typ_stream, which is
// what RemoveToxic removes.
func (p *Proxy) AddToxic(typ string, attrs map[string]any, streams ...string) error {
	for _, stream := range orBoth(streams) {
		b, err := json.Marshal(map[string]any{"name": typ + "_" + stream, "type": typ, "stream": stream, "attributes": attrs})
		if err != nil {
			return err
		}
		if _, err := p.p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
			return fmt.Errorf("add toxic %s on %s: %w", typ, stream, err)
		}
	}
	return nil
}

// RemoveToxic removes what AddToxic(typ, …, streams...) added; the link then carries bytes
// unharmed again.
func (p *Proxy) RemoveToxic(typ string, streams ...string) error {
	for _, stream := range orBoth(streams) {
		if err := p.p.Toxics.RemoveToxic(context.Background(), typ+"_"+stream); err != nil {
			return fmt.Errorf("remove toxic %s on %s: %w", typ, stream, err)
		}
	}
	return nil
}

// Upstream is the address the proxy forwards new connections to.
func (p *Proxy) Upstream() string {
	p.p.Lock()
	defer p.p.Unlock()
	return p.p.Upstream
}

// SetUpstream re-points the proxy at upstream (host:port), as a load balancer fails over:
// the connections through it are closed, and it listens again on the same address, so that
// what dialled Addr reconnects to the new upstream. Toxics stay.
func (p *Proxy) SetUpstream(upstream string) error {
	p.p.Lock()
	listen := p.p.Listen
	p.p.Unlock()
	if err := p.p.Update(&toxiproxy.Proxy{Listen: listen, Upstream: upstream, Enabled: true}); err != nil {
		return fmt.Errorf("re-point toxiproxy %s at %s: %w", listen, upstream, err)
	}
	return nil
}

// Close stops listening and closes every connection through the proxy.
func (p *Proxy) Close() { p.p.Stop() }

// orBoth is streams, or both directions when empty.
func orBoth(streams []string) []string {
	if len(streams) == 0 {
		return []string{Upstream, Downstream}
	}
	return streams
}
