package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Local is the fleet of this gateway alone (*gateway.Gateway, or the merged companion and
// forward fleet): what Fleet asks first.
type Local interface {
	Info() gateway.Info
	Edges(connectedOnly bool) []gateway.EdgeStatus
	Edge(ref string) (gateway.Edge, error)
	RegisterKey(line, name string, labels map[string]string) (gateway.KeyAdded, error)
	Inventories(connectedOnly bool) []gateway.EdgeInventory
	WatchEdges(ctx context.Context) <-chan struct{}
}

// inventoriesWait bounds how long find_edges waits for the other gateways' inventories.
const inventoriesWait = 3 * time.Second

// maxInventoriesBytes bounds one gateway's inventories as received (30,000 edges of a few
// hundred bytes each, with room).
const maxInventoriesBytes = 64 << 20

// Fleet is the whole cluster's fleet as the MCP tools see it: this gateway's own edges, and
// those connected to the other gateways, reached through them. Key changes go to this
// gateway (KeyAdmin methods are the embedded gateway's) and reach the others through the
// key sync.
type Fleet struct {
	*gateway.Gateway       // key administration, drained, metrics
	Local            Local // this gateway's fleet (the Gateway, or merged with forward edges)
	Node             *Node
}

// Info implements the tools' Fleet.
func (f *Fleet) Info() gateway.Info {
	i := f.Local.Info()
	i.Cluster = f.Node.Status()
	return i
}

// RegisterKey implements the tools' Fleet.
func (f *Fleet) RegisterKey(line, name string, labels map[string]string) (gateway.KeyAdded, error) {
	return f.Local.RegisterKey(line, name, labels)
}

// Edges lists this gateway's edges and the ones connected elsewhere: a key known here but
// connected to another gateway is listed once, as connected there.
func (f *Fleet) Edges(connectedOnly bool) []gateway.EdgeStatus {
	local := f.Local.Edges(connectedOnly)
	remote := f.Node.remoteStatuses()
	if len(remote) == 0 {
		return local
	}
	elsewhere := make(map[string]gateway.EdgeStatus, len(remote))
	for _, r := range remote {
		st := r.Status
		st.Gateway = r.Gateway
		elsewhere[st.Fingerprint] = st
	}
	out := make([]gateway.EdgeStatus, 0, len(local)+len(remote))
	for _, st := range local {
		if st.Connected || elsewhere[st.Fingerprint].Fingerprint == "" {
			if st.Connected {
				delete(elsewhere, st.Fingerprint) // this gateway's session is the live one
			}
			out = append(out, st)
		}
	}
	for _, st := range elsewhere {
		out = append(out, st)
	}
	slices.SortStableFunc(out, func(a, b gateway.EdgeStatus) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Fingerprint, b.Fingerprint)
	})
	return out
}

// Edge resolves ref: an edge connected here first, then one connected to another gateway,
// then one known here but offline everywhere.
func (f *Fleet) Edge(ref string) (gateway.Edge, error) {
	h, err := f.Local.Edge(ref)
	if err == nil && h.Connected() {
		return h, nil
	}
	key := strings.TrimSpace(ref)
	if h != nil {
		key = h.Fingerprint()
	}
	for _, k := range []string{key, strings.TrimSpace(ref)} {
		r, found, alive := f.Node.routeOf(k)
		switch {
		case alive:
			return &remoteEdge{n: f.Node, r: r}, nil
		case found && (h == nil || !h.Connected()):
			return nil, &gateway.UnreachableError{Edge: r.Status.Name, Gateway: r.Gateway,
				Reason: fmt.Sprintf("it has not been heard from for %s (it may have stopped: its edges reconnect to the other gateways)",
					f.Node.silentFor(r.Gateway).Round(time.Second))}
		}
	}
	if err != nil {
		return nil, err
	}
	return &offlineEdge{Edge: h, n: f.Node}, nil
}

// offlineEdge is an edge known here and connected nowhere when it was resolved. Like the
// gateway's own handles it holds the identity, not the tunnel: each call goes where the edge
// is connected by then, here or on another gateway (a call made just after a restart may
// wait for its edge to come back, and it may come back elsewhere).
type offlineEdge struct {
	gateway.Edge // the handle of this gateway
	n            *Node
}

// now is where the edge is connected now: this gateway's handle, or a remote one.
func (e *offlineEdge) now() gateway.Edge {
	if !e.Edge.Connected() {
		if r, _, alive := e.n.routeOf(e.Edge.Fingerprint()); alive {
			return &remoteEdge{n: e.n, r: r}
		}
	}
	return e.Edge
}

func (e *offlineEdge) Connected() bool { return e.now().Connected() }
func (e *offlineEdge) HeldBy() string  { return gateway.HeldBy(e.now()) }

func (e *offlineEdge) Exec(ctx context.Context, rid string, p protocol.ExecParams, stdin io.Reader,
	out func(t protocol.FrameType, b []byte)) (protocol.ExecResult, error) {
	return e.now().Exec(ctx, rid, p, stdin, out)
}
func (e *offlineEdge) Upload(ctx context.Context, rid string, p protocol.UploadParams, body io.Reader) (protocol.UploadResult, error) {
	return e.now().Upload(ctx, rid, p, body)
}
func (e *offlineEdge) Download(ctx context.Context, rid string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error) {
	return e.now().Download(ctx, rid, p, w)
}
func (e *offlineEdge) DeviceInfo(ctx context.Context, rid string, refresh bool) (protocol.DeviceInfo, error) {
	return e.now().DeviceInfo(ctx, rid, refresh)
}
func (e *offlineEdge) JobStart(ctx context.Context, rid string, p protocol.JobStartParams) (protocol.JobStatus, error) {
	return e.now().JobStart(ctx, rid, p)
}
func (e *offlineEdge) JobGet(ctx context.Context, rid string, p protocol.JobGetParams) (protocol.JobStatus, error) {
	return e.now().JobGet(ctx, rid, p)
}
func (e *offlineEdge) JobCancel(ctx context.Context, rid, id string) (protocol.JobStatus, error) {
	return e.now().JobCancel(ctx, rid, id)
}
func (e *offlineEdge) JobList(ctx context.Context, rid string) (protocol.JobList, error) {
	return e.now().JobList(ctx, rid)
}

// Inventories lists this gateway's inventories with the other gateways' (asked for at once,
// each bounded by inventoriesWait; a gateway that does not answer in time leaves its edges
// listed without an inventory).
func (f *Fleet) Inventories(connectedOnly bool) []gateway.EdgeInventory {
	local := f.Local.Inventories(connectedOnly)
	remote := f.Node.remoteStatuses()
	if len(remote) == 0 {
		return local
	}
	holders := map[string][]route{}
	for _, r := range remote {
		holders[r.Gateway] = append(holders[r.Gateway], r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), inventoriesWait)
	defer cancel()
	var mu sync.Mutex
	got := map[string]gateway.EdgeInventory{}
	var wg sync.WaitGroup
	for id, rs := range holders {
		wg.Go(func() {
			invs, err := f.Node.inventoriesOf(ctx, rs[0])
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				f.Node.log.Warn("inventories of another gateway not read", "gateway", id, "err", err)
			}
			for _, inv := range invs {
				got[inv.Status.Fingerprint] = inv
			}
		})
	}
	wg.Wait()
	statuses := f.Edges(connectedOnly)
	byFP := make(map[string]gateway.EdgeInventory, len(local))
	for _, inv := range local {
		byFP[inv.Status.Fingerprint] = inv
	}
	out := make([]gateway.EdgeInventory, 0, len(statuses))
	for _, st := range statuses {
		inv, ok := byFP[st.Fingerprint]
		if st.Gateway != "" && st.Gateway != f.Node.ID() {
			inv, ok = got[st.Fingerprint]
			inv.Status = st
		}
		if !ok {
			inv = gateway.EdgeInventory{Status: st}
		}
		out = append(out, inv)
	}
	return out
}

// inventoriesOf asks the gateway of r for the inventories of its edges.
func (n *Node) inventoriesOf(ctx context.Context, r route) ([]gateway.EdgeInventory, error) {
	var buf strings.Builder
	onData := func(m []byte) error {
		if buf.Len()+len(m) > maxInventoriesBytes {
			return io.ErrShortBuffer
		}
		buf.Write(m)
		return nil
	}
	var done struct{}
	on := map[string]func(*nats.Msg) error{kindData: func(m *nats.Msg) error { return onData(m.Data) }}
	if err := n.relayCall(ctx, r, openCall{Op: opInventories}, nil, on, &done); err != nil {
		return nil, err
	}
	var out []gateway.EdgeInventory
	return out, json.Unmarshal([]byte(buf.String()), &out)
}

// WatchEdges signals (coalesced) when edges connect or disconnect here or, as the routing
// table shows, on another gateway, until ctx ends.
func (f *Fleet) WatchEdges(ctx context.Context) <-chan struct{} {
	return gateway.MergeWatches(ctx, f.Local.WatchEdges(ctx), f.Node.watch(ctx))
}
