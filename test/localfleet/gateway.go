package localfleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

const (
	// CallTimeout bounds one tool call made through Gateway; the gateway's own run_command
	// default is 30 s.
	CallTimeout = 45 * time.Second
	// ConnectWait bounds how long WaitForEdge waits for an edge to dial in.
	ConnectWait = 20 * time.Second
	// pollEvery is WaitForEdge's get_status period.
	pollEvery = 250 * time.Millisecond
)

// Gateway is a running mcp-ssh-gateway serving MCP over stdio, with the initialized mcp-go
// client that drives it. One Gateway serves many calls: a call costs one JSON-RPC round trip.
type Gateway struct {
	c   *client.Client
	cmd *exec.Cmd
}

// GatewayEnv is the gateway's configuration for the fleet l (SPEC §2): loopback only, the
// fleet's keys and state, MCP over stdio, warnings and up logged.
func GatewayEnv(l *Layout) []string {
	return []string{
		"SSH_BIND=127.0.0.1",
		"SSH_PORT=" + strconv.Itoa(l.SSHPort),
		"KEYS_DIR=" + l.KeysDir,
		"HOST_KEY_FILE=" + l.HostKeyFile,
		"AUTHORIZED_KEYS_FILE=" + l.AuthorizedKeys,
		"STATE_DIR=" + l.StateDir,
		"MCP_TRANSPORT=stdio",
		"LOG_LEVEL=warn",
	}
}

// StartGateway launches bin as an MCP stdio server for the fleet l, initializes the MCP
// session and lists the tools. extraEnv (`NAME=value`, e.g. MAX_UPLOAD_BYTES) is appended
// last, so it overrides GatewayEnv; the caller's own gateway variables are dropped. The
// gateway's stderr goes to this process's stderr. The caller must Close it.
func StartGateway(ctx context.Context, l *Layout, bin string, extraEnv ...string) (*Gateway, error) {
	env := append(CleanEnv(GatewayVarPrefixes()...), GatewayEnv(l)...)
	env = append(env, extraEnv...)
	g := &Gateway{}
	spawn := func(_ context.Context, command string, _ []string, args []string) (*exec.Cmd, error) {
		cmd := exec.Command(command, args...)
		cmd.Env = env
		cmd.Stderr = os.Stderr // gateway logs (warnings and up) show beside the caller's
		g.cmd = cmd
		return cmd, nil
	}
	c, err := client.NewStdioMCPClientWithOptions(bin, nil, nil, transport.WithCommandFunc(spawn))
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	g.c = c

	ictx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	req.Params.ClientInfo = mcp.Implementation{Name: "mcp-ssh-gateway-localfleet", Version: "0.0.0"}
	res, err := c.Initialize(ictx, req)
	if err != nil {
		_ = g.Close()
		return nil, fmt.Errorf("MCP initialize with %s: %w", bin, err)
	}
	slog.Info("gateway ready", "server", res.ServerInfo.Name, "version", res.ServerInfo.Version, "ssh_port", l.SSHPort)
	if _, err := c.ListTools(ictx, mcp.ListToolsRequest{}); err != nil {
		_ = g.Close()
		return nil, fmt.Errorf("list tools: %w", err)
	}
	return g, nil
}

// Client is the initialized mcp-go client, for what Call does not cover (notifications,
// progress, cancellation).
func (g *Gateway) Client() *client.Client { return g.c }

// PID is the gateway process's id, e.g. to read its memory use from /proc.
func (g *Gateway) PID() int { return g.cmd.Process.Pid }

// Close ends the session: stdin closes, a stdio gateway exits on its own, and Close waits
// for it (the client kills it if it lingers).
func (g *Gateway) Close() error {
	if err := g.c.Close(); err != nil {
		return fmt.Errorf("stop gateway: %w", err)
	}
	return nil
}

// Call invokes one tool, bounded by CallTimeout, and returns the result as the gateway sent
// it, isError included. The error is only for a failed round trip (JSON-RPC error, transport).
func (g *Gateway) Call(ctx context.Context, tool string, args map[string]any) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	res, err := g.c.CallTool(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	return res, nil
}

// CallStructured invokes one tool and returns its structured content as JSON. A tool error
// (isError) is returned as a Go error carrying the tool's message.
func (g *Gateway) CallStructured(ctx context.Context, tool string, args map[string]any) (json.RawMessage, error) {
	res, err := g.Call(ctx, tool, args)
	if err != nil {
		return nil, err
	}
	if res.IsError {
		return nil, fmt.Errorf("%s returned an error: %s", tool, ResultText(res))
	}
	switch {
	case len(res.RawStructuredContent) > 0:
		return res.RawStructuredContent, nil
	case res.StructuredContent != nil:
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			return nil, fmt.Errorf("%s: encode structured content: %w", tool, err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%s returned no structured content: %s", tool, ResultText(res))
	}
}

// ResultText joins the text parts of a tool result, for error messages.
func ResultText(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if t, ok := mcp.AsTextContent(c); ok {
			parts = append(parts, t.Text)
		}
	}
	if len(parts) == 0 {
		return "(no text)"
	}
	return strings.Join(parts, " ")
}

// WaitForEdge polls get_status until the edge e shows connected, for at most ConnectWait.
// It fails at once if the edge process exits.
func (g *Gateway) WaitForEdge(ctx context.Context, e *Edge) error {
	ctx, cancel := context.WithTimeout(ctx, ConnectWait)
	defer cancel()
	type status struct {
		Edges []struct {
			Name      string `json:"name"`
			Connected bool   `json:"connected"`
		} `json:"edges"`
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if err := e.Exited(); err != nil {
			return err
		}
		raw, err := g.CallStructured(ctx, "get_status", map[string]any{"connected_only": true})
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil {
			var st status
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("get_status: decode: %w", err)
			}
			for _, s := range st.Edges {
				if s.Name == e.Name && s.Connected {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("edge %s did not connect within %s: check the edge's log lines above", e.Name, ConnectWait)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}
