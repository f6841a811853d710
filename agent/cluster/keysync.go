package cluster

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// This file shares the authorized keys: bucket mcpgw_keys holds one entry per key
// fingerprint, its authorized_keys line (bound name and labels included); a revoked key's
// entry is deleted. Each gateway writes what changed in its own file (through its tools, the
// admin CLI or an editor) and applies what the others wrote, so that register, approve,
// enrol, revoke and name binding on one gateway take effect on all.
//
// When a gateway (re)joins, the bucket wins for every key it has an entry for (a key revoked
// while this gateway was away is revoked here too), and keys the bucket never heard of are
// published. Changes made here while NATS was away are published when it is back, since this
// gateway remembers what it last agreed with the bucket.

// maxKeyValue bounds one key entry as read from the bucket.
const maxKeyValue = 16 << 10

// maxKeyBatch bounds the changes applied in one rewrite of authorized_keys.
const maxKeyBatch = 10_000

// syncKeys runs the key sharing until ctx ends or the bucket fails.
func (n *Node) syncKeys(ctx context.Context, kv jetstream.KeyValue) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	changed := n.gw.WatchEdges(ctx) // key changes wake edge watchers too
	bucket := map[string]string{}   // the initial values: fingerprint → line ("" deleted)
	for initial := true; initial; {
		select {
		case <-ctx.Done():
			return nil
		case e := <-w.Updates():
			if e == nil {
				initial = false
				break
			}
			bucket[fpOfKey(e.Key())] = lineOf(e)
		}
	}
	local := n.gw.KeyLines()
	prev := n.agreed
	n.agreed = map[string]string{}
	var batch []gateway.KeyChange
	for fp, line := range bucket {
		if was, had := prev[fp]; had && local[fp] != was {
			n.agreed[fp] = was // changed here while away: ours is published below
			continue
		}
		batch = append(batch, gateway.KeyChange{Fingerprint: fp, Line: line})
	}
	n.apply(batch)
	if err := n.publishKeys(ctx, kv); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("cluster: key watch ended")
			}
			// A burst (a fleet registered at once) is applied in one rewrite of the file.
			batch = batch[:0]
			for ok && len(batch) < maxKeyBatch {
				if e != nil {
					if fp, line := fpOfKey(e.Key()), lineOf(e); n.agreed[fp] != line {
						batch = append(batch, gateway.KeyChange{Fingerprint: fp, Line: line})
					}
				}
				select {
				case e, ok = <-w.Updates():
				default:
					ok = false
				}
			}
			n.apply(batch)
		case <-changed:
			if err := n.publishKeys(ctx, kv); err != nil {
				return err
			}
		}
	}
}

// lineOf is an entry's line, "" for a deleted (revoked) key or one too long to be a line.
func lineOf(e jetstream.KeyValueEntry) string {
	if e.Operation() != jetstream.KeyValuePut || len(e.Value()) > maxKeyValue {
		return ""
	}
	return string(e.Value())
}

// publishKeys writes what differs between this gateway's file and what it last agreed with
// the bucket.
func (n *Node) publishKeys(ctx context.Context, kv jetstream.KeyValue) error {
	local := n.gw.KeyLines()
	for fp, line := range local {
		if n.agreed[fp] == line {
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, natsOpTimeout)
		_, err := kv.Put(opCtx, kvKey(fp), []byte(line))
		cancel()
		if err != nil {
			return err
		}
		n.agreed[fp] = line
	}
	for fp := range n.agreed {
		if _, ok := local[fp]; ok {
			continue
		}
		opCtx, cancel := context.WithTimeout(ctx, natsOpTimeout)
		err := kv.Delete(opCtx, kvKey(fp))
		cancel()
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		delete(n.agreed, fp)
		n.log.Info("key revoked here: revoked on every gateway", "fingerprint", fp)
	}
	return nil
}

// apply makes this gateway's file agree with the bucket's entries (Line "" = revoked) and
// records the agreement. A change that cannot be applied here (a name bound to another key in
// this file) is logged and recorded as agreed with what this file holds, so that it is
// neither reverted in the bucket nor retried on every change.
func (n *Node) apply(batch []gateway.KeyChange) {
	if len(batch) == 0 {
		return
	}
	for _, c := range batch { // recorded first: the change wakes publishKeys
		if c.Line == "" {
			delete(n.agreed, c.Fingerprint)
		} else {
			n.agreed[c.Fingerprint] = c.Line
		}
	}
	refused, err := n.gw.ApplyKeys(batch)
	if err != nil {
		n.log.Warn("key changes of other gateways not written here", "keys", len(batch), "err", err)
	}
	if err != nil || len(refused) > 0 {
		local := n.gw.KeyLines()
		for _, c := range batch {
			if rerr, ok := refused[c.Fingerprint]; ok || err != nil {
				if ok {
					n.log.Warn("key change of another gateway not written here", "fingerprint", c.Fingerprint, "err", rerr)
				}
				if have, ok := local[c.Fingerprint]; ok {
					n.agreed[c.Fingerprint] = have
				} else {
					delete(n.agreed, c.Fingerprint)
				}
			}
		}
	}
	n.log.Debug("key changes of other gateways applied", "keys", len(batch), "refused", len(refused))
}
