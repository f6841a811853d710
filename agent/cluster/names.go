package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// This file keeps names unique across the cluster (bucket mcpgw_names: name → fingerprint of
// the edge holding it, expiring with the routes). Before an edge whose key has no bound name
// is named, its gateway claims the name it asks for with a create, which only one gateway can
// win; the others find the holder and give their edge its fallback name. The holder keeps the
// entry alive with its routes and deletes it when the edge leaves.

// claimWait bounds a claim: an edge's connection waits for it.
const claimWait = time.Second

// nameClaim is a name found held by another gateway's edge, and when.
type nameClaim struct {
	fp string
	at time.Time
}

// namesBucket is the names bucket of the current session, or nil.
func (n *Node) namesBucket() jetstream.KeyValue {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.namesKV
}

// claimName is the gateway's NameClaim. Without NATS it claims nothing: names then fall back
// to this gateway's own view, and the routing table's.
func (n *Node) claimName(name, fp string) {
	kv := n.namesBucket()
	if kv == nil || !n.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), claimWait)
	defer cancel()
	_, err := kv.Create(ctx, name, []byte(fp))
	if err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
		return
	}
	e, err := kv.Get(ctx, name)
	if err != nil || string(e.Value()) == fp {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.claims) > 10_000 { // bounded: drop the stale ones first
		for k, c := range n.claims {
			if time.Since(c.at) > 3*n.cfg.Interval {
				delete(n.claims, k)
			}
		}
	}
	n.claims[name] = nameClaim{fp: string(e.Value()), at: time.Now()}
}

// holdName records (and renews) that the edge fp holds name.
func (n *Node) holdName(ctx context.Context, kv jetstream.KeyValue, name, fp string) error {
	if name == "" {
		return nil
	}
	_, err := kv.Put(ctx, name, []byte(fp))
	return err
}

// releaseName deletes name's entry if the edge fp still holds it.
func (n *Node) releaseName(ctx context.Context, kv jetstream.KeyValue, name, fp string) {
	if name == "" {
		return
	}
	if e, err := kv.Get(ctx, name); err == nil && string(e.Value()) == fp {
		_ = kv.Delete(ctx, name, jetstream.LastRevision(e.Revision()))
	}
}
