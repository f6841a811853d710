package tools

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/policy"
)

// find_edges bounds and defaults.
const (
	findDefaultLimit = 10
	findMaxLimit     = 1000
	maxHasTools      = 16
)

// Waiting for inventories that are on their way. The gateway pulls an edge's first inventory
// under a second after it connects (put off by at most a minute in a connect storm, and bounded
// by two minutes), so an edge connected within firstInventoryWithin and still without one is
// pending: a filter that needs the inventory waits for it, up to findInventoryWait, looking
// again every findInventoryPoll (the gateway signals no arrival). An edge connected for longer
// is not waited for: its pull failed, and the next comes with the periodic refresh.
const (
	findInventoryWait    = 5 * time.Second
	findInventoryPoll    = 100 * time.Millisecond
	firstInventoryWithin = 3 * time.Minute
	maxPendingNames      = 100 // names listed in inventory_pending
)

// FindEdgesInput is find_edges' arguments.
type FindEdgesInput struct {
	Selector      string   `json:"selector,omitempty" jsonschema:"label selector over the labels bound to edges at the gateway: comma-separated terms key=value, key!=value, key (present) or !key (absent), all must hold; empty or * = every edge"`
	OS            string   `json:"os,omitempty" jsonschema:"operating system or distribution, case-insensitive: linux, debian, ubuntu, alpine, …"`
	Arch          string   `json:"arch,omitempty" jsonschema:"architecture: x86_64 (or amd64), aarch64 (or arm64), armv7l, …"`
	HasTool       string   `json:"has_tool,omitempty" jsonschema:"tool or container runtime the edge must have, e.g. docker; several comma-separated must all be present (git,python3)"`
	MinFreeMemory uint64   `json:"min_free_memory,omitempty" jsonschema:"least available memory in bytes"`
	MinFreeDisk   uint64   `json:"min_free_disk,omitempty" jsonschema:"least free bytes on one local filesystem"`
	MaxLoad       *float64 `json:"max_load,omitempty" jsonschema:"highest 1-minute load average (as in get_device_info load.load1)"`
	HasGPU        bool     `json:"has_gpu,omitempty" jsonschema:"true: only edges with a GPU"`
	ConnectedOnly *bool    `json:"connected_only,omitempty" jsonschema:"default true: only edges connected now (offline edges are matched on their last known inventory when false)"`
	SortBy        string   `json:"sort_by,omitempty" jsonschema:"order, best first: load (default: lowest load per CPU), free_memory, free_disk, cpu_cores (most first), pending_updates (fewest first) or name"`
	Limit         int      `json:"limit,omitempty" jsonschema:"most edges to return, default 10, at most 1000"`
}

// FoundEdge is one edge find_edges returns: what matters for choosing it.
type FoundEdge struct {
	Name              string            `json:"name" jsonschema:"the edge's name: pass it as edge to the other tools"`
	Fingerprint       string            `json:"fingerprint" jsonschema:"the edge's key fingerprint"`
	Connected         bool              `json:"connected" jsonschema:"whether the edge is connected now"`
	Labels            map[string]string `json:"labels" jsonschema:"labels bound at the gateway"`
	HasInventory      bool              `json:"has_inventory" jsonschema:"false until the gateway received the edge's first inventory (its figures are then zero)"`
	OS                string            `json:"os" jsonschema:"operating system"`
	Platform          string            `json:"platform" jsonschema:"distribution"`
	PlatformVersion   string            `json:"platform_version" jsonschema:"distribution version"`
	Arch              string            `json:"arch" jsonschema:"machine architecture"`
	CPUCores          int               `json:"cpu_cores" jsonschema:"logical CPUs"`
	Load1             float64           `json:"load1" jsonschema:"1-minute load average"`
	FreeMemory        uint64            `json:"free_memory" jsonschema:"available memory in bytes"`
	TotalMemory       uint64            `json:"total_memory" jsonschema:"total memory in bytes"`
	FreeDisk          uint64            `json:"free_disk" jsonschema:"free bytes on the local filesystem with the most room"`
	FreeDiskMount     string            `json:"free_disk_mount" jsonschema:"that filesystem's mount point"`
	GPU               bool              `json:"gpu" jsonschema:"whether a GPU was found"`
	ContainerRuntimes []string          `json:"container_runtimes" jsonschema:"container runtimes found"`
	PackageManager    string            `json:"package_manager" jsonschema:"package manager"`
	PendingUpdates    int               `json:"pending_updates" jsonschema:"packages with pending updates (0 when not checked)"`
	SecurityUpdates   int               `json:"security_updates" jsonschema:"of which security updates; -1 when unknown"`
	InitSystem        string            `json:"init_system" jsonschema:"init system"`
	FailedUnits       int               `json:"failed_units" jsonschema:"number of failed systemd units"`
	Tools             map[string]string `json:"tools" jsonschema:"the tools asked for in has_tool with their versions (empty string when the version is unknown)"`
	CollectedAt       string            `json:"collected_at" jsonschema:"when the edge collected these figures (RFC 3339 UTC); empty without inventory"`
}

// FindEdgesOutput is find_edges' result.
type FindEdgesOutput struct {
	Edges            []FoundEdge `json:"edges" jsonschema:"matching edges, best first"`
	Matched          int         `json:"matched" jsonschema:"how many edges matched before limit"`
	WithoutInventory int         `json:"without_inventory" jsonschema:"connected edges left out because the gateway has no inventory of them (those that just connected were waited for, up to 5 s)"`
	InventoryPending []string    `json:"inventory_pending,omitempty" jsonschema:"only when the wait for just-connected edges ran out: those still without inventory (at most 100 names), which may match; call find_edges again in a few seconds"`
}

func findEdgesTool() mcp.Tool {
	return mcp.NewTool("find_edges",
		mcp.WithDescription("Choose edges for a task: filter the fleet by gateway-bound labels (selector), OS, architecture, tools, "+
			"free memory and disk, load and GPU, and get the matches best first with the figures that matter. "+
			"Reads the inventory the gateway keeps (refreshed every few minutes; collected_at tells its age), so it is cheap: "+
			"use it instead of calling get_device_info on every edge. Right after edges connect, a filter that needs the inventory "+
			"waits up to 5 s for theirs (sending progress) and names in inventory_pending any that did not arrive. "+
			"Then use get_device_info on the chosen edge for details, or get_status for connection details."),
		hints("Find edges for a task", true, false, true, false),
		mcp.WithInputSchema[FindEdgesInput](),
		mcp.WithOutputSchema[FindEdgesOutput](),
	)
}

// archAliases maps the names architectures go by to one spelling.
var archAliases = map[string]string{"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armhf": "armv7l", "arm": "armv7l", "386": "i686", "i386": "i686"}

func canonArch(a string) string {
	a = strings.ToLower(strings.TrimSpace(a))
	if c, ok := archAliases[a]; ok {
		return c
	}
	return a
}

// sortKeys are find_edges' sort orders: each compares two candidates, best first.
var sortKeys = map[string]func(a, b *gateway.InventorySummary) int{
	"load": func(a, b *gateway.InventorySummary) int {
		return cmp.Compare(a.Load1/float64(max(a.LogicalCores, 1)), b.Load1/float64(max(b.LogicalCores, 1)))
	},
	"free_memory":     func(a, b *gateway.InventorySummary) int { return cmp.Compare(b.MemoryAvailable, a.MemoryAvailable) },
	"free_disk":       func(a, b *gateway.InventorySummary) int { return cmp.Compare(b.DiskFree, a.DiskFree) },
	"cpu_cores":       func(a, b *gateway.InventorySummary) int { return cmp.Compare(b.LogicalCores, a.LogicalCores) },
	"pending_updates": func(a, b *gateway.InventorySummary) int { return cmp.Compare(a.PendingUpdates, b.PendingUpdates) },
	"name":            func(a, b *gateway.InventorySummary) int { return 0 },
}

// findQuery is a find_edges call's arguments, checked and parsed.
type findQuery struct {
	in             FindEdgesInput
	sel            policy.Selector
	less           func(a, b *gateway.InventorySummary) int
	tools          []string
	osWant         string
	archWant       string
	connectedOnly  bool
	needsInventory bool // some filter reads the inventory
}

// parseFindQuery checks in and fills its defaults; the error is the one-line message.
func parseFindQuery(in FindEdgesInput) (findQuery, error) {
	sel, err := policy.ParseSelector(in.Selector)
	if err != nil {
		return findQuery{}, err
	}
	if in.SortBy == "" {
		in.SortBy = "load"
	}
	less, ok := sortKeys[in.SortBy]
	if !ok {
		return findQuery{}, fmt.Errorf("sort_by %q is not one of load, free_memory, free_disk, cpu_cores, pending_updates, name", oneLine(in.SortBy))
	}
	if in.Limit < 0 || in.Limit > findMaxLimit {
		return findQuery{}, fmt.Errorf("limit must be between 1 and %d", findMaxLimit)
	}
	if in.Limit == 0 {
		in.Limit = findDefaultLimit
	}
	if len(in.OS) > 64 || len(in.Arch) > 64 || len(in.HasTool) > 1024 {
		return findQuery{}, errors.New("os, arch or has_tool is too long")
	}
	var tools []string
	for t := range strings.SplitSeq(in.HasTool, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tools = append(tools, t)
		}
	}
	if len(tools) > maxHasTools {
		return findQuery{}, fmt.Errorf("has_tool names %d tools (max %d)", len(tools), maxHasTools)
	}
	return findQuery{
		in: in, sel: sel, less: less, tools: tools,
		osWant: strings.ToLower(strings.TrimSpace(in.OS)), archWant: canonArch(in.Arch),
		connectedOnly: in.ConnectedOnly == nil || *in.ConnectedOnly,
		needsInventory: in.OS != "" || in.Arch != "" || len(tools) > 0 || in.MinFreeMemory > 0 || in.MinFreeDisk > 0 ||
			in.MaxLoad != nil || in.HasGPU,
	}, nil
}

func (h *handlers) findEdges(ctx context.Context, req mcp.CallToolRequest, in FindEdgesInput) *mcp.CallToolResult {
	q, err := parseFindQuery(in)
	if err != nil {
		return errResult(err.Error())
	}
	sees := h.edgeFilter(ctx)
	out, pending := h.searchEdges(q, sees, time.Now())
	if len(pending) > 0 {
		out, pending = h.awaitInventories(ctx, req, q, sees, pending)
	}
	if len(pending) > 0 {
		out.InventoryPending = pending[:min(len(pending), maxPendingNames)]
	}
	return okResult(out)
}

// awaitInventories repeats the search every findInventoryPoll until no edge that might match
// is pending, findInventoryWait passes or ctx ends, sending progress meanwhile when the request
// asked for it. It returns the last search's result and the edges still pending.
func (h *handlers) awaitInventories(ctx context.Context, req mcp.CallToolRequest, q findQuery, sees func(map[string]string) bool,
	pending []string) (FindEdgesOutput, []string) {
	var pr *progress
	if req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil {
		pr = startProgress(ctx, req.Params.Meta.ProgressToken, h.cfg.Log)
		defer pr.stop()
	}
	report := func(n int) {
		if pr != nil {
			pr.add(fmt.Appendf(nil, "waiting up to %s for the first inventory of %d just-connected edge(s)\n", findInventoryWait, n))
		}
	}
	report(len(pending))
	deadline := time.NewTimer(findInventoryWait)
	defer deadline.Stop()
	poll := time.NewTicker(findInventoryPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done(): // the client gave up: nobody reads the answer
			return FindEdgesOutput{Edges: []FoundEdge{}}, pending
		case <-deadline.C:
			return h.searchEdges(q, sees, time.Now())
		case <-poll.C:
		}
		out, still := h.searchEdges(q, sees, time.Now())
		if len(still) == 0 {
			return out, nil
		}
		if len(still) != len(pending) {
			report(len(still))
		}
		pending = still
	}
}

// searchEdges answers q from the inventories the gateway holds now. It also returns the names
// of the connected edges left out only because their first inventory is still on its way.
func (h *handlers) searchEdges(q findQuery, sees func(map[string]string) bool, now time.Time) (FindEdgesOutput, []string) {
	out := FindEdgesOutput{Edges: []FoundEdge{}}
	var matched []gateway.EdgeInventory
	var pending []string
	for _, e := range h.fleet.Inventories(q.connectedOnly) {
		if !q.sel.Matches(e.Status.Labels) || !sees(e.Status.Labels) {
			continue
		}
		s := e.Summary
		if s == nil {
			if q.needsInventory {
				if e.Status.Connected {
					out.WithoutInventory++
					if since := e.Status.ConnectedSince; !since.IsZero() && now.Sub(since) < firstInventoryWithin {
						pending = append(pending, e.Status.Name)
					}
				}
				continue
			}
		} else if !summaryMatches(s, q.osWant, q.archWant, q.tools, q.in) {
			continue
		}
		matched = append(matched, e)
	}
	slices.SortStableFunc(matched, func(a, b gateway.EdgeInventory) int {
		if a.Status.Connected != b.Status.Connected { // connected first
			if a.Status.Connected {
				return -1
			}
			return 1
		}
		if (a.Summary == nil) != (b.Summary == nil) { // with inventory first
			if a.Summary != nil {
				return -1
			}
			return 1
		}
		if a.Summary != nil {
			if c := q.less(a.Summary, b.Summary); c != 0 {
				return c
			}
		}
		return strings.Compare(a.Status.Name, b.Status.Name)
	})
	out.Matched = len(matched)
	for _, e := range matched[:min(len(matched), q.in.Limit)] {
		out.Edges = append(out.Edges, foundEdge(e, q.tools))
	}
	return out, pending
}

// summaryMatches applies find_edges' inventory filters.
func summaryMatches(s *gateway.InventorySummary, osWant, archWant string, tools []string, in FindEdgesInput) bool {
	if osWant != "" && !strings.EqualFold(s.OS, osWant) && !strings.EqualFold(s.Platform, osWant) {
		return false
	}
	if archWant != "" && canonArch(s.Arch) != archWant {
		return false
	}
	for _, t := range tools {
		if !s.HasTool(t) {
			return false
		}
	}
	if s.MemoryAvailable < in.MinFreeMemory || s.DiskFree < in.MinFreeDisk {
		return false
	}
	if in.MaxLoad != nil && s.Load1 > *in.MaxLoad {
		return false
	}
	return !in.HasGPU || s.GPU
}

// foundEdge builds one result row.
func foundEdge(e gateway.EdgeInventory, tools []string) FoundEdge {
	f := FoundEdge{
		Name: e.Status.Name, Fingerprint: e.Status.Fingerprint, Connected: e.Status.Connected,
		Labels: nonNilMap(e.Status.Labels), OS: e.Status.OS, Arch: e.Status.Arch,
		ContainerRuntimes: []string{}, Tools: map[string]string{}, SecurityUpdates: -1,
	}
	s := e.Summary
	if s == nil {
		return f
	}
	f.HasInventory = true
	f.OS, f.Platform, f.PlatformVersion, f.Arch = s.OS, s.Platform, s.PlatformVersion, s.Arch
	f.CPUCores, f.Load1, f.FreeMemory, f.TotalMemory = s.LogicalCores, s.Load1, s.MemoryAvailable, s.MemoryTotal
	f.FreeDisk, f.FreeDiskMount, f.GPU = s.DiskFree, s.DiskFreeMount, s.GPU
	f.ContainerRuntimes = append(f.ContainerRuntimes, s.ContainerRuntimes...)
	f.PackageManager, f.InitSystem, f.FailedUnits = s.PackageManager, s.InitSystem, s.FailedUnits
	f.PendingUpdates, f.SecurityUpdates = s.PendingUpdates, s.SecurityUpdates
	for _, t := range tools {
		f.Tools[t] = s.ToolVersion(t)
	}
	f.CollectedAt = rfc3339(s.CollectedAt)
	return f
}
