// Package tools is the MCP face of the gateway: it declares the MCP tools (names, schemas,
// annotations, descriptions written for a model) and maps each call onto the gateway's typed
// RPC calls, turning every failure a model can act on into a one-line isError result.
package tools

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/memory"
)

// Fleet is what the tools need from the SSH side; *gateway.Gateway implements it. Declared
// here so the MCP layer can be tested without any SSH.
type Fleet interface {
	Info() gateway.Info
	Edges(connectedOnly bool) []gateway.EdgeStatus // sorted by name, maps non-nil
	// Edge resolves a name or fingerprint once; the call's RPCs go through the handle.
	Edge(ref string) (gateway.Edge, error)
	RegisterKey(line, name string, labels map[string]string) (gateway.KeyAdded, error)
	// Inventories lists the edges with the inventory the gateway keeps (find_edges).
	Inventories(connectedOnly bool) []gateway.EdgeInventory
	// WatchEdges signals (coalesced) when edges connect or disconnect, until ctx ends.
	WatchEdges(ctx context.Context) <-chan struct{}
}

// The gateway must keep serving every tool: a method that drifts from these interfaces
// fails the build instead of silently dropping the key tools.
var (
	_ Fleet    = (*gateway.Gateway)(nil)
	_ KeyAdmin = (*gateway.Gateway)(nil)
)

// Config holds the settings the tools enforce. Zero values get the SPEC defaults.
type Config struct {
	Version          string
	GatewayID        string        // GATEWAY_ID, on the audit lines of calls relayed to another gateway
	ExecTimeout      time.Duration // default run_command timeout (EXEC_TIMEOUT)
	ExecTimeoutMax   time.Duration // largest timeout a call may ask (EXEC_TIMEOUT_MAX)
	MaxOutputBytes   int64         // per-stream cap on captured output (MAX_OUTPUT_BYTES)
	MaxUploadBytes   int64         // largest upload_file content (MAX_UPLOAD_BYTES)
	FilesDir         string        // the only directory source_path and dest_path may name (FILES_DIR); "" disables them
	MaxTransferBytes int64         // largest source_path / dest_path transfer (MAX_TRANSFER_BYTES)
	ProvisionToken   string        // guards register_edge_key; empty disables it
	Actor            string        // who calls, for the audit log: "stdio" or "http:<name>"
	Audit            *audit.Logger // nil: no audit log
	Access           Access        // the gateway's policy (POLICY_FILE) and approvals; zero: allow all
	ClientPublicKey  string        // the key the gateway logs in to forward edges with (get_agent_pubkey); "" in reverse mode
	JobAnswerWait    time.Duration // how long a run_command turned into a job waits before answering with its id; default 45s
	Log              *slog.Logger  // nil: slog.Default()
}

func (c *Config) fill() {
	if c.ExecTimeout <= 0 {
		c.ExecTimeout = 30 * time.Second
	}
	if c.ExecTimeoutMax <= 0 {
		c.ExecTimeoutMax = time.Hour
	}
	if c.ExecTimeout > c.ExecTimeoutMax {
		c.ExecTimeout = c.ExecTimeoutMax
	}
	if c.JobAnswerWait <= 0 {
		c.JobAnswerWait = defaultJobAnswerWait
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = 1 << 20
	}
	if c.MaxUploadBytes <= 0 {
		c.MaxUploadBytes = 64 << 20
	}
	if c.MaxTransferBytes <= 0 {
		c.MaxTransferBytes = 16 << 30
	}
	if c.Actor == "" {
		c.Actor = "stdio"
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// instructions is sent to the client at initialize: the workflow in a few lines.
const instructions = `mcp-ssh-gateway runs commands and writes files on a fleet of edge devices that keep an SSH tunnel to this gateway.
Workflow:
1. Call get_status to see the edges (name, labels, connected) and pick one by its name; an edge can also be addressed by its key fingerprint (SHA256:...).
2. To choose an edge for a task, call find_edges (filters: label selector, os, arch, has_tool, free memory/disk, load; best first); call get_device_info on an edge for its details (OS, disks, tools with versions, pending updates).
3. Run programs with run_command. Prefer argv (no shell, no quoting problems) over command (a /bin/sh -c string); use command only for pipes or redirection.
4. For work longer than a minute use start_command, then call get_command with since=next_since and wait_seconds=30 until status is no longer running; the job survives disconnects and restarts. For shorter work raise run_command's timeout_seconds (output streams as progress notifications).
5. To run the same command on many edges use run_on_edges with a label selector (e.g. role=web) or *.
6. Write files with upload_file (absolute path; base64 for binary content), read them with download_file; for large files use source_path / dest_path inside the gateway's FILES_DIR.
A failed call returns isError with one line saying what to do next.`

// NewServer builds the MCP server with every tool bound to f.
func NewServer(f Fleet, cfg Config) *server.MCPServer {
	cfg.fill()
	h := &handlers{fleet: f, cfg: cfg, guard: newTokenGuard()}
	s := server.NewMCPServer("mcp-ssh-gateway", cfg.Version,
		server.WithToolCapabilities(false),
		server.WithResourceCapabilities(false, true),
		server.WithInstructions(instructions),
		server.WithRecovery(),
		server.WithOutputSchemaValidation(),
		server.WithToolFilter(h.visibleTools),
		server.WithElicitation(),
	)
	s.AddTool(statusTool(), typed(h.getStatus))
	s.AddTool(pubkeyTool(), typed(h.getAgentPubkey))
	s.AddTool(registerKeyTool(), typed(h.registerEdgeKey))
	s.AddTool(runCommandTool(), typed(h.runCommand))
	s.AddTool(uploadTool(), typed(h.uploadFile))
	s.AddTool(deviceInfoTool(), typed(h.getDeviceInfo))
	// Key lifecycle (revoke, pending, enrolment), when the Fleet can administer keys.
	if ka, ok := f.(KeyAdmin); ok {
		addKeyAdminTools(s, h, ka)
	}
	s.AddTool(runOnEdgesTool(), typed(h.runOnEdges))
	s.AddTool(startCommandTool(), typed(h.startCommand))
	s.AddTool(getCommandTool(), typed(h.getCommand))
	s.AddTool(cancelCommandTool(), typed(h.cancelCommand))
	s.AddTool(listCommandsTool(), typed(h.listCommands))
	s.AddTool(downloadTool(), typed(h.downloadFile))
	// Fleet inventory: choosing an edge, and the fleet as MCP resources.
	s.AddTool(findEdgesTool(), typed(h.findEdges))
	h.addPolicyTools(s)
	registerResources(s, f, h.edgeFilter, cfg.Access.Policy == nil)
	checkArguments(s, cfg.Log)
	return s
}

// Stdio serving bounds: tool calls served at once, and calls queued beyond them.
const (
	stdioWorkers = 64
	stdioQueue   = 256
)

// ServeStdio serves s over in/out (newline-delimited JSON-RPC) until in reaches EOF or ctx is
// done; both are a normal end and return nil. Up to 64 tool calls run at once.
func ServeStdio(ctx context.Context, s *server.MCPServer, in io.Reader, out io.Writer) error {
	ss := server.NewStdioServer(s)
	ss.SetErrorLogger(slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn))
	server.WithWorkerPoolSize(stdioWorkers)(ss)
	server.WithQueueSize(stdioQueue)(ss)
	err := ss.Listen(ctx, in, out)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mcp stdio: %w", err)
	}
	return nil
}

// handlers carries what every tool handler needs.
type handlers struct {
	fleet   Fleet
	cfg     Config
	guard   *tokenGuard     // wrong provisioning tokens per client
	release memory.Releaser // after big content uploads
}

// hints sets a tool's title and its four annotation hints: read-only, destructive, idempotent,
// open-world.
func hints(title string, readOnly, destructive, idempotent, openWorld bool) mcp.ToolOption {
	return func(t *mcp.Tool) {
		for _, o := range []mcp.ToolOption{
			mcp.WithTitleAnnotation(title),
			mcp.WithReadOnlyHintAnnotation(readOnly),
			mcp.WithDestructiveHintAnnotation(destructive),
			mcp.WithIdempotentHintAnnotation(idempotent),
			mcp.WithOpenWorldHintAnnotation(openWorld),
		} {
			o(t)
		}
	}
}

// typed adapts a handler taking decoded arguments to mcp-go's handler type. Arguments that do
// not decode are an isError result, never a JSON-RPC error.
func typed[In any](fn func(ctx context.Context, req mcp.CallToolRequest, in In) *mcp.CallToolResult) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		var in In
		if err := req.BindArguments(&in); err != nil {
			return errResult(fmt.Sprintf("invalid arguments: %v; check the tool's input schema", err)), nil
		}
		return fn(ctx, req, in), nil
	}
}

// okResult is a success: structured content plus its JSON text copy. v is marshalled once:
// the structured content is those bytes (json.RawMessage), which mcp-go's output validation
// and its response encoder take as they are instead of marshalling v twice more.
func okResult(v any) *mcp.CallToolResult {
	b, err := json.Marshal(v)
	if err != nil {
		return errResult(fmt.Sprintf("internal error: cannot encode the result: %v", err))
	}
	return &mcp.CallToolResult{
		Content:           []mcp.Content{mcp.NewTextContent(string(b))},
		StructuredContent: json.RawMessage(b),
	}
}

// resultMessage is the one-line message of a failure result.
func resultMessage(res *mcp.CallToolResult) string {
	if len(res.Content) > 0 {
		if t, ok := mcp.AsTextContent(res.Content[0]); ok {
			return t.Text
		}
	}
	return "refused"
}

// errResult is a failure with only a one-line message (no structured content).
func errResult(msg string) *mcp.CallToolResult { return mcp.NewToolResultError(msg) }

// errResultWith is a failure that still carries a full structured result (e.g. a timed-out
// command's captured output): the message first, then the JSON text copy.
func errResultWith(msg string, v any) *mcp.CallToolResult {
	b, err := json.Marshal(v)
	if err != nil {
		return errResult(msg)
	}
	return &mcp.CallToolResult{
		Content: []mcp.Content{
			mcp.NewTextContent(msg),
			mcp.NewTextContent(string(b)),
		},
		StructuredContent: json.RawMessage(b),
		IsError:           true,
	}
}

// newRequestID ties an audit intent line to its outcome line.
func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rfc3339 formats t in UTC, or "" for the zero time.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// nonNilMap returns m, or an empty map when m is nil.
func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// nonNil returns s, or an empty slice when s is nil.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
