package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// tour waits for the edge, then calls each tool and prints its structured result.
func tour(ctx context.Context, g *localfleet.Gateway, edge *localfleet.Edge, l *localfleet.Layout) error {
	slog.Info("waiting for the edge to connect", "edge", edge.Name)
	if err := g.WaitForEdge(ctx, edge); err != nil {
		return err
	}
	steps := []struct {
		tool string
		args map[string]any
	}{
		{"get_status", map[string]any{}},
		{"get_agent_pubkey", map[string]any{}},
		{"get_device_info", map[string]any{"edge": edge.Name}},
		{"run_command", map[string]any{"edge": edge.Name, "argv": []string{"uname", "-a"}}},
		{"run_command", map[string]any{"edge": edge.Name, "command": "echo hello from $(hostname)"}},
		{"upload_file", map[string]any{
			"edge":    edge.Name,
			"path":    filepath.Join(l.UploadDir, "hello.txt"),
			"content": "hello from the mcp-ssh-gateway demo\n",
		}},
	}
	for _, s := range steps {
		raw, err := g.CallStructured(ctx, s.tool, s.args)
		if err != nil {
			return err
		}
		var out bytes.Buffer
		if err := json.Indent(&out, raw, "", "  "); err != nil {
			return fmt.Errorf("%s: format structured content: %w", s.tool, err)
		}
		args, _ := json.Marshal(s.args)
		fmt.Printf("=== %s %s\n%s\n\n", s.tool, args, out.Bytes())
	}
	return nil
}
