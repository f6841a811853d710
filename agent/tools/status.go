package tools

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// get_status page size bounds.
const (
	defaultStatusLimit = 100
	maxStatusLimit     = 1000
	maxCursorLen       = 256
)

// StatusInput is get_status's arguments.
type StatusInput struct {
	Limit         int    `json:"limit,omitempty" jsonschema:"how many edges to return in this page, 1 to 1000; default 100"`
	Cursor        string `json:"cursor,omitempty" jsonschema:"opaque page cursor: pass next_cursor from the previous get_status call to get the next page; omit for the first page"`
	ConnectedOnly bool   `json:"connected_only,omitempty" jsonschema:"true to list only edges connected right now; default false lists every known edge"`
}

// StatusOutput is get_status's result.
type StatusOutput struct {
	Gateway    GatewayStatus `json:"gateway" jsonschema:"this gateway"`
	Cluster    ClusterStatus `json:"cluster" jsonschema:"the cluster of gateways this one belongs to (CLUSTER_NATS_URL); enabled is false for a gateway alone"`
	Totals     Totals        `json:"totals" jsonschema:"counts over the whole fleet, not just this page"`
	Edges      []EdgeOutput  `json:"edges" jsonschema:"one page of edges, sorted by name"`
	NextCursor string        `json:"next_cursor" jsonschema:"pass as cursor to get the next page; empty when this is the last page"`
}

// GatewayStatus describes the gateway itself.
type GatewayStatus struct {
	ID                  string `json:"id" jsonschema:"this gateway's id (GATEWAY_ID), as edges' gateway fields name it"`
	Version             string `json:"version" jsonschema:"gateway version"`
	Mode                string `json:"mode" jsonschema:"reverse: edges dial in to the gateway"`
	SSHAddr             string `json:"ssh_addr" jsonschema:"address the gateway's SSH server listens on for edges"`
	PublicAddr          string `json:"public_addr" jsonschema:"host:port edges are told to dial"`
	HostKeyFingerprint  string `json:"host_key_fingerprint" jsonschema:"SHA256 fingerprint of the gateway's SSH host key, which edges pin"`
	UptimeSeconds       int64  `json:"uptime_seconds" jsonschema:"seconds since the gateway started"`
	ProvisioningEnabled bool   `json:"provisioning_enabled" jsonschema:"whether register_edge_key is enabled (a provisioning token is set)"`
}

// ClusterStatus describes the cluster of gateways.
type ClusterStatus struct {
	Enabled   bool         `json:"enabled" jsonschema:"whether this gateway is part of a cluster"`
	Connected bool         `json:"connected" jsonschema:"whether its link to the cluster (NATS) is up; while it is down only edges connected to this gateway can be reached"`
	Peers     []PeerStatus `json:"peers" jsonschema:"the other gateways heard from in the last few seconds, by id"`
}

// PeerStatus is another gateway of the cluster.
type PeerStatus struct {
	ID       string `json:"id" jsonschema:"the gateway's id"`
	Edges    int    `json:"edges" jsonschema:"edges connected to it"`
	LastSeen string `json:"last_seen" jsonschema:"when it was last heard from (RFC 3339 UTC)"`
}

// Totals counts the fleet.
type Totals struct {
	Known     int `json:"known" jsonschema:"edges known to the gateway (authorized keys plus connected edges)"`
	Connected int `json:"connected" jsonschema:"edges connected right now"`
}

// EdgeOutput is one edge in get_status.
type EdgeOutput struct {
	Name           string            `json:"name" jsonschema:"the edge's name: pass it as edge to the other tools"`
	Fingerprint    string            `json:"fingerprint" jsonschema:"SHA256 fingerprint of the edge's SSH key; also accepted as edge"`
	Connected      bool              `json:"connected" jsonschema:"whether the edge is connected now; only connected edges can run commands"`
	Labels         map[string]string `json:"labels" jsonschema:"labels bound to the edge's key at the gateway; these are trusted"`
	ReportedLabels map[string]string `json:"reported_labels" jsonschema:"labels the edge reports about itself; informational only, not trusted"`
	RemoteAddr     string            `json:"remote_addr" jsonschema:"address the edge connects from; empty when not connected"`
	ConnectedSince string            `json:"connected_since" jsonschema:"when the current connection started (RFC 3339 UTC); empty when not connected"`
	LastSeen       string            `json:"last_seen" jsonschema:"when the edge was last heard from (RFC 3339 UTC); empty when never seen"`
	EdgeVersion    string            `json:"edge_version" jsonschema:"version of mcp-ssh-edge on the device; empty when unknown"`
	OS             string            `json:"os" jsonschema:"operating system the edge reports, e.g. linux"`
	Arch           string            `json:"arch" jsonschema:"architecture the edge reports, e.g. amd64 or arm64"`
	InFlight       int               `json:"in_flight" jsonschema:"calls running on the edge right now"`
	Kind           string            `json:"kind" jsonschema:"companion (runs mcp-ssh-edge and dials in), forward (a plain SSH server the gateway dials) or agentless"`
	Problem        string            `json:"problem" jsonschema:"why the edge is not connected, when the gateway knows (e.g. its host key does not match the pinned one); empty otherwise"`
	Gateway        string            `json:"gateway" jsonschema:"id of the gateway the edge is connected to (any gateway of a cluster reaches it); empty when not connected"`
}

// NoInput is the arguments of a tool that takes none.
type NoInput struct{}

// PubkeyOutput is get_agent_pubkey's result.
type PubkeyOutput struct {
	PublicKey       string `json:"public_key" jsonschema:"the gateway's SSH host public key in authorized_keys format"`
	Fingerprint     string `json:"fingerprint" jsonschema:"SHA256 fingerprint of that key"`
	EdgeConfig      string `json:"edge_config" jsonschema:"the two environment lines an edge needs (EDGE_GATEWAY and EDGE_GATEWAY_HOST_KEY), for its env file"`
	ClientPublicKey string `json:"client_public_key" jsonschema:"the key the gateway logs in with on forward and agentless edges (authorized_keys format): add it to the device's ~/.ssh/authorized_keys; empty in GATEWAY_MODE=reverse"`
}

func statusTool() mcp.Tool {
	return mcp.NewTool("get_status",
		mcp.WithDescription("List the gateway and its edges: names, labels, whether each is connected, versions, OS/arch, load in flight. "+
			"Call this first to pick an edge by name for run_command, upload_file or get_device_info. "+
			"Paginated: pass next_cursor back as cursor while it is non-empty. For one edge's hardware and OS details use get_device_info."),
		hints("Gateway and edge status", true, false, true, false),
		mcp.WithInputSchema[StatusInput](),
		mcp.WithOutputSchema[StatusOutput](),
	)
}

func pubkeyTool() mcp.Tool {
	return mcp.NewTool("get_agent_pubkey",
		mcp.WithDescription("Get the gateway's SSH host public key and the EDGE_GATEWAY / EDGE_GATEWAY_HOST_KEY lines a new edge device needs in its configuration. "+
			"Use when setting up a device; to authorize the device's own key use register_edge_key."),
		hints("Gateway public key and edge configuration", true, false, true, false),
		mcp.WithInputSchema[NoInput](),
		mcp.WithOutputSchema[PubkeyOutput](),
	)
}

func (h *handlers) getStatus(ctx context.Context, _ mcp.CallToolRequest, in StatusInput) *mcp.CallToolResult {
	limit := in.Limit
	switch {
	case limit == 0:
		limit = defaultStatusLimit
	case limit < 0 || limit > maxStatusLimit:
		return errResult(fmt.Sprintf("limit %d is out of range: use 1 to %d, and page with cursor", in.Limit, maxStatusLimit))
	}
	after, err := decodeCursor(in.Cursor)
	if err != nil {
		return errResult(err.Error())
	}

	info := h.fleet.Info()
	all := visibleEdges(h.fleet.Edges(false), h.edgeFilter(ctx))
	out := StatusOutput{
		Gateway: GatewayStatus{
			ID:                  info.ID,
			Version:             h.cfg.Version,
			Mode:                info.Mode,
			SSHAddr:             info.SSHAddr,
			PublicAddr:          info.PublicAddr,
			HostKeyFingerprint:  info.HostKeyFingerprint,
			ProvisioningEnabled: h.cfg.ProvisionToken != "",
		},
		Cluster: clusterStatus(info.Cluster),
		Edges:   []EdgeOutput{},
	}
	if out.Gateway.Version == "" {
		out.Gateway.Version = info.Version
	}
	if !info.Started.IsZero() {
		out.Gateway.UptimeSeconds = int64(time.Since(info.Started) / time.Second)
	}
	out.Totals.Known = len(all)
	for _, e := range all {
		if e.Connected {
			out.Totals.Connected++
		}
	}

	// Edges come sorted by name; paging relies on it, so check (and sort a copy if not).
	byName := func(a, b gateway.EdgeStatus) int { return strings.Compare(a.Name, b.Name) }
	if !slices.IsSortedFunc(all, byName) {
		all = slices.Clone(all)
		slices.SortStableFunc(all, byName)
	}
	start := 0
	if after != "" {
		start = sort.Search(len(all), func(i int) bool { return all[i].Name > after })
	}
	for i := start; i < len(all); i++ {
		e := all[i]
		if in.ConnectedOnly && !e.Connected {
			continue
		}
		if len(out.Edges) == limit {
			out.NextCursor = encodeCursor(out.Edges[len(out.Edges)-1].Name)
			break
		}
		out.Edges = append(out.Edges, edgeOutput(e))
	}
	return okResult(out)
}

func edgeOutput(e gateway.EdgeStatus) EdgeOutput {
	return EdgeOutput{
		Name:           e.Name,
		Fingerprint:    e.Fingerprint,
		Connected:      e.Connected,
		Labels:         nonNilMap(e.Labels),
		ReportedLabels: nonNilMap(e.ReportedLabels),
		RemoteAddr:     e.RemoteAddr,
		ConnectedSince: rfc3339(e.ConnectedSince),
		LastSeen:       rfc3339(e.LastSeen),
		EdgeVersion:    e.EdgeVersion,
		OS:             e.OS,
		Arch:           e.Arch,
		InFlight:       e.InFlight,
		Kind:           cmp.Or(e.Kind, gateway.KindCompanion),
		Problem:        e.Problem,
		Gateway:        e.Gateway,
	}
}

// clusterStatus is get_status.cluster of c (nil: a gateway alone).
func clusterStatus(c *gateway.ClusterInfo) ClusterStatus {
	out := ClusterStatus{Peers: []PeerStatus{}}
	if c == nil {
		return out
	}
	out.Enabled, out.Connected = true, c.Connected
	for _, p := range c.Peers {
		out.Peers = append(out.Peers, PeerStatus{ID: p.ID, Edges: p.Edges, LastSeen: rfc3339(p.LastSeen)})
	}
	return out
}

// encodeCursor makes the opaque cursor that resumes after name.
func encodeCursor(name string) string { return base64.RawURLEncoding.EncodeToString([]byte(name)) }

// decodeCursor returns the name a cursor resumes after ("" for the first page).
func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	bad := fmt.Errorf("cursor %q is not valid: pass next_cursor from the previous get_status call unchanged, or omit it for the first page", oneLine(c))
	if len(c) > maxCursorLen {
		return "", bad
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) == 0 || len(b) > protocol.MaxNameLen*2 {
		return "", bad
	}
	return string(b), nil
}

func (h *handlers) getAgentPubkey(_ context.Context, _ mcp.CallToolRequest, _ NoInput) *mcp.CallToolResult {
	info := h.fleet.Info()
	return okResult(PubkeyOutput{
		PublicKey:       info.HostKeyLine,
		Fingerprint:     info.HostKeyFingerprint,
		EdgeConfig:      fmt.Sprintf("EDGE_GATEWAY=%s\nEDGE_GATEWAY_HOST_KEY=%s", info.PublicAddr, info.HostKeyFingerprint),
		ClientPublicKey: h.cfg.ClientPublicKey,
	})
}
