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

// registerResources adds the edge list, the per-edge template and one resource per edge
// connected now.
func registerResources(s *server.MCPServer, f Fleet) {
	s.AddResource(mcp.NewResource(edgesURI, "edges",
		mcp.WithResourceDescription("Every known edge: name, fingerprint, connected, gateway-bound labels, os, arch, last_seen and the URI of its inventory. "+
			"To choose an edge for a task, the find_edges tool filters and sorts."),
		mcp.WithMIMEType(jsonMIME)), edgesReader(f))
	s.AddResourceTemplate(mcp.NewResourceTemplate(edgeInfoTemplate, "edge info",
		mcp.WithTemplateDescription("One edge's inventory, as get_device_info returns it (the copy the gateway keeps): OS, CPU, memory, disks, load, tools with versions, GPU, pending updates, labels."),
		mcp.WithTemplateMIMEType(jsonMIME)), server.ResourceTemplateHandlerFunc(infoReader(f)))
	syncEdgeResources(s, f)
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
				mcp.WithMIMEType(jsonMIME)), Handler: infoReader(f)})
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
func edgesReader(f Fleet) server.ResourceHandlerFunc {
	return func(_ context.Context, req mcp.ReadResourceRequest) ([]mcp.ResourceContents, error) {
		list := []EdgeListEntry{}
		for _, e := range f.Edges(false) {
			list = append(list, EdgeListEntry{Name: e.Name, Fingerprint: e.Fingerprint, Connected: e.Connected,
				Labels: nonNilMap(e.Labels), OS: e.OS, Arch: e.Arch, LastSeen: rfc3339(e.LastSeen), InfoURI: infoURI(e.Name)})
		}
		return jsonContents(req.Params.URI, map[string]any{"edges": list})
	}
}

// infoReader serves edge://{name}/info from the inventory the gateway keeps.
func infoReader(f Fleet) server.ResourceHandlerFunc {
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
