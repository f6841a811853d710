package gateway

// This file is the seam between the SSH side (this package) and the MCP tools
// (package tools): the types and errors the tools see. Everything else in this package is
// how those calls reach an edge.

import (
	"errors"
	"time"
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
)

// Info describes the gateway itself (get_status.gateway).
type Info struct {
	Version             string
	Mode                string
	SSHAddr             string
	PublicAddr          string
	HostKeyFingerprint  string
	HostKeyLine         string // authorized_keys format
	Started             time.Time
	ProvisioningEnabled bool
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
}

// KeyAdded is the outcome of registering an edge key.
type KeyAdded struct {
	Fingerprint string
	Name        string
	Labels      map[string]string
	Added       bool // false when the key was already authorized
}

// Lookup finds a connected edge by name (case-insensitive) or SHA256 fingerprint without
// listing the fleet, which costs milliseconds per call at ten thousand edges. ok is false
// when no connected edge matches.
func (g *Gateway) Lookup(ref string) (name, fingerprint string, ok bool) {
	e := g.reg.get(ref)
	if e == nil {
		return "", "", false
	}
	return g.reg.nameOf(e), e.fp, true
}
