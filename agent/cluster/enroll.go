package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// This file shares enrolments (bucket mcpgw_enroll, key = the secret's SHA-256, each entry
// expiring with its enrolment): an edge may enrol through any gateway, and the secret works
// once, since a use claims the entry with a compare-and-delete.

// bucketEnroll holds the open enrolments of the cluster.
const bucketEnroll = "mcpgw_enroll"

// enrollShare implements gateway.EnrollShare on the node's bucket.
type enrollShare struct{ n *Node }

var _ gateway.EnrollShare = enrollShare{}

// enrollBucket is the enrolment bucket of the current session, or nil.
func (n *Node) enrollBucket() jetstream.KeyValue {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.enroll
}

// Offer implements gateway.EnrollShare.
func (s enrollShare) Offer(e gateway.EnrollEntry) bool {
	kv := s.n.enrollBucket()
	ttl := time.Until(e.ExpiresAt)
	if kv == nil || ttl < time.Second {
		return false
	}
	b, err := json.Marshal(e)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), openWait)
	defer cancel()
	if _, err := kv.Create(ctx, e.SecretSHA256, b, jetstream.KeyTTL(ttl)); err != nil {
		s.n.log.Warn("enrolment not shared with the cluster: it works through this gateway only", "err", err)
		return false
	}
	return true
}

// Claim implements gateway.EnrollShare.
func (s enrollShare) Claim(h string) (gateway.EnrollEntry, bool, error) {
	var e gateway.EnrollEntry
	kv := s.n.enrollBucket()
	if kv == nil || !s.n.nc.IsConnected() {
		return e, false, errors.New("not connected to the cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), openWait)
	defer cancel()
	entry, err := kv.Get(ctx, h)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return e, false, nil
	case err != nil:
		return e, false, err
	}
	if len(entry.Value()) > maxKeyValue || json.Unmarshal(entry.Value(), &e) != nil || e.SecretSHA256 != h {
		return e, false, fmt.Errorf("enrolment entry %s not understood", h)
	}
	err = kv.Delete(ctx, h, jetstream.LastRevision(entry.Revision()))
	switch {
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists):
		return e, false, nil // claimed through another gateway just now
	case err != nil:
		return e, false, err
	}
	e.Shared = true
	return e, true, nil
}
