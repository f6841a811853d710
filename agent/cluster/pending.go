package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// This file makes the pending keys (unknown keys that tried to connect) cluster-wide: behind a
// load balancer a new device knocks on whichever gateway it is given, and the operator
// approves it on any. Each gateway answers for its own list; an approval on a gateway that
// did not see the key registers it there, and the key sync does the rest.

const (
	// pendingWait bounds how long a listing waits for the other gateways' lists.
	pendingWait = 2 * time.Second
	// maxPendingReply bounds one gateway's list as received (its own list is bounded).
	maxPendingReply = 4 << 20
)

// pendingSubject is where the gateway id answers with its pending keys.
func pendingSubject(id string) string { return "mcpgw.gw." + id + ".pending" }

// servePending answers another gateway's request for this one's pending keys.
func (n *Node) servePending(m *nats.Msg) {
	list, err := n.gw.PendingEdges()
	if err != nil {
		list = []gateway.PendingEdge{}
	}
	b, err := json.Marshal(list)
	if err != nil || len(b) > maxPendingReply {
		b = []byte("[]")
	}
	_ = m.Respond(b)
}

// peerPending asks every peer heard from for its pending keys, each within pendingWait.
func (n *Node) peerPending() []gateway.PendingEdge {
	peers := n.Status().Peers
	var mu sync.Mutex
	var out []gateway.PendingEdge
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), pendingWait)
			defer cancel()
			m, err := n.nc.RequestWithContext(ctx, pendingSubject(p.ID), nil)
			var list []gateway.PendingEdge
			if err != nil || len(m.Data) > maxPendingReply || json.Unmarshal(m.Data, &list) != nil {
				n.log.Warn("pending keys of another gateway not read", "gateway", p.ID, "err", err)
				return
			}
			mu.Lock()
			out = append(out, list...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// PendingEdges lists the pending keys of every gateway, each key once (its latest attempt
// wherever it was), oldest first.
func (f *Fleet) PendingEdges() ([]gateway.PendingEdge, error) {
	local, err := f.Gateway.PendingEdges()
	if err != nil {
		return nil, err
	}
	byFP := map[string]gateway.PendingEdge{}
	for _, p := range append(local, f.Node.peerPending()...) {
		if q, ok := byFP[p.Fingerprint]; ok {
			p.Attempts += q.Attempts
			p.FirstAttempt = minTime(p.FirstAttempt, q.FirstAttempt)
			if q.LastAttempt.After(p.LastAttempt) {
				p.LastAttempt, p.RemoteAddr = q.LastAttempt, q.RemoteAddr
			}
		}
		byFP[p.Fingerprint] = p
	}
	out := make([]gateway.PendingEdge, 0, len(byFP))
	for _, p := range byFP {
		out = append(out, p)
	}
	slices.SortStableFunc(out, func(a, b gateway.PendingEdge) int {
		return cmp.Or(a.FirstAttempt.Compare(b.FirstAttempt), strings.Compare(a.Fingerprint, b.Fingerprint))
	})
	return out, nil
}

// ApproveEdge approves a key pending on this gateway or on another one.
func (f *Fleet) ApproveEdge(fp, name string, labels map[string]string) (gateway.KeyAdded, error) {
	res, err := f.Gateway.ApproveEdge(fp, name, labels)
	if err == nil {
		return res, nil
	}
	fp = strings.TrimSpace(fp)
	for _, p := range f.Node.peerPending() {
		if p.Fingerprint != fp {
			continue
		}
		if pub, _, _, _, perr := ssh.ParseAuthorizedKey([]byte(p.PublicKey)); perr != nil || keys.Fingerprint(pub) != fp {
			return gateway.KeyAdded{}, fmt.Errorf("the key another gateway lists as pending %s is not that key", fp)
		}
		n := strings.ToLower(strings.TrimSpace(name))
		if n == "" && protocol.ValidName(p.RequestedName) {
			n = p.RequestedName
		}
		res, rerr := f.Gateway.RegisterKey(p.PublicKey, n, labels)
		if rerr != nil {
			return res, fmt.Errorf("approve key pending on another gateway: %w", rerr)
		}
		return res, nil
	}
	return res, err
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
