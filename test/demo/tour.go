package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

const (
	// callTimeout bounds one tool call; the gateway's own run_command default is 30 s.
	callTimeout = 45 * time.Second
	// connectWait bounds how long the edge may take to dial in.
	connectWait = 20 * time.Second
)

// gateway is the running mcp-ssh-gateway, driven over stdio by an MCP client.
type gateway struct {
	c *client.Client
}

// startGateway launches the gateway as an MCP stdio server and initializes the session.
func startGateway(ctx context.Context, l *layout, bin string) (*gateway, error) {
	env := append(cleanEnv(gatewayVarPrefixes()...), gatewayEnv(l)...)
	spawn := func(_ context.Context, command string, _ []string, args []string) (*exec.Cmd, error) {
		cmd := exec.Command(command, args...)
		cmd.Env = env
		cmd.Stderr = os.Stderr // gateway logs (warnings and up) show beside the demo's
		return cmd, nil
	}
	c, err := client.NewStdioMCPClientWithOptions(bin, nil, nil, transport.WithCommandFunc(spawn))
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	gw := &gateway{c: c}

	ictx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	req.Params.ClientInfo = mcp.Implementation{Name: "mcp-ssh-gateway-demo", Version: "0.0.0"}
	res, err := c.Initialize(ictx, req)
	if err != nil {
		gw.close()
		return nil, fmt.Errorf("MCP initialize with %s: %w", bin, err)
	}
	slog.Info("gateway ready", "server", res.ServerInfo.Name, "version", res.ServerInfo.Version, "ssh_port", l.sshPort)
	if _, err := c.ListTools(ictx, mcp.ListToolsRequest{}); err != nil {
		gw.close()
		return nil, fmt.Errorf("list tools: %w", err)
	}
	return gw, nil
}

// close ends the session: stdin closes and a stdio gateway exits on its own.
func (g *gateway) close() {
	if err := g.c.Close(); err != nil {
		slog.Warn("gateway did not stop cleanly", "err", err)
	}
}

// call invokes one tool and returns its structured content as indented JSON. A tool error
// (isError) is returned as a Go error carrying the tool's message.
func (g *gateway) call(ctx context.Context, tool string, args map[string]any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	res, err := g.c.CallTool(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	if res.IsError {
		return nil, fmt.Errorf("%s returned an error: %s", tool, resultText(res))
	}
	var out bytes.Buffer
	if len(res.RawStructuredContent) > 0 {
		err = json.Indent(&out, res.RawStructuredContent, "", "  ")
	} else if res.StructuredContent != nil {
		var b []byte
		b, err = json.MarshalIndent(res.StructuredContent, "", "  ")
		out.Write(b)
	} else {
		return nil, fmt.Errorf("%s returned no structured content: %s", tool, resultText(res))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: format structured content: %w", tool, err)
	}
	return out.Bytes(), nil
}

func resultText(res *mcp.CallToolResult) string {
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

// waitForEdge polls get_status until the demo edge is connected.
func waitForEdge(ctx context.Context, g *gateway, edge *edgeProc) error {
	ctx, cancel := context.WithTimeout(ctx, connectWait)
	defer cancel()
	type status struct {
		Edges []struct {
			Name      string `json:"name"`
			Connected bool   `json:"connected"`
		} `json:"edges"`
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := edge.exited(); err != nil {
			return err
		}
		raw, err := g.call(ctx, "get_status", map[string]any{"connected_only": true})
		if err != nil && ctx.Err() == nil {
			return err
		}
		var st status
		if err == nil {
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("get_status: decode: %w", err)
			}
			for _, e := range st.Edges {
				if e.Name == edgeName && e.Connected {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("edge %s did not connect within %s: check the edge's log lines above", edgeName, connectWait)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// tour waits for the edge, then calls each tool and prints its structured result.
func tour(ctx context.Context, g *gateway, edge *edgeProc, l *layout) error {
	slog.Info("waiting for the edge to connect", "edge", edgeName)
	if err := waitForEdge(ctx, g, edge); err != nil {
		return err
	}
	steps := []struct {
		tool string
		args map[string]any
	}{
		{"get_status", map[string]any{}},
		{"get_agent_pubkey", map[string]any{}},
		{"get_device_info", map[string]any{"edge": edgeName}},
		{"run_command", map[string]any{"edge": edgeName, "argv": []string{"uname", "-a"}}},
		{"run_command", map[string]any{"edge": edgeName, "command": "echo hello from $(hostname)"}},
		{"upload_file", map[string]any{
			"edge":    edgeName,
			"path":    filepath.Join(l.uploadDir, "hello.txt"),
			"content": "hello from the mcp-ssh-gateway demo\n",
		}},
	}
	for _, s := range steps {
		out, err := g.call(ctx, s.tool, s.args)
		if err != nil {
			return err
		}
		args, _ := json.Marshal(s.args)
		fmt.Printf("=== %s %s\n%s\n\n", s.tool, args, out)
	}
	return nil
}
