package tools

import (
	"context"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// DeviceInfoInput is get_device_info's arguments.
type DeviceInfoInput struct {
	Edge    string `json:"edge" jsonschema:"the edge to describe: its name from get_status (or its SHA256 key fingerprint)"`
	Refresh bool   `json:"refresh,omitempty" jsonschema:"true to have the edge collect everything anew (tool versions and pending updates included; takes seconds) instead of reading the copy the gateway keeps"`
}

func deviceInfoTool() mcp.Tool {
	return mcp.NewTool("get_device_info",
		mcp.WithDescription("Describe one edge device: OS and distribution, kernel, architecture, CPU, memory, disks, network interfaces, load, "+
			"capabilities (common tools with paths and versions, package manager, init system and failed units, container runtimes with versions), "+
			"GPU, pending package updates and the edge's gateway-bound labels. Served from the copy the gateway keeps (collected_at tells its age); "+
			"refresh: true asks the edge to collect everything anew, slow probes included (takes seconds). "+
			"Use it before run_command to choose the right commands for the device; to choose among edges use find_edges, for the list of edges get_status."),
		hints("Edge device information", true, false, true, true),
		mcp.WithInputSchema[DeviceInfoInput](),
		mcp.WithOutputSchema[protocol.DeviceInfo](),
	)
}

func (h *handlers) getDeviceInfo(ctx context.Context, req mcp.CallToolRequest, in DeviceInfoInput) *mcp.CallToolResult {
	const tool = "get_device_info"
	c, res := h.begin(ctx, req, tool, in.Edge, ask{}, audit.Event{})
	if res != nil {
		return res
	}
	start := time.Now()
	info, err := c.edge.DeviceInfo(ctx, c.id, in.Refresh)
	ev := audit.Event{DurationMs: audit.Ptr(time.Since(start).Milliseconds())}
	if err != nil {
		c.end(outcomeOf(err), err, ev)
		return errResult(edgeMessage(c.name, err))
	}
	c.end("ok", nil, ev)
	info.Edge = c.name
	normalizeDeviceInfo(&info)
	return okResult(info)
}

// normalizeDeviceInfo makes every array and map non-nil, as the output contract requires.
func normalizeDeviceInfo(d *protocol.DeviceInfo) { d.Normalize() }
