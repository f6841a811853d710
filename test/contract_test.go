package e2e

// Calls through the gateway glue, each checked against the rules every tool result obeys
// (README.md, Tools: structured content valid against the output schema, with a JSON text
// copy), and typed views of the structured outputs.

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"testing"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// result is one tool call's outcome.
type result struct {
	IsError    bool
	Structured map[string]any // nil when the result carried none
	Text       string         // the first text content
}

// call runs a tool and checks the rules every result obeys: structured content validates
// against the tool's output schema, and the text copy of a successful result equals it.
func (g *gateway) call(t *testing.T, name string, args map[string]any) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return g.callCtx(ctx, t, name, args)
}

func (g *gateway) callCtx(ctx context.Context, t *testing.T, name string, args map[string]any) result {
	t.Helper()
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := g.c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("%s: JSON-RPC error: %v", name, err)
	}
	return g.check(t, name, res)
}

func (g *gateway) check(t *testing.T, name string, res *mcp.CallToolResult) result {
	t.Helper()
	r := result{IsError: res.IsError}
	for _, c := range res.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			r.Text = tc.Text
			break
		}
	}
	raw := []byte(res.RawStructuredContent)
	if len(raw) == 0 && res.StructuredContent != nil {
		var err error
		if raw, err = json.Marshal(res.StructuredContent); err != nil {
			t.Fatalf("%s: structured content: %v", name, err)
		}
	}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &r.Structured); err != nil {
			t.Fatalf("%s: structuredContent is not an object: %v: %.300s", name, err, raw)
		}
		if r.Structured == nil {
			t.Fatalf("%s: structuredContent is not an object: %.300s", name, raw)
		}
	}
	if !r.IsError && r.Structured == nil {
		t.Fatalf("%s: successful result without structuredContent; text: %.500s", name, r.Text)
	}
	if r.Text == "" {
		t.Errorf("%s: result without text content", name)
	}
	if r.Structured != nil {
		if rs := g.schemas[name]; rs == nil {
			t.Errorf("%s: no output schema to check the structured content against", name)
		} else if err := rs.Validate(r.Structured); err != nil {
			t.Errorf("%s: structured content does not validate against the output schema: %v\n%.1500s", name, err, raw)
		}
		var textCopy map[string]any
		if err := json.Unmarshal([]byte(r.Text), &textCopy); err != nil {
			if !r.IsError {
				t.Errorf("%s: text content is not a JSON copy of the structured content: %v: %.300s", name, err, r.Text)
			}
		} else if !reflect.DeepEqual(textCopy, r.Structured) {
			t.Errorf("%s: JSON text copy differs from structured content:\ntext: %.500s\nstructured: %.500s", name, r.Text, raw)
		}
	}
	return r
}

// decode converts structured content into a typed value.
func decode[T any](t *testing.T, m map[string]any) T {
	t.Helper()
	var v T
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %T: %v: %.500s", v, err, b)
	}
	return v
}

// Typed views of the structured outputs (README.md, Tools); get_status's are localfleet's.
type (
	statusOut   = localfleet.Status
	gatewayInfo = localfleet.GatewayInfo
	edgeStatus  = localfleet.EdgeStatus
)

type execOut struct {
	Edge            string `json:"edge"`
	ExitCode        int    `json:"exit_code"`
	Signal          string `json:"signal"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	TimedOut        bool   `json:"timed_out"`
	DurationMs      int64  `json:"duration_ms"`
}

type uploadOut struct {
	Edge   string `json:"edge"`
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Mode   string `json:"mode"`
}

// status calls get_status with args and decodes it.
func (g *gateway) status(t *testing.T, args map[string]any) statusOut {
	t.Helper()
	r := g.call(t, "get_status", args)
	if r.IsError {
		t.Fatalf("get_status: isError: %s", r.Text)
	}
	if r.Structured["edges"] == nil {
		t.Errorf("get_status: edges is null, want [] when empty")
	}
	return decode[statusOut](t, r.Structured)
}

// edgeByFP finds an edge in one get_status page (limit 1000 covers every test).
func (g *gateway) edgeByFP(t *testing.T, fp string) (edgeStatus, []edgeStatus) {
	t.Helper()
	st := g.status(t, map[string]any{"limit": 1000})
	var all []edgeStatus
	var found edgeStatus
	for _, e := range st.Edges {
		if e.Fingerprint == fp {
			all = append(all, e)
			found = e
		}
	}
	return found, all
}

// waitConnected polls get_status until the edge with fp shows connected (and cond holds).
func (g *gateway) waitConnected(t *testing.T, fp string, cond func(edgeStatus) bool) edgeStatus {
	t.Helper()
	var e edgeStatus
	ok := waitFor(connectTimeout, func() bool {
		var all []edgeStatus
		e, all = g.edgeByFP(t, fp)
		return len(all) == 1 && e.Connected && (cond == nil || cond(e))
	})
	if !ok {
		t.Fatalf("edge %s not connected within %v; last status: %+v", fp, connectTimeout, e)
	}
	return e
}

// auditLog is the gateway's audit file (default AUDIT_LOG).
func (g *gateway) auditLog() string {
	b, _ := os.ReadFile(g.f.AuditLog)
	return string(b)
}
