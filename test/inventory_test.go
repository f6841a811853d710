package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
)

type foundEdge struct {
	Name         string            `json:"name"`
	Connected    bool              `json:"connected"`
	Labels       map[string]string `json:"labels"`
	HasInventory bool              `json:"has_inventory"`
	Arch         string            `json:"arch"`
	CPUCores     int               `json:"cpu_cores"`
	FreeMemory   uint64            `json:"free_memory"`
	Tools        map[string]string `json:"tools"`
}

type findOut struct {
	Edges            []foundEdge `json:"edges"`
	Matched          int         `json:"matched"`
	WithoutInventory int         `json:"without_inventory"`
}

func names(es []foundEdge) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Name)
	}
	slices.Sort(out)
	return out
}

// fakeBin writes executable scripts into a new directory and returns it.
func fakeBin(t *testing.T, scripts map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// countInfoCalls counts the device_info RPCs an edge logged in its rpc.log.
func countInfoCalls(t *testing.T, stateDir string) int {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(stateDir, "rpc.log"))
	return strings.Count(string(b), `"method":"device_info"`)
}

// TestFleetInventory runs three real edges with different bound labels and PATHs and checks
// that the gateway keeps their inventory, that find_edges picks the right edge, that the tools
// reported are the system's and never ones planted on an edge's PATH (a probe runs them as the
// edge's user), and the MCP resources. Tool versions and a hanging --version are the edge's
// unit tests' business (TestToolVersionsFakeAndHanging), with a test hook instead of PATH.
func TestFleetInventory(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	keyA, keyB, keyDB := f.newEdgeKey(t), f.newEdgeKey(t), f.newEdgeKey(t)
	f.authorize(t, keyA, "web-a", "role=web,site=lab")
	f.authorize(t, keyB, "web-b", "role=web,site=dc")
	f.authorize(t, keyDB, "db", "role=db")
	g := f.startGateway(t, nil)
	notified := make(chan string, 64)
	g.c.OnNotification(func(n mcp.JSONRPCNotification) {
		select {
		case notified <- n.Method:
		default:
		}
	})

	// web-a has a fake git, a fake nerdctl runtime and a hanging node first on its PATH: none
	// of them may be run or reported.
	binA := fakeBin(t, map[string]string{
		"git":     `echo "git version 9.9.9-e2e"`,
		"nerdctl": `echo "nerdctl version 1.7.6"`,
		"node":    `sleep 60; echo v1.0.0`,
	})
	sysPath := "/usr/local/bin:/usr/bin:/bin"
	stateA := t.TempDir()
	f.startEdge(t, keyA, g.addr, map[string]string{"PATH": binA + ":" + sysPath, "EDGE_STATE_DIR": stateA, "EDGE_PROBE_TIMEOUT": "500ms"})
	f.startEdge(t, keyB, g.addr, map[string]string{"PATH": sysPath})
	// db claims role=web about itself: reported labels never select.
	dbEdge := f.startEdge(t, keyDB, g.addr, map[string]string{"PATH": sysPath, "EDGE_LABELS": "role=web"})
	for _, k := range []edgeKey{keyA, keyB, keyDB} {
		g.waitConnected(t, k.Fingerprint, nil)
	}

	var all findOut
	if !waitFor(60*time.Second, func() bool {
		all = decode[findOut](t, g.call(t, "find_edges", map[string]any{"sort_by": "name"}).Structured)
		return len(all.Edges) == 3 && all.Edges[0].HasInventory && all.Edges[1].HasInventory && all.Edges[2].HasInventory
	}) {
		t.Fatalf("inventories not all kept at the gateway within 60 s: %+v", all)
	}

	t.Run("find_edges picks the right edge", func(t *testing.T) {
		for _, tc := range []struct {
			args map[string]any
			want []string
		}{
			{map[string]any{"selector": "role=web"}, []string{"web-a", "web-b"}},
			{map[string]any{"selector": "role=web,site=dc"}, []string{"web-b"}},
			{map[string]any{"selector": "role=db"}, []string{"db"}},
			{map[string]any{"has_tool": "nerdctl"}, []string{}},
			{map[string]any{"selector": "role=web", "has_tool": "git", "min_free_memory": 1, "os": "linux"}, []string{"web-a", "web-b"}},
			{map[string]any{"selector": "!site"}, []string{"db"}},
			{map[string]any{"min_free_memory": uint64(1) << 60}, []string{}},
		} {
			out := decode[findOut](t, g.call(t, "find_edges", tc.args).Structured)
			if got := names(out.Edges); !slices.Equal(got, tc.want) {
				t.Errorf("find_edges %v = %v, want %v", tc.args, got, tc.want)
			}
		}
		out := decode[findOut](t, g.call(t, "find_edges", map[string]any{"selector": "role=web,site=lab", "has_tool": "git"}).Structured)
		if len(out.Edges) != 1 || out.Edges[0].Tools["git"] == "9.9.9-e2e" || out.Edges[0].CPUCores < 1 {
			t.Errorf("web-a as found (the planted git must not be the one reported): %+v", out.Edges)
		}
	})

	t.Run("get_device_info from the gateway's copy, refresh asks the edge", func(t *testing.T) {
		before := countInfoCalls(t, stateA)
		r := g.call(t, "get_device_info", map[string]any{"edge": "web-a"})
		if r.IsError {
			t.Fatal(r.Text)
		}
		type caps struct {
			Tools                    map[string]string `json:"tools"`
			ToolVersions             map[string]string `json:"tool_versions"`
			ContainerRuntimeVersions map[string]string `json:"container_runtime_versions"`
		}
		d := decode[struct {
			Labels       map[string]string `json:"labels"`
			Capabilities caps              `json:"capabilities"`
		}](t, r.Structured)
		c := d.Capabilities
		for name, path := range c.Tools {
			if strings.HasPrefix(path, binA) {
				t.Errorf("tool %s reported from the edge's planted PATH: %s", name, path)
			}
		}
		if c.ToolVersions["git"] == "9.9.9-e2e" || c.Tools["git"] == "" || c.ContainerRuntimeVersions["nerdctl"] != "" {
			t.Errorf("web-a capabilities (want the system git, no planted nerdctl): %+v", c)
		}
		if d.Labels["role"] != "web" || d.Labels["site"] != "lab" {
			t.Errorf("labels = %v, want the bound ones", d.Labels)
		}
		if n := countInfoCalls(t, stateA); n != before {
			t.Errorf("get_device_info without refresh made %d RPCs to the edge, want 0", n-before)
		}
		if r := g.call(t, "get_device_info", map[string]any{"edge": "web-a", "refresh": true}); r.IsError {
			t.Fatal(r.Text)
		}
		// The edge writes its rpc.log line just after the result frame: give it a moment.
		waitFor(2*time.Second, func() bool { return countInfoCalls(t, stateA) > before })
		if n := countInfoCalls(t, stateA); n != before+1 {
			t.Errorf("get_device_info with refresh made %d RPCs to the edge, want 1", n-before)
		}
	})

	t.Run("resources", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		listed := func() []string {
			lr, err := g.c.ListResources(ctx, mcp.ListResourcesRequest{})
			if err != nil {
				t.Fatalf("resources/list: %v", err)
			}
			var uris []string
			for _, r := range lr.Resources {
				uris = append(uris, r.URI)
			}
			slices.Sort(uris)
			return uris
		}
		if got, want := listed(), []string{"edge://db/info", "edge://edges", "edge://web-a/info", "edge://web-b/info"}; !slices.Equal(got, want) {
			t.Fatalf("resources %v, want %v", got, want)
		}
		var req mcp.ReadResourceRequest
		req.Params.URI = "edge://web-b/info"
		rr, err := g.c.ReadResource(ctx, req)
		if err != nil {
			t.Fatalf("read %s: %v", req.Params.URI, err)
		}
		var info struct {
			Edge   string            `json:"edge"`
			Labels map[string]string `json:"labels"`
			Memory struct {
				Total uint64 `json:"total"`
			} `json:"memory"`
		}
		if err := json.Unmarshal([]byte(rr.Contents[0].(mcp.TextResourceContents).Text), &info); err != nil ||
			info.Edge != "web-b" || info.Labels["site"] != "dc" || info.Memory.Total == 0 {
			t.Fatalf("edge://web-b/info = %+v, %v", info, err)
		}

		for len(notified) > 0 { // drop what came before
			<-notified
		}
		kill(t, dbEdge.Proc)
		deadline := time.After(connectTimeout)
	wait:
		for {
			select {
			case m := <-notified:
				if m == mcp.MethodNotificationResourcesListChanged {
					break wait
				}
			case <-deadline:
				t.Fatal("no notifications/resources/list_changed within 15 s of an edge leaving")
			}
		}
		if got := listed(); slices.Contains(got, "edge://db/info") {
			t.Errorf("db still listed after it left: %v", got)
		}
	})
}
