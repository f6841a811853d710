package gateway

// This file is the seam between the SSH side (this package) and the MCP tools
// (package tools): the types and errors the tools see. Everything else in this package is
// how those calls reach an edge.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Errors a call may return besides a *protocol.Error from the edge itself.
var (
	// ErrUnknownEdge: no known or connected edge has that name or fingerprint.
	ErrUnknownEdge = errors.New("unknown edge")
	// ErrEdgeOffline: the edge is known (its key is authorized) but not connected now.
	ErrEdgeOffline = errors.New("edge is not connected")
	// ErrEdgeBusy: the edge is at its concurrency limit and the gateway's queue for it is full.
	ErrEdgeBusy = errors.New("edge is busy")
	// ErrDisconnected: the tunnel dropped while the call was in flight.
	ErrDisconnected = errors.New("edge disconnected during the call")
	// ErrGatewayUnreachable: the edge is connected to another gateway of the cluster, which
	// cannot be reached now (see UnreachableError).
	ErrGatewayUnreachable = errors.New("edge is connected to another gateway, which cannot be reached now")
)

// UnreachableError is a call for an edge connected to another gateway of the cluster that
// cannot be reached: it fails at once rather than wait. It matches ErrGatewayUnreachable.
type UnreachableError struct {
	Edge, Gateway string
	Reason        string // why, as far as this gateway can tell
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("edge %s is connected to gateway %s, which cannot be reached now: %s", e.Edge, e.Gateway, e.Reason)
}

// Is makes errors.Is(err, ErrGatewayUnreachable) true.
func (e *UnreachableError) Is(target error) bool { return target == ErrGatewayUnreachable }

// HeldBy is the id of the gateway of the cluster an edge is connected to when that is another
// gateway, else "" (for the audit line of a relayed call).
func HeldBy(e Edge) string {
	if h, ok := e.(interface{ HeldBy() string }); ok {
		return h.HeldBy()
	}
	return ""
}

// Edge is one edge, resolved once from the name or fingerprint a tool call gives: every RPC
// of that call goes through it, so the audit line, the policy check and the RPC all name the
// same key. Each RPC carries the caller's request id (rid) on the wire, where the edge's
// rpc.log records it: an audit line and the edge's own record join on that id. The handle
// holds the identity, not the tunnel: an RPC finds the edge's live tunnel by its key, so a
// call made after a reconnect reaches the same device and never one that took its name.
type Edge interface {
	Name() string
	Fingerprint() string
	Labels() map[string]string // bound at the gateway (the only ones that select); never nil
	Connected() bool

	// Exec runs a process. stdin nil sends no stdin; out receives stdout and stderr chunks
	// as they arrive (valid only during the call: the caller copies them). A cancelled ctx
	// stops the process and still returns what the edge reported within a short grace.
	Exec(ctx context.Context, rid string, p protocol.ExecParams, stdin io.Reader,
		out func(t protocol.FrameType, b []byte)) (protocol.ExecResult, error)
	// Upload sends exactly p.Size bytes of body to p.Path and checks what the edge wrote.
	Upload(ctx context.Context, rid string, p protocol.UploadParams, body io.Reader) (protocol.UploadResult, error)
	// Download streams up to p.MaxBytes of a file into w and checks its SHA-256.
	Download(ctx context.Context, rid string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error)
	// DeviceInfo returns the inventory the gateway keeps, or a fresh one with refresh.
	DeviceInfo(ctx context.Context, rid string, refresh bool) (protocol.DeviceInfo, error)
	// JobStart starts a detached job; the edge's journal keeps it past this call.
	JobStart(ctx context.Context, rid string, p protocol.JobStartParams) (protocol.JobStatus, error)
	// JobGet reads a job's state and output from p.Since.
	JobGet(ctx context.Context, rid string, p protocol.JobGetParams) (protocol.JobStatus, error)
	// JobCancel kills a running job's process group.
	JobCancel(ctx context.Context, rid, id string) (protocol.JobStatus, error)
	// JobList lists the jobs the edge keeps, newest first.
	JobList(ctx context.Context, rid string) (protocol.JobList, error)
}

// Info describes the gateway itself (get_status.gateway).
type Info struct {
	ID                  string // GATEWAY_ID
	Version             string
	Mode                string
	SSHAddr             string
	PublicAddr          string
	HostKeyFingerprint  string
	HostKeyLine         string // authorized_keys format
	Started             time.Time
	ProvisioningEnabled bool
	Cluster             *ClusterInfo // nil for a gateway alone
}

// ClusterInfo is the cluster of gateways as this one sees it (get_status.cluster).
type ClusterInfo struct {
	Connected bool       // the NATS connection is up
	Peers     []PeerInfo // the other gateways heard from recently, by id
}

// PeerInfo is another gateway of the cluster as this one last heard of it.
type PeerInfo struct {
	ID       string
	Edges    int // connected to it
	LastSeen time.Time
}

// EdgeStatus is one known or connected edge (get_status.edges[i]).
type EdgeStatus struct {
	Name           string
	Fingerprint    string
	Connected      bool
	Labels         map[string]string // bound at the gateway: the only ones that select
	ReportedLabels map[string]string // what the edge says about itself
	RemoteAddr     string
	ConnectedSince time.Time // zero when not connected
	LastSeen       time.Time // zero when never seen
	EdgeVersion    string
	OS             string
	Arch           string
	InFlight       int
	Kind           string // companion (dials in with mcp-ssh-edge), forward (dialled by the gateway) or agentless
	Problem        string // why a known edge is not connected, when the gateway knows (e.g. its host key changed)
	Gateway        string // the id of the gateway it is connected to ("" when not connected)
}

// KindCompanion is the Kind of an edge that runs mcp-ssh-edge and dials in.
const KindCompanion = "companion"

// KeyAdded is the outcome of registering an edge key.
type KeyAdded struct {
	Fingerprint string
	Name        string
	Labels      map[string]string
	Added       bool // false when the key was already authorized
}

// MergeWatches signals (coalesced) whenever any of watches does, until ctx ends: for a fleet
// made of several (companion and forward edges, this gateway and the cluster).
func MergeWatches(ctx context.Context, watches ...<-chan struct{}) <-chan struct{} {
	out := make(chan struct{}, 1)
	for _, w := range watches {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-w:
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}()
	}
	return out
}
