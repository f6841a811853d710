package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"unicode/utf8"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// tour waits for the edge, then calls a round of tools and prints each structured result on
// one line.
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
		{"download_file", map[string]any{"edge": edge.Name, "path": filepath.Join(l.UploadDir, "hello.txt")}},
		{"find_edges", map[string]any{"has_tool": "sh"}},
		{"run_on_edges", map[string]any{"target": "*", "argv": []string{"uptime"}}},
		{"explain_policy", map[string]any{"tool": "run_command", "arguments": map[string]any{"edge": edge.Name, "argv": []string{"uptime"}}}},
	}
	tools := g.Tools()
	fmt.Printf("demo: calling %d of the gateway's %d tools on edge %s (each result cut to one line)\n\n", len(steps), len(tools), edge.Name)
	for _, s := range steps {
		raw, err := g.CallStructured(ctx, s.tool, s.args)
		if err != nil {
			return err
		}
		var out bytes.Buffer
		if err := json.Compact(&out, raw); err != nil {
			return fmt.Errorf("%s: format structured content: %w", s.tool, err)
		}
		args, _ := json.Marshal(s.args)
		fmt.Printf("=== %s %s\n    %s\n", s.tool, args, cut(out.String(), 300))
	}
	return nil
}

// cut shortens s to at most n bytes on a rune boundary, marking the cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + " …"
}
