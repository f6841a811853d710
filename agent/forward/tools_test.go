package forward

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
)

// toolFleet serves only forward edges to the MCP tools (GATEWAY_MODE=forward without the
// companion gateway, as the tools see it).
type toolFleet struct{ *Fleet }

func (toolFleet) Info() gateway.Info { return gateway.Info{Version: "test", Mode: "forward"} }

func (toolFleet) RegisterKey(string, string, map[string]string) (gateway.KeyAdded, error) {
	return gateway.KeyAdded{}, errors.New("no companion gateway")
}

var _ tools.Fleet = toolFleet{}

// TestMCPToolsOnForwardEdge drives the real MCP tools (in process) against a forward edge:
// the seam as the lead wires it, without main.
func TestMCPToolsOnForwardEdge(t *testing.T) {
	fx := newFixture(t)
	srv := tools.NewServer(toolFleet{fx.fleet.Fleet}, tools.Config{Version: "test", MaxOutputBytes: 1 << 20, MaxUploadBytes: 1 << 20})
	c, err := client.NewInProcessClient(srv)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var ir mcp.InitializeRequest
	ir.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	ir.Params.ClientInfo = mcp.Implementation{Name: "test", Version: "0"}
	if _, err := c.Initialize(ctx, ir); err != nil {
		t.Fatal(err)
	}
	call := func(name string, args map[string]any) (map[string]any, string, bool) {
		t.Helper()
		var req mcp.CallToolRequest
		req.Params.Name, req.Params.Arguments = name, args
		res, err := c.CallTool(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var txt string
		if len(res.Content) > 0 {
			if tc, ok := res.Content[0].(mcp.TextContent); ok {
				txt = tc.Text
			}
		}
		var m map[string]any
		if res.StructuredContent != nil {
			b, _ := json.Marshal(res.StructuredContent)
			_ = json.Unmarshal(b, &m)
		}
		return m, txt, res.IsError
	}
	dir := t.TempDir()
	tests := []struct {
		name  string
		tool  string
		args  map[string]any
		isErr bool
		check func(t *testing.T, m map[string]any, txt string)
	}{
		{"run_command argv", "run_command", map[string]any{"edge": "dev", "argv": []any{"printf", "%s|", "a b", "it's", "$X", "new\nline"}}, false,
			func(t *testing.T, m map[string]any, _ string) {
				if m["stdout"] != "a b|it's|$X|new\nline|" || m["exit_code"] != 0.0 {
					t.Errorf("%v", m)
				}
			}},
		{"run_command timeout", "run_command", map[string]any{"edge": "dev", "command": "sleep 61.5 & sleep 61.5", "timeout_seconds": 1}, true,
			func(t *testing.T, m map[string]any, txt string) {
				if m["timed_out"] != true || !strings.Contains(txt, "timed out") {
					t.Errorf("%v %s", m, txt)
				}
				waitGone(t, "sleep", "61.5")
			}},
		{"upload_file", "upload_file", map[string]any{"edge": "dev", "path": filepath.Join(dir, "u.txt"), "content": "hello\n", "mode": "0600"}, false,
			func(t *testing.T, m map[string]any, _ string) {
				if b, _ := os.ReadFile(filepath.Join(dir, "u.txt")); string(b) != "hello\n" || m["mode"] != "0600" {
					t.Errorf("%v %q", m, b)
				}
			}},
		{"upload_file exists", "upload_file", map[string]any{"edge": "dev", "path": filepath.Join(dir, "u.txt"), "content": "x"}, true,
			func(t *testing.T, _ map[string]any, txt string) {
				if !strings.Contains(txt, "overwrite") {
					t.Error(txt)
				}
			}},
		{"download_file", "download_file", map[string]any{"edge": "dev", "path": filepath.Join(dir, "u.txt")}, false,
			func(t *testing.T, m map[string]any, _ string) {
				if m["content"] != "hello\n" {
					t.Errorf("%v", m)
				}
			}},
		{"get_device_info", "get_device_info", map[string]any{"edge": "dev", "refresh": true}, false,
			func(t *testing.T, m map[string]any, _ string) {
				if m["os"] != "linux" || m["edge"] != "dev" {
					t.Errorf("%v", m)
				}
			}},
		{"find_edges", "find_edges", map[string]any{"has_tool": "sh"}, false,
			func(t *testing.T, m map[string]any, _ string) {
				if b, _ := json.Marshal(m); !strings.Contains(string(b), `"dev"`) {
					t.Errorf("%s", b)
				}
			}},
		{"run_on_edges", "run_on_edges", map[string]any{"target": "role=test", "argv": []any{"echo", "fan"}}, false,
			func(t *testing.T, m map[string]any, _ string) {
				if b, _ := json.Marshal(m); !strings.Contains(string(b), `fan\n`) {
					t.Errorf("%s", b)
				}
			}},
		{"start_command", "start_command", map[string]any{"edge": "dev", "argv": []any{"true"}}, true,
			func(t *testing.T, _ map[string]any, txt string) {
				if !strings.Contains(txt, "jobs need the mcp-ssh-edge companion") {
					t.Error(txt)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, txt, isErr := call(tt.tool, tt.args)
			if isErr != tt.isErr {
				t.Fatalf("isError %v: %s", isErr, txt)
			}
			tt.check(t, m, txt)
		})
	}
}
