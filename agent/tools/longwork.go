package tools

import (
	"context"
	"io"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// LongFleet is what the job and download tools need besides Fleet; *gateway.Gateway
// implements it. A Fleet that does not (a test double) gets the base tools only.
type LongFleet interface {
	Fleet
	EdgeName(ref string) (string, error)
	JobStart(ctx context.Context, edge string, p protocol.JobStartParams) (protocol.JobStatus, error)
	JobGet(ctx context.Context, edge string, p protocol.JobGetParams) (protocol.JobStatus, error)
	JobCancel(ctx context.Context, edge, id string) (protocol.JobStatus, error)
	JobList(ctx context.Context, edge string) (protocol.JobList, error)
	Download(ctx context.Context, edge string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error)
}

// addLongWorkTools registers the tools for long work, many edges and large files.
func (h *handlers) addLongWorkTools(s *server.MCPServer) {
	s.AddTool(runOnEdgesTool(), typed(h.runOnEdges))
	lf, ok := h.fleet.(LongFleet)
	if !ok {
		return
	}
	j := &jobHandlers{handlers: h, fleet: lf}
	s.AddTool(startCommandTool(), typed(j.startCommand))
	s.AddTool(getCommandTool(), typed(j.getCommand))
	s.AddTool(cancelCommandTool(), typed(j.cancelCommand))
	s.AddTool(listCommandsTool(), typed(j.listCommands))
	s.AddTool(downloadTool(), typed(j.downloadFile))
}

// jobHandlers are the handlers that need a LongFleet.
type jobHandlers struct {
	*handlers
	fleet LongFleet
}
