package tools_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// fakeInventory is the fake fleet's inventory: summaries by fingerprint and a change signal.
type fakeInventory struct {
	sums    map[string]*gateway.InventorySummary
	arrives map[string]time.Time // a summary listed here is held back until then (its pull is under way)
	changes chan struct{}
}

func (f *fakeFleet) Inventories(connectedOnly bool) []gateway.EdgeInventory {
	var out []gateway.EdgeInventory
	now := time.Now()
	for _, e := range f.Edges(connectedOnly) {
		s := f.inv.sums[e.Fingerprint]
		if at, ok := f.inv.arrives[e.Fingerprint]; ok && now.Before(at) {
			s = nil
		}
		out = append(out, gateway.EdgeInventory{Status: e, Summary: s})
	}
	return out
}

func (f *fakeFleet) WatchEdges(ctx context.Context) <-chan struct{} {
	if f.inv.changes == nil {
		return make(chan struct{})
	}
	return f.inv.changes
}

// fleetOfFour: web1 (busy, docker), web2 (idle, docker, small disk), db (arm, lots of memory),
// gpu (offline, GPU), and new (connected, no inventory yet).
func fleetOfFour() *fakeFleet {
	sum := func(arch string, cores int, load float64, mem, disk uint64, gpu bool, tools ...string) *gateway.InventorySummary {
		slices.Sort(tools)
		s := &gateway.InventorySummary{OS: "linux", Platform: "debian", PlatformVersion: "12", Arch: arch, LogicalCores: cores,
			Load1: load, MemoryAvailable: mem, MemoryTotal: 2 * mem, DiskFree: disk, DiskFreeMount: "/", GPU: gpu,
			Tools: tools, ToolVersions: make([]string, len(tools)), SecurityUpdates: -1,
			CollectedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
		for i := range tools {
			s.ToolVersions[i] = "1." + tools[i]
		}
		return s
	}
	return &fakeFleet{
		edges: []gateway.EdgeStatus{
			{Name: "db", Fingerprint: "SHA256:db", Connected: true, Labels: map[string]string{"role": "db", "site": "lab"}},
			{Name: "gpu", Fingerprint: "SHA256:gpu", Connected: false, Labels: map[string]string{"role": "ml"}},
			{Name: "new", Fingerprint: "SHA256:new", Connected: true, Labels: map[string]string{"role": "web"}},
			{Name: "web1", Fingerprint: "SHA256:web1", Connected: true, Labels: map[string]string{"role": "web", "site": "lab"}},
			{Name: "web2", Fingerprint: "SHA256:web2", Connected: true, Labels: map[string]string{"role": "web", "site": "dc"}},
		},
		inv: fakeInventory{sums: map[string]*gateway.InventorySummary{
			"SHA256:db":   sum("aarch64", 4, 0.1, 32<<30, 100<<30, false, "git", "python3"),
			"SHA256:gpu":  sum("x86_64", 16, 0, 64<<30, 500<<30, true, "docker", "python3"),
			"SHA256:web1": sum("x86_64", 2, 1.8, 2<<30, 50<<30, false, "docker", "git"),
			"SHA256:web2": sum("x86_64", 2, 0.2, 4<<30, 5<<30, false, "docker", "git"),
		}},
	}
}

func TestFindEdges(t *testing.T) {
	h := newHarness(t, fleetOfFour(), baseConfig())
	tests := []struct {
		name      string
		args      map[string]any
		want      []string
		noInv     int
		wantError string
	}{
		{"everything connected, least loaded first (no inventory last)", map[string]any{}, []string{"db", "web2", "web1", "new"}, 0, ""},
		{"selector on bound labels", map[string]any{"selector": "role=web,site!=dc"}, []string{"web1", "new"}, 0, ""},
		{"selector presence and absence", map[string]any{"selector": "site,!missing"}, []string{"db", "web2", "web1"}, 0, ""},
		{"has_tool docker", map[string]any{"has_tool": "docker"}, []string{"web2", "web1"}, 1, ""},
		{"has_tool several", map[string]any{"has_tool": "git, python3"}, []string{"db"}, 1, ""},
		{"arch alias", map[string]any{"arch": "arm64"}, []string{"db"}, 1, ""},
		{"os by distribution", map[string]any{"os": "Debian", "sort_by": "name"}, []string{"db", "web1", "web2"}, 1, ""},
		{"free disk and memory", map[string]any{"min_free_disk": int64(10 << 30), "min_free_memory": int64(2 << 30), "sort_by": "free_memory"}, []string{"db", "web1"}, 1, ""},
		{"max load", map[string]any{"max_load": 1.0, "sort_by": "free_disk"}, []string{"db", "web2"}, 1, ""},
		{"offline included with their last inventory", map[string]any{"connected_only": false, "has_gpu": true}, []string{"gpu"}, 1, ""},
		{"limit", map[string]any{"limit": 1, "sort_by": "cpu_cores"}, []string{"db"}, 0, ""},
		{"bad sort", map[string]any{"sort_by": "cheapest"}, nil, 0, "sort_by"},
		{"bad selector", map[string]any{"selector": "role=web,=x"}, nil, 0, "selector term"},
		{"bad limit", map[string]any{"limit": 5000}, nil, 0, "limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := h.call("find_edges", tc.args)
			if tc.wantError != "" {
				if !res.IsError || !strings.Contains(text(res), tc.wantError) {
					t.Fatalf("isError=%v %q, want an error about %s", res.IsError, text(res), tc.wantError)
				}
				return
			}
			if res.IsError {
				t.Fatalf("isError: %s", text(res))
			}
			var out tools.FindEdgesOutput
			structured(t, res, &out)
			var got []string
			for _, e := range out.Edges {
				got = append(got, e.Name)
			}
			if !slices.Equal(got, tc.want) || out.WithoutInventory != tc.noInv {
				t.Fatalf("edges %v without_inventory %d; want %v, %d", got, out.WithoutInventory, tc.want, tc.noInv)
			}
		})
	}
	t.Run("fields that matter", func(t *testing.T) {
		var out tools.FindEdgesOutput
		structured(t, h.call("find_edges", map[string]any{"has_tool": "docker", "limit": 1}), &out)
		e := out.Edges[0]
		if e.Name != "web2" || e.Tools["docker"] != "1.docker" || e.FreeMemory != 4<<30 || e.CPUCores != 2 || !e.HasInventory ||
			e.Labels["site"] != "dc" || e.CollectedAt != "2026-01-01T00:00:00Z" || out.Matched != 2 {
			t.Fatalf("got %+v (matched %d)", e, out.Matched)
		}
	})
}

// TestResources lists and reads the edge resources through an MCP client, and sees
// notifications/resources/list_changed when an edge goes away.
func TestResources(t *testing.T) {
	f := fleetOfFour()
	f.inv.changes = make(chan struct{}, 1)
	f.infoFn = func(_ context.Context, edge string, refresh bool) (protocol.DeviceInfo, error) {
		if edge != "web1" || refresh {
			return protocol.DeviceInfo{}, gateway.ErrUnknownEdge
		}
		return protocol.DeviceInfo{Hostname: "web1-host", Labels: map[string]string{"role": "web"}}, nil
	}
	h := newHarness(t, f, baseConfig())
	notified := make(chan string, 16)
	h.c.OnNotification(func(n mcp.JSONRPCNotification) { notified <- n.Method })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	lr, err := h.c.ListResources(ctx, mcp.ListResourcesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, r := range lr.Resources {
		uris = append(uris, r.URI)
	}
	slices.Sort(uris)
	want := []string{"edge://db/info", "edge://edges", "edge://new/info", "edge://web1/info", "edge://web2/info"}
	if !slices.Equal(uris, want) {
		t.Fatalf("resources %v, want %v", uris, want)
	}
	lt, err := h.c.ListResourceTemplates(ctx, mcp.ListResourceTemplatesRequest{})
	if err != nil || len(lt.ResourceTemplates) != 1 || lt.ResourceTemplates[0].URITemplate.Raw() != "edge://{name}/info" {
		t.Fatalf("templates %+v, %v", lt, err)
	}

	read := func(uri string) (string, error) {
		var req mcp.ReadResourceRequest
		req.Params.URI = uri
		rr, err := h.c.ReadResource(ctx, req)
		if err != nil {
			return "", err
		}
		return rr.Contents[0].(mcp.TextResourceContents).Text, nil
	}
	txt, err := read("edge://web1/info")
	var info protocol.DeviceInfo
	if err != nil || json.Unmarshal([]byte(txt), &info) != nil || info.Hostname != "web1-host" || info.Edge != "web1" || info.Disks == nil {
		t.Fatalf("edge://web1/info = %s, %v", txt, err)
	}
	txt, err = read("edge://edges")
	var list struct{ Edges []tools.EdgeListEntry }
	if err != nil || json.Unmarshal([]byte(txt), &list) != nil || len(list.Edges) != 5 || list.Edges[4].InfoURI != "edge://web2/info" {
		t.Fatalf("edge://edges = %s, %v", txt, err)
	}
	if _, err := read("edge://nosuch/info"); err == nil || !strings.Contains(err.Error(), "unknown edge") {
		t.Fatalf("unknown edge read: %v", err)
	}

	// web1 disconnects: the watcher unlists it and the client is told.
	wctx, wcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tools.WatchResources(wctx, h.srv, f) }()
	defer func() { wcancel(); <-done }()
	f.mu.Lock()
	f.edges[3].Connected = false
	f.mu.Unlock()
	f.inv.changes <- struct{}{}
	select {
	case m := <-notified:
		if m != "notifications/resources/list_changed" {
			t.Fatalf("notification %q", m)
		}
	case <-ctx.Done():
		t.Fatal("no list_changed notification")
	}
	lr, err = h.c.ListResources(ctx, mcp.ListResourcesRequest{})
	if err != nil || len(lr.Resources) != 4 {
		t.Fatalf("after disconnect: %d resources, %v", len(lr.Resources), err)
	}
}

// TestFindEdgesWaitsForFirstInventory: edges that just connected and whose first inventory is
// on its way are waited for (up to 5 s, with progress) when a filter needs the inventory, so
// that a model that just enrolled two edges is not told that none of them has git. Only when
// the wait runs out does the result name the edges still without inventory.
func TestFindEdgesWaitsForFirstInventory(t *testing.T) {
	const soon, never = 300 * time.Millisecond, time.Hour
	git := &gateway.InventorySummary{OS: "linux", Arch: "x86_64", LogicalCores: 2, Tools: []string{"git"}, ToolVersions: []string{"2.39"},
		SecurityUpdates: -1, CollectedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	tests := []struct {
		name        string
		connectedAt time.Duration    // how long ago cam1 and cam2 connected
		arriveIn    [2]time.Duration // when their first inventories arrive
		args        map[string]any
		want        []string
		noInv       int
		pending     []string
		minWait     time.Duration
		maxWait     time.Duration
	}{
		{"both arrive during the wait", 0, [2]time.Duration{soon, soon / 2}, map[string]any{"has_tool": "git"},
			[]string{"cam1", "cam2"}, 0, nil, soon, 4 * time.Second},
		{"one never arrives: the wait runs out and names it", 0, [2]time.Duration{soon, never}, map[string]any{"has_tool": "git"},
			[]string{"cam1"}, 1, []string{"cam2"}, 5 * time.Second, 8 * time.Second},
		{"connected long ago: its pull failed, no wait", 10 * time.Minute, [2]time.Duration{never, never}, map[string]any{"arch": "amd64"},
			nil, 2, nil, 0, 2 * time.Second},
		{"no inventory filter: no wait, listed without inventory", 0, [2]time.Duration{never, never}, map[string]any{"selector": "site=lab"},
			[]string{"cam1", "cam2"}, 0, nil, 0, 2 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			f := &fakeFleet{
				edges: []gateway.EdgeStatus{
					{Name: "cam1", Fingerprint: "SHA256:cam1", Connected: true, ConnectedSince: now.Add(-tc.connectedAt), Labels: map[string]string{"site": "lab"}},
					{Name: "cam2", Fingerprint: "SHA256:cam2", Connected: true, ConnectedSince: now.Add(-tc.connectedAt), Labels: map[string]string{"site": "lab"}},
				},
				inv: fakeInventory{sums: map[string]*gateway.InventorySummary{"SHA256:cam1": git, "SHA256:cam2": git}},
			}
			h := newHarness(t, f, baseConfig())
			now = time.Now() // the inventories arrive counting from the call, whatever the harness took
			f.inv.arrives = map[string]time.Time{"SHA256:cam1": now.Add(tc.arriveIn[0]), "SHA256:cam2": now.Add(tc.arriveIn[1])}
			progress := make(chan string, 64)
			h.c.OnNotification(func(n mcp.JSONRPCNotification) {
				if n.Method == "notifications/progress" && n.Params.AdditionalFields["progressToken"] == "find" {
					m, _ := n.Params.AdditionalFields["message"].(string)
					select {
					case progress <- m:
					default:
					}
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res := h.callCtx(ctx, "find_edges", tc.args, &mcp.Meta{ProgressToken: "find"})
			took := time.Since(now)
			if res.IsError {
				t.Fatalf("isError: %s", text(res))
			}
			var out tools.FindEdgesOutput
			structured(t, res, &out)
			var got []string
			for _, e := range out.Edges {
				got = append(got, e.Name)
			}
			if !slices.Equal(got, tc.want) || out.Matched != len(tc.want) || out.WithoutInventory != tc.noInv || !slices.Equal(out.InventoryPending, tc.pending) {
				t.Fatalf("edges %v matched %d without_inventory %d inventory_pending %v; want %v, %d, %v",
					got, out.Matched, out.WithoutInventory, out.InventoryPending, tc.want, tc.noInv, tc.pending)
			}
			if took < tc.minWait || took > tc.maxWait {
				t.Fatalf("answered after %s, want between %s and %s", took, tc.minWait, tc.maxWait)
			}
			if tc.minWait == 0 {
				return
			}
			select {
			case m := <-progress:
				if !strings.Contains(m, "first inventory") {
					t.Fatalf("progress %q", m)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("no progress notification while waiting")
			}
		})
	}
}
