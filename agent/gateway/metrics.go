package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Metrics receives what the gateway does, for monitoring (package metrics implements it with
// Prometheus). Connected edges and in-flight calls need no hook: read them from Edges.
// Implementations must be safe for concurrent use and must not block.
type Metrics interface {
	// Handshake records one edge connection attempt: outcome is "ok" or a failure reason
	// (one of the Handshake* constants).
	Handshake(outcome string)
	// RPC records one finished call: method, outcome (one of the Outcome* constants), how long
	// it took, and the body bytes sent to and received from the edge.
	RPC(method, outcome string, d time.Duration, sent, received int64)
}

// Handshake outcomes: a bounded set, so that they can be metric labels.
const (
	HandshakeOK         = "ok"
	HandshakeBusy       = "busy"        // too many handshakes at once: dropped before SSH
	HandshakeTimeout    = "timeout"     // the SSH handshake or the tunnel open took too long
	HandshakeUnknownKey = "unknown_key" // the edge offered no authorized key
	HandshakeProtocol   = "protocol"    // any other SSH handshake failure
	HandshakeBadTunnel  = "bad_tunnel"  // the tunnel channel was refused (bad Hello, …)
	HandshakePenalized  = "penalized"   // the key or its source address is penalized (penalty.go)
)

// RPC outcomes: a bounded set, so that they can be metric labels.
const (
	OutcomeOK           = "ok"
	OutcomeEdgeError    = "edge_error" // the edge answered with an error (policy, not found, …)
	OutcomeUnknownEdge  = "unknown_edge"
	OutcomeOffline      = "offline"
	OutcomeBusy         = "busy"
	OutcomeDisconnected = "disconnected"
	OutcomeCancelled    = "cancelled"
	OutcomeFailed       = "failed" // anything else: protocol violation, stream error
)

// noMetrics is the Metrics of a gateway configured without one.
type noMetrics struct{}

func (noMetrics) Handshake(string)                                {}
func (noMetrics) RPC(string, string, time.Duration, int64, int64) {}

// rpcOutcome classifies the result of call for the RPC metric.
func rpcOutcome(payload []byte, err error) string {
	switch {
	case err == nil:
		var r struct {
			Error *protocol.Error `json:"error"`
		}
		if json.Unmarshal(payload, &r) == nil && r.Error != nil {
			return OutcomeEdgeError
		}
		return OutcomeOK
	case errors.Is(err, ErrUnknownEdge):
		return OutcomeUnknownEdge
	case errors.Is(err, ErrEdgeOffline):
		return OutcomeOffline
	case errors.Is(err, ErrEdgeBusy):
		return OutcomeBusy
	case errors.Is(err, ErrDisconnected):
		return OutcomeDisconnected
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCancelled
	}
	return OutcomeFailed
}

// handshakeOutcome classifies a failed SSH handshake; refused says the edge offered a key
// that is not authorized.
func handshakeOutcome(err error, refused bool) string {
	var ne net.Error
	switch {
	case refused:
		return HandshakeUnknownKey
	case errors.As(err, &ne) && ne.Timeout():
		return HandshakeTimeout
	}
	return HandshakeProtocol
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
