package forward

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// Merged is the fleet the MCP tools see in GATEWAY_MODE=both (or forward): the companion
// gateway's edges and the forward edges together. It embeds the *gateway.Gateway, so it keeps
// every other method the tools use (Info, RegisterKey and the key administration), and
// overrides the edge listing and resolution. A name known to both is refused rather than
// guessed: the call could otherwise reach the wrong device.
type Merged struct {
	*gateway.Gateway
	Forward *Fleet
}

// Edges merges both listings, sorted by name.
func (m *Merged) Edges(connectedOnly bool) []gateway.EdgeStatus {
	out := append(m.Gateway.Edges(connectedOnly), m.Forward.Edges(connectedOnly)...)
	slices.SortStableFunc(out, func(a, b gateway.EdgeStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Kind says which kind of edge a name or fingerprint is: Kind ("forward"),
// gateway.KindAgentless or gateway.KindCompanion.
func (m *Merged) Kind(ref string) string {
	if m.Forward.Has(ref) {
		return Kind
	}
	if !m.Gateway.Knows(ref) {
		return gateway.KindCompanion
	}
	if e, err := m.Gateway.Edge(ref); err == nil {
		if k, ok := e.(interface{ Kind() string }); ok {
			return k.Kind()
		}
	}
	return gateway.KindCompanion
}

// Edge resolves ref among the forward edges and the companion ones.
func (m *Merged) Edge(ref string) (gateway.Edge, error) {
	if !m.Forward.Has(ref) {
		return m.Gateway.Edge(ref)
	}
	if m.Gateway.Knows(ref) {
		e, err := m.Gateway.Edge(ref)
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %q names both companion edge %s and a forward edge of %s: rename one",
			gateway.ErrUnknownEdge, ref, e.Fingerprint(), m.Forward.Path())
	}
	return m.Forward.Edge(ref)
}

// Inventories merges both inventories, sorted by name.
func (m *Merged) Inventories(connectedOnly bool) []gateway.EdgeInventory {
	out := append(m.Gateway.Inventories(connectedOnly), m.Forward.Inventories(connectedOnly)...)
	slices.SortStableFunc(out, func(a, b gateway.EdgeInventory) int { return cmp.Compare(a.Status.Name, b.Status.Name) })
	return out
}

// WatchEdges signals (coalesced) when an edge of either kind connects or disconnects, until
// ctx ends.
func (m *Merged) WatchEdges(ctx context.Context) <-chan struct{} {
	return gateway.MergeWatches(ctx, m.Gateway.WatchEdges(ctx), m.Forward.WatchEdges(ctx))
}
