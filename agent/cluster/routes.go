package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// This file keeps the routing table: each gateway publishes a route for every edge connected
// to it (bucket mcpgw_edges, refreshed every Interval, expiring after three), and watches
// the others'. A route from another gateway for an edge connected here means the edge
// reconnected there: the session here is stale and is closed, as one gateway does for two
// sessions of one key.

// maxRouteValue bounds one route as read from the bucket.
const maxRouteValue = 64 << 10

// published is what this gateway last wrote for one of its edges.
type published struct {
	rev   uint64
	since time.Time // the session's connect time: a new session is a new route
	name  string    // the name it was published under (a rename is published at once)
}

// watchRoutes mirrors the other gateways' routes into n.routes until ctx ends.
func (n *Node) watchRoutes(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	fresh := map[string]route{} // the initial values, swapped in whole once they are all in
	initial := true
	// This gateway's own writes come back through the watch too: when they stop coming back
	// the watch is stalled (seen after a NATS restart), and the session starts over.
	check := time.NewTicker(n.cfg.Interval)
	defer check.Stop()
	heard, writes := time.Now(), n.writes.Load()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-check.C:
			if n.writes.Load() >= writes+2 && time.Since(heard) > 2*n.cfg.Interval {
				return errors.New("cluster: the route watch stopped delivering this gateway's own writes")
			}
			continue
		case e, ok = <-w.Updates():
			if !ok {
				return errors.New("cluster: route watch ended")
			}
			heard, writes = time.Now(), n.writes.Load()
		}
		if e == nil {
			if initial {
				n.mu.Lock()
				n.routes, n.names = fresh, map[string]string{}
				for fp, r := range fresh {
					n.names[r.Status.Name] = fp
				}
				n.mu.Unlock()
				initial = false
				n.log.Debug("routes of other gateways read", "edges", len(fresh))
				n.notify()
			}
			continue
		}
		fp := fpOfKey(e.Key())
		if e.Operation() != jetstream.KeyValuePut {
			if initial {
				delete(fresh, fp)
			} else {
				n.dropRoute(fp)
				n.log.Debug("edge no longer connected to another gateway", "fingerprint", fp, "op", e.Operation().String())
				n.notify()
			}
			continue
		}
		var r route
		if len(e.Value()) > maxRouteValue || json.Unmarshal(e.Value(), &r) != nil || r.Gateway == "" || r.Status.Fingerprint != fp {
			n.log.Warn("route in the cluster's table not understood: ignored", "key", e.Key())
			continue
		}
		r.rev = e.Revision()
		if r.Gateway == n.cfg.ID {
			if !initial {
				n.dropRoute(fp)
			}
			continue
		}
		n.maybeEvict(fp, r)
		if initial {
			fresh[fp] = r
			continue
		}
		n.mu.Lock()
		if old, ok := n.routes[fp]; ok && n.names[old.Status.Name] == fp {
			delete(n.names, old.Status.Name)
		}
		_, known := n.routes[fp]
		n.routes[fp] = r
		n.names[r.Status.Name] = fp
		n.mu.Unlock()
		if !known {
			n.log.Debug("edge connected to another gateway", "edge", r.Status.Name, "gateway", r.Gateway)
			n.notify()
		}
	}
}

// dropRoute forgets the route of fp.
func (n *Node) dropRoute(fp string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.routes[fp]; ok {
		if n.names[old.Status.Name] == fp {
			delete(n.names, old.Status.Name)
		}
		delete(n.routes, fp)
	}
}

// maybeEvict closes the session here of an edge that another gateway says it holds, when
// that gateway's session is the newer one.
func (n *Node) maybeEvict(fp string, r route) {
	if since, ok := n.gw.ConnectedSince(fp); ok && r.Status.ConnectedSince.After(since) {
		n.gw.Evict(fp, r.Gateway)
	}
}

// publishRoutes writes the routes of this gateway's edges when they connect or disconnect,
// and refreshes them every Interval, until ctx ends. A refresh that finds the route taken by
// another gateway closes the session here (the edge is there now).
func (n *Node) publishRoutes(ctx context.Context, kv, names jetstream.KeyValue) error {
	mine := map[string]published{}
	changed := n.gw.WatchEdges(ctx)
	t := time.NewTicker(n.cfg.Interval)
	defer t.Stop()
	refresh := true
	for {
		if err := n.publishOnce(ctx, kv, names, mine, refresh); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			n.withdrawFrom(kv, names, mine)
			return nil
		case <-changed:
			refresh = false
		case <-t.C:
			refresh = true
		}
	}
}

// publishOnce brings the table in line with the edges connected here: new sessions are put,
// gone ones deleted, and with refresh every other one rewritten (which renews its TTL).
func (n *Node) publishOnce(ctx context.Context, kv, names jetstream.KeyValue, mine map[string]published, refresh bool) error {
	now := map[string]gateway.EdgeStatus{}
	for _, st := range n.gw.Edges(true) {
		if st.Kind == gateway.KindCompanion || st.Kind == "" {
			now[st.Fingerprint] = st
		}
	}
	for fp, st := range now {
		p, ok := mine[fp]
		same := ok && p.since.Equal(st.ConnectedSince) && p.name == st.Name
		if same && !refresh {
			continue
		}
		st.InFlight = 0
		b, err := json.Marshal(route{Gateway: n.cfg.ID, Status: st})
		if err != nil {
			return err
		}
		opCtx, cancel := context.WithTimeout(ctx, natsOpTimeout)
		var rev uint64
		if same {
			rev, err = kv.Update(opCtx, kvKey(fp), b, p.rev)
			if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
				err = n.lostRoute(opCtx, kv, fp, st, mine)
			}
		} else {
			rev, err = kv.Put(opCtx, kvKey(fp), b)
		}
		if err == nil && rev != 0 {
			n.writes.Add(1)
			mine[fp] = published{rev: rev, since: st.ConnectedSince, name: st.Name}
			if ok && p.name != st.Name {
				n.releaseName(opCtx, names, p.name, fp)
			}
			err = n.holdName(opCtx, names, st.Name, fp)
		}
		cancel()
		if err != nil {
			return err
		}
	}
	for fp, p := range mine {
		if _, ok := now[fp]; ok {
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, natsOpTimeout)
		err := kv.Delete(opCtx, kvKey(fp), jetstream.LastRevision(p.rev))
		n.releaseName(opCtx, names, p.name, fp)
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) &&
			!errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		delete(mine, fp)
	}
	return nil
}

// lostRoute handles a refresh that found the route of fp rewritten: by another gateway (the
// edge reconnected there, so the session here goes) or by nobody any more (it expired while
// NATS was away: it is put again).
func (n *Node) lostRoute(ctx context.Context, kv jetstream.KeyValue, fp string, st gateway.EdgeStatus, mine map[string]published) error {
	delete(mine, fp)
	e, err := kv.Get(ctx, kvKey(fp))
	if err == nil {
		var r route
		if json.Unmarshal(e.Value(), &r) == nil && r.Gateway != n.cfg.ID && r.Status.ConnectedSince.After(st.ConnectedSince) {
			n.gw.Evict(fp, r.Gateway)
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	b, err := json.Marshal(route{Gateway: n.cfg.ID, Status: st})
	if err != nil {
		return err
	}
	rev, err := kv.Put(ctx, kvKey(fp), b)
	if err == nil {
		mine[fp] = published{rev: rev, since: st.ConnectedSince, name: st.Name}
	}
	return err
}

// withdrawFrom deletes the routes this gateway wrote (it is stopping), briefly: a gateway
// that cannot reach NATS leaves them to expire, and their names with them.
func (n *Node) withdrawFrom(kv, names jetstream.KeyValue, mine map[string]published) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for fp, p := range mine {
		if ctx.Err() != nil {
			return
		}
		_ = kv.Delete(ctx, kvKey(fp), jetstream.LastRevision(p.rev))
		n.releaseName(ctx, names, p.name, fp)
	}
}

// withdraw is called once the sync loops ended for good.
func (n *Node) withdraw() {
	n.mu.Lock()
	n.routes, n.names = map[string]route{}, map[string]string{}
	n.mu.Unlock()
	n.notify()
}

// watch signals (coalesced) each time the routing table changes, until ctx ends.
func (n *Node) watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	n.watchMu.Lock()
	n.watchers[ch] = struct{}{}
	n.watchMu.Unlock()
	context.AfterFunc(ctx, func() {
		n.watchMu.Lock()
		delete(n.watchers, ch)
		n.watchMu.Unlock()
	})
	return ch
}

// notify wakes every watch channel without blocking.
func (n *Node) notify() {
	n.watchMu.Lock()
	defer n.watchMu.Unlock()
	for ch := range n.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// nameHolder is the gateway's NameHolder: the fingerprint of an edge that holds name on
// another gateway, as the routing table shows or a lost claim found.
func (n *Node) nameHolder(name string) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if fp := n.names[name]; fp != "" {
		return fp
	}
	if c, ok := n.claims[name]; ok && time.Since(c.at) < 3*n.cfg.Interval {
		return c.fp
	}
	return ""
}

// routeOf returns the route of an edge held by another gateway, by fingerprint or name, and
// whether that gateway is alive (see holderAlive).
func (n *Node) routeOf(ref string) (r route, found, alive bool) {
	up := n.nc.IsConnected()
	n.mu.RLock()
	defer n.mu.RUnlock()
	r, found = n.routes[ref]
	if !found {
		if fp, named := n.names[strings.ToLower(ref)]; named {
			r, found = n.routes[fp]
		}
	}
	return r, found, found && n.holderAlive(r.Gateway, up)
}

// silentFor is how long this gateway has not heard from gateway id (0 if never).
func (n *Node) silentFor(id string) time.Duration {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if p, ok := n.peers[id]; ok {
		return time.Since(p.Seen)
	}
	return 0
}

// remoteStatuses lists the edges held by other gateways.
func (n *Node) remoteStatuses() []route {
	up := n.nc.IsConnected()
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]route, 0, len(n.routes))
	for _, r := range n.routes {
		if n.holderAlive(r.Gateway, up) {
			out = append(out, r)
		}
	}
	return out
}

// holderAlive reports whether the routes of gateway id stand: not when this gateway, linked
// to NATS (up), has stopped hearing id's heartbeats (it died: its routes only wait to
// expire, and its edges are reconnecting elsewhere). Without NATS every route stands, so that
// a call for such an edge says where it is and that it cannot be reached. Callers hold n.mu.
func (n *Node) holderAlive(id string, up bool) bool {
	p, heard := n.peers[id]
	return !up || !heard || time.Since(p.Seen) < peerGone
}
