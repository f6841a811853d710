package tools

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

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
	WithoutInventory int         `json:"without_inventory" jsonschema:"connected edges left out because their inventory has not arrived yet (retry in a few seconds)"`
}

func findEdgesTool() mcp.Tool {
	return mcp.NewTool("find_edges",
		mcp.WithDescription("Choose edges for a task: filter the fleet by gateway-bound labels (selector), OS, architecture, tools, "+
			"free memory and disk, load and GPU, and get the matches best first with the figures that matter. "+
			"Reads the inventory the gateway keeps (refreshed every few minutes; collected_at tells its age), so it is cheap: "+
			"use it instead of calling get_device_info on every edge. Then use get_device_info on the chosen edge for details, "+
			"or get_status for connection details."),
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

func (h *handlers) findEdges(ctx context.Context, _ mcp.CallToolRequest, in FindEdgesInput) *mcp.CallToolResult {
	sel, err := policy.ParseSelector(in.Selector)
	if err != nil {
		return errResult(err.Error())
	}
	if in.SortBy == "" {
		in.SortBy = "load"
	}
	less, ok := sortKeys[in.SortBy]
	if !ok {
		return errResult(fmt.Sprintf("sort_by %q is not one of load, free_memory, free_disk, cpu_cores, pending_updates, name", oneLine(in.SortBy)))
	}
	if in.Limit < 0 || in.Limit > findMaxLimit {
		return errResult(fmt.Sprintf("limit must be between 1 and %d", findMaxLimit))
	}
	if in.Limit == 0 {
		in.Limit = findDefaultLimit
	}
	if len(in.OS) > 64 || len(in.Arch) > 64 || len(in.HasTool) > 1024 {
		return errResult("os, arch or has_tool is too long")
	}
	var tools []string
	for t := range strings.SplitSeq(in.HasTool, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tools = append(tools, t)
		}
	}
	if len(tools) > maxHasTools {
		return errResult(fmt.Sprintf("has_tool names %d tools (max %d)", len(tools), maxHasTools))
	}
	connectedOnly := in.ConnectedOnly == nil || *in.ConnectedOnly
	needsInventory := in.OS != "" || in.Arch != "" || len(tools) > 0 || in.MinFreeMemory > 0 || in.MinFreeDisk > 0 ||
		in.MaxLoad != nil || in.HasGPU
	osWant, archWant := strings.ToLower(strings.TrimSpace(in.OS)), canonArch(in.Arch)

	out := FindEdgesOutput{Edges: []FoundEdge{}}
	var matched []gateway.EdgeInventory
	sees := h.edgeFilter(ctx)
	for _, e := range h.fleet.Inventories(connectedOnly) {
		if !sel.Matches(e.Status.Labels) || !sees(e.Status.Labels) {
			continue
		}
		s := e.Summary
		if s == nil {
			if needsInventory {
				if e.Status.Connected {
					out.WithoutInventory++
				}
				continue
			}
		} else if !summaryMatches(s, osWant, archWant, tools, in) {
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
			if c := less(a.Summary, b.Summary); c != 0 {
				return c
			}
		}
		return strings.Compare(a.Status.Name, b.Status.Name)
	})
	out.Matched = len(matched)
	for _, e := range matched[:min(len(matched), in.Limit)] {
		out.Edges = append(out.Edges, foundEdge(e, tools))
	}
	return okResult(out)
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
