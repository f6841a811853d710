package tools_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
	"go.uber.org/goleak"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeFleet records calls and answers with canned results or the test's functions.
type fakeFleet struct {
	mu       sync.Mutex
	info     gateway.Info
	edges    []gateway.EdgeStatus
	execFn   func(ctx context.Context, edge string, p protocol.ExecParams, stdin io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error)
	uploadFn func(ctx context.Context, edge string, p protocol.UploadParams, body []byte) (protocol.UploadResult, error)
	infoFn   func(ctx context.Context, edge string, refresh bool) (protocol.DeviceInfo, error)
	regFn    func(line, name string, labels map[string]string) (gateway.KeyAdded, error)
	calls    []string
	inv      fakeInventory // find_edges and resources (find_test.go)
}

func (f *fakeFleet) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeFleet) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeFleet) Info() gateway.Info { return f.info }

func (f *fakeFleet) Edges(connectedOnly bool) []gateway.EdgeStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gateway.EdgeStatus
	for _, e := range f.edges {
		if !connectedOnly || e.Connected {
			out = append(out, e)
		}
	}
	return out
}

// Edge resolves ref among the fake's edges by name or fingerprint; an edge the fake does not
// list resolves under the name given, so that the test's functions decide what it answers.
func (f *fakeFleet) Edge(ref string) (gateway.Edge, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.edges {
		if e.Name == strings.ToLower(ref) || e.Fingerprint == ref {
			return &fakeEdge{f: f, st: e}, nil
		}
	}
	return &fakeEdge{f: f, st: gateway.EdgeStatus{Name: ref, Connected: true, Labels: map[string]string{}}}, nil
}

// fakeEdge is a fakeFleet's handle: it records each RPC and answers with the fleet's functions.
type fakeEdge struct {
	f  *fakeFleet
	st gateway.EdgeStatus
}

func (e *fakeEdge) Name() string              { return e.st.Name }
func (e *fakeEdge) Fingerprint() string       { return e.st.Fingerprint }
func (e *fakeEdge) Labels() map[string]string { return e.st.Labels }

// Connected reads the fleet's current state, so a test can bring an edge back.
func (e *fakeEdge) Connected() bool {
	e.f.mu.Lock()
	defer e.f.mu.Unlock()
	for _, s := range e.f.edges {
		if s.Name == e.st.Name {
			return s.Connected
		}
	}
	return e.st.Connected
}

func (e *fakeEdge) Exec(ctx context.Context, _ string, p protocol.ExecParams, stdin io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
	e.f.record("exec " + e.st.Name)
	if e.f.execFn == nil {
		return protocol.ExecResult{}, nil
	}
	return e.f.execFn(ctx, e.st.Name, p, stdin, out)
}

func (e *fakeEdge) Upload(ctx context.Context, _ string, p protocol.UploadParams, body io.Reader) (protocol.UploadResult, error) {
	e.f.record("upload " + e.st.Name)
	b, err := io.ReadAll(io.LimitReader(body, p.Size+1))
	if err != nil {
		return protocol.UploadResult{}, err
	}
	if e.f.uploadFn == nil {
		return protocol.UploadResult{}, nil
	}
	return e.f.uploadFn(ctx, e.st.Name, p, b)
}

func (e *fakeEdge) DeviceInfo(ctx context.Context, _ string, refresh bool) (protocol.DeviceInfo, error) {
	e.f.record("device_info " + e.st.Name)
	if e.f.infoFn == nil {
		return protocol.DeviceInfo{}, nil
	}
	return e.f.infoFn(ctx, e.st.Name, refresh)
}

// The fake runs no jobs and serves no downloads: the real gateway's tests cover them.
var errFake = protocol.Errorf(protocol.CodeUnsupported, "not served by the fake fleet")

func (e *fakeEdge) Download(context.Context, string, protocol.DownloadParams, io.Writer) (protocol.DownloadResult, error) {
	return protocol.DownloadResult{}, errFake
}
func (e *fakeEdge) JobStart(context.Context, string, protocol.JobStartParams) (protocol.JobStatus, error) {
	return protocol.JobStatus{}, errFake
}
func (e *fakeEdge) JobGet(context.Context, string, protocol.JobGetParams) (protocol.JobStatus, error) {
	return protocol.JobStatus{}, errFake
}
func (e *fakeEdge) JobCancel(context.Context, string, string) (protocol.JobStatus, error) {
	return protocol.JobStatus{}, errFake
}
func (e *fakeEdge) JobList(context.Context, string) (protocol.JobList, error) {
	return protocol.JobList{}, errFake
}

func (f *fakeFleet) RegisterKey(line, name string, labels map[string]string) (gateway.KeyAdded, error) {
	f.record("register")
	if f.regFn == nil {
		return gateway.KeyAdded{}, nil
	}
	return f.regFn(line, name, labels)
}

var _ tools.Fleet = (*fakeFleet)(nil)

// harness is a server with an in-process client and the tools' declared schemas.
type harness struct {
	t       *testing.T
	c       *client.Client
	srv     *server.MCPServer
	tools   map[string]mcp.Tool
	schemas map[string]*jsonschema.Resolved
	init    *mcp.InitializeResult
}

func baseConfig() tools.Config {
	return tools.Config{
		Version:        "test",
		ExecTimeout:    30 * time.Second,
		ExecTimeoutMax: time.Hour,
		MaxOutputBytes: 1 << 20,
		MaxUploadBytes: 1 << 20,
		Actor:          "stdio",
	}
}

func newHarness(t *testing.T, f tools.Fleet, cfg tools.Config) *harness {
	t.Helper()
	return newHarnessWith(t, f, cfg, mcp.LATEST_PROTOCOL_VERSION)
}

// newHarnessWith is newHarness with client options (e.g. an elicitation handler) and a
// chosen protocol version.
func newHarnessWith(t *testing.T, f tools.Fleet, cfg tools.Config, version string, opts ...client.ClientOption) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := tools.NewServer(f, cfg)
	c, err := client.NewInProcessClientWithOptions(srv, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var ir mcp.InitializeRequest
	ir.Params.ProtocolVersion = version
	ir.Params.ClientInfo = mcp.Implementation{Name: "test", Version: "0"}
	init, err := c.Initialize(ctx, ir)
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	lt, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	h := &harness{t: t, c: c, srv: srv, init: init, tools: map[string]mcp.Tool{}, schemas: map[string]*jsonschema.Resolved{}}
	for _, tool := range lt.Tools {
		h.tools[tool.Name] = tool
		raw, err := json.Marshal(tool.OutputSchema)
		if err != nil {
			t.Fatal(err)
		}
		var s jsonschema.Schema
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("%s output schema: %v", tool.Name, err)
		}
		rs, err := s.Resolve(nil)
		if err != nil {
			t.Fatalf("%s output schema does not resolve: %v", tool.Name, err)
		}
		h.schemas[tool.Name] = rs
	}
	return h
}

// call invokes a tool and checks the result against the MCP rules every tool follows: structured
// content (if any) validates against the output schema, has no nulls, and has a JSON text copy.
func (h *harness) call(name string, args map[string]any) *mcp.CallToolResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return h.callCtx(ctx, name, args, nil)
}

func (h *harness) callCtx(ctx context.Context, name string, args map[string]any, meta *mcp.Meta) *mcp.CallToolResult {
	h.t.Helper()
	var req mcp.CallToolRequest
	req.Params.Name = name
	req.Params.Arguments = args
	req.Params.Meta = meta
	res, err := h.c.CallTool(ctx, req)
	if err != nil {
		h.t.Fatalf("%s: JSON-RPC error %v", name, err)
	}
	h.check(name, res)
	return res
}

func (h *harness) check(name string, res *mcp.CallToolResult) {
	h.t.Helper()
	if len(res.Content) == 0 {
		h.t.Fatalf("%s: result has no content", name)
	}
	if res.StructuredContent == nil {
		if !res.IsError {
			h.t.Fatalf("%s: success without structured content", name)
		}
		if len(res.Content) != 1 || strings.Contains(text(res), "\n") {
			h.t.Fatalf("%s: error message is not one line: %q", name, text(res))
		}
		return
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		h.t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		h.t.Fatal(err)
	}
	if err := h.schemas[name].Validate(v); err != nil {
		h.t.Fatalf("%s: structured content does not validate against the output schema: %v\n%s", name, err, raw)
	}
	if p := findNull(v, "$"); p != "" {
		h.t.Fatalf("%s: structured content has null at %s", name, p)
	}
	last, ok := res.Content[len(res.Content)-1].(mcp.TextContent)
	if !ok {
		h.t.Fatalf("%s: last content is not text", name)
	}
	var copyV any
	if err := json.Unmarshal([]byte(last.Text), &copyV); err != nil {
		h.t.Fatalf("%s: text copy is not JSON: %v", name, err)
	}
	if a, b := mustJSON(h.t, copyV), mustJSON(h.t, v); a != b {
		h.t.Fatalf("%s: text copy differs from structured content:\n%s\n%s", name, a, b)
	}
}

func findNull(v any, path string) string {
	switch x := v.(type) {
	case nil:
		return path
	case map[string]any:
		for k, e := range x {
			if p := findNull(e, path+"."+k); p != "" {
				return p
			}
		}
	case []any:
		for i, e := range x {
			if p := findNull(e, path+"["+string(rune('0'+i%10))+"]"); p != "" {
				return p
			}
		}
	}
	return ""
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// text is the first text content of a result.
func text(res *mcp.CallToolResult) string {
	if len(res.Content) == 0 {
		return ""
	}
	if tc, ok := res.Content[0].(mcp.TextContent); ok {
		return tc.Text
	}
	return ""
}

// structured decodes a result's structured content into v.
func structured(t *testing.T, res *mcp.CallToolResult, v any) {
	t.Helper()
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatal(err)
	}
}

// auditLog opens an audit log in a temp dir and returns it with a reader of its lines.
func auditLog(t *testing.T) (*audit.Logger, func() []audit.Event) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, func() []audit.Event {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var out []audit.Event
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if line == "" {
				continue
			}
			var e audit.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("audit line %q: %v", line, err)
			}
			out = append(out, e)
		}
		return out
	}
}

func auditRaw(t *testing.T, read func() []audit.Event) string {
	t.Helper()
	return mustJSON(t, read())
}
