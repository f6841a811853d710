package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// MCP resources: the fleet for clients that read resources rather than call tools.
//
//	edge://edges         the list of edges (JSON)
//	edge://{name}/info   one edge's inventory (JSON, as get_device_info returns it); a
//	                     template, plus one listed resource per connected edge, so that
//	                     resources/list changes (notifications/resources/list_changed) as
//	                     edges come and go.
const (
	edgesURI         = "edge://edges"
	edgeInfoTemplate = "edge://{name}/info"
	jsonMIME         = "application/json"
	// resourceSettle coalesces a burst of connects into one list change.
	resourceSettle = 200 * time.Millisecond
)

// EdgeListEntry is one edge in the edge://edges resource.
type EdgeListEntry struct {
	Name        string            `json:"name"`
	Fingerprint string            `json:"fingerprint"`
	Connected   bool              `json:"connected"`
	Labels      map[string]string `json:"labels"`
	OS          string            `json:"os"`
	Arch        string            `json:"arch"`
	LastSeen    string            `json:"last_seen"`
	InfoURI     string            `json:"info_uri"`
}

// edgeFilterFunc gives, for the client calling through ctx, whether its role sees an edge
// with these gateway-bound labels.
type edgeFilterFunc func(ctx context.Context) func(labels map[string]string) bool

// everyEdge is the filter without a policy: every edge is visible.
func everyEdge(context.Context) func(map[string]string) bool {
	return func(map[string]string) bool { return true }
}

// registerResources adds the edge list, the per-edge template and, when listEdges, one
// resource per edge connected now. The list of resources is the same for every client, so
// under a policy (where roles see different edges) no per-edge resource is listed: the
// template still reads any edge the caller's role sees.
func registerResources(s *server.MCPServer, f Fleet, visible edgeFilterFunc, listEdges bool) {
	s.AddResource(mcp.NewResource(edgesURI, "edges",
		mcp.WithResourceDescription("Every known edge: name, fingerprint, connected, gateway-bound labels, os, arch, last_seen and the URI of its inventory. "+
			"To choose an edge for a task, the find_edges tool filters and sorts."),
		mcp.WithMIMEType(jsonMIME)), edgesReader(f, visible))
	s.AddResourceTemplate(mcp.NewResourceTemplate(edgeInfoTemplate, "edge info",
		mcp.WithTemplateDescription("One edge's inventory, as get_device_info returns it (the copy the gateway keeps): OS, CPU, memory, disks, load, tools with versions, GPU, pending updates, labels."),
		mcp.WithTemplateMIMEType(jsonMIME)), server.ResourceTemplateHandlerFunc(infoReader(f, visible)))
	if listEdges {
		syncEdgeResources(s, f)
	}
}

func infoURI(name string) string { return "edge://" + url.PathEscape(name) + "/info" }

// syncEdgeResources lists one resource per connected edge and unlists the gone ones; each
// call sends at most two list_changed notifications. One goroutine calls it at a time.
func syncEdgeResources(s *server.MCPServer, f Fleet) {
	want := map[string]string{}
	for _, e := range f.Edges(true) {
		if e.Name != "" {
			want[infoURI(e.Name)] = e.Name
		}
	}
	current := map[string]bool{}
	for uri := range s.ListResources() {
		if strings.HasPrefix(uri, "edge://") && strings.HasSuffix(uri, "/info") {
			current[uri] = true
		}
	}
	var add []server.ServerResource
	for uri, name := range want {
		if !current[uri] {
			add = append(add, server.ServerResource{Resource: mcp.NewResource(uri, name+" info",
				mcp.WithResourceDescription("Inventory of edge "+name+" (JSON, as get_device_info returns it)."),
				mcp.WithMIMEType(jsonMIME)), Handler: infoReader(f, everyEdge)})
		}
	}
	var del []string
	for uri := range current {
		if _, ok := want[uri]; !ok {
			del = append(del, uri)
		}
	}
	if len(add) > 0 {
		s.AddResources(add...)
	}
	if len(del) > 0 {
		s.DeleteResources(del...)
	}
}

// WatchResources keeps s's per-edge resources in step with the fleet until ctx ends, so that
// clients get notifications/resources/list_changed when edges come and go. s must come from
// NewServer with the same f.
func WatchResources(ctx context.Context, s *server.MCPServer, f Fleet) {
	changes := f.WatchEdges(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
		t := time.NewTimer(resourceSettle)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		syncEdgeResources(s, f)
	}
}

// edgesReader serves edge://edges.
func edgesReader(f Fleet, visible edgeFilterFunc) server.ResourceHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		list := []EdgeListEntry{}
		sees := visible(ctx)
		for _, e := range f.Edges(false) {
			if !sees(e.Labels) {
				continue
			}
			list = append(list, EdgeListEntry{Name: e.Name, Fingerprint: e.Fingerprint, Connected: e.Connected,
				Labels: nonNilMap(e.Labels), OS: e.OS, Arch: e.Arch, LastSeen: rfc3339(e.LastSeen), InfoURI: infoURI(e.Name)})
		}
		return jsonContents(req.Params.URI, map[string]any{"edges": list})
	}
}

// infoReader serves edge://{name}/info from the inventory the gateway keeps.
func infoReader(f Fleet, visible edgeFilterFunc) server.ResourceHandlerFunc {
	return func(ctx context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		uri := req.Params.URI
		rest, ok := strings.CutPrefix(uri, "edge://")
		name, ok2 := strings.CutSuffix(rest, "/info")
		if !ok || !ok2 {
			return nil, fmt.Errorf("resource %q is not edge://{name}/info", oneLine(uri))
		}
		name, err := url.PathUnescape(name)
		if err == nil {
			err = checkEdgeArg(name)
		}
		if err != nil {
			return nil, fmt.Errorf("resource %q: %w", oneLine(uri), err)
		}
		e, err := f.Edge(name)
		if err == nil && !visible(ctx)(e.Labels()) {
			err = fmt.Errorf("%w: %s", gateway.ErrUnknownEdge, name)
		}
		var info protocol.DeviceInfo
		if err == nil {
			info, err = e.DeviceInfo(ctx, "", false)
		}
		if err != nil {
			return nil, errors.New(edgeMessage(name, err))
		}
		info.Edge = name
		normalizeDeviceInfo(&info)
		return jsonContents(uri, info)
	}
}

func jsonContents(uri string, v any) ([]mcp.ResourceContents, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", uri, err)
	}
	return []mcp.ResourceContents{mcp.TextResourceContents{URI: uri, MIMEType: jsonMIME, Text: string(b)}}, nil
}
