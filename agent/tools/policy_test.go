package tools_test

// The gateway's policy (the README's Policy section) as MCP clients meet it: per-client roles by bearer
// token, what each rule type allows and refuses, smuggling attempts, what a role sees,
// explain_policy, approvals (the CLI's store, approve_action, elicitation, timeout) and reload.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/approval"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/policy"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// The HTTP clients of testPolicy, by bearer token ("" is the stdio client, role admin).
const (
	stdioClient    = ""
	viewerToken    = "viewer-token-openwebui-0123456789"
	operatorToken  = "operator-token-deployer-0123456789"
	opsToken       = "ops-token-admin-0123456789"
	unknownToken   = "nobody-knows-this-token"
	provisionToken = "provision-token-for-operators"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// viewerTools are the tools of the viewer's rule (the README's policy example plus run_on_edges).
var viewerTools = []string{"get_status", "find_edges", "get_device_info", "run_command", "download_file", "run_on_edges"}

// testPolicy is the README's policy: a viewer on env=prod (commands, shell false, paths,
// max_timeout), an operator with a shell-less, path-confined rule on prod and an approval rule
// on lab, and admin with approval for upload_file.
func testPolicy(approvalTimeout int) string {
	return fmt.Sprintf(`clients:
  stdio: {role: admin}
  http:
    - {name: openwebui, token_sha256: %q, role: viewer}
    - {name: deployer, token_sha256: %q, role: operator}
    - {name: ops, token_sha256: %q, role: admin}
roles:
  viewer:
    - edges: "env=prod"
      tools: [%s]
      commands: [uptime, df, journalctl]
      shell: false
      paths: [/var/log/]
      max_timeout_seconds: 60
  operator:
    - {edges: "env=prod", tools: [upload_file, run_command], paths: [/srv/drop/], shell: false}
    - {edges: "env=lab", tools: [run_command], approval: [run_command]}
  admin:
    - {edges: "*", tools: ["*"], approval: [upload_file]}
approval_timeout_seconds: %d
`, sha256Hex(viewerToken), sha256Hex(operatorToken), sha256Hex(opsToken), strings.Join(viewerTools, ", "), approvalTimeout)
}

func parsePolicy(t *testing.T, yaml string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("policy does not parse: %v\n%s", err, yaml)
	}
	return p
}

// policyFleet is a fakeFleet with prod1 (env=prod) and lab1 (env=lab) whose edges also serve
// downloads (the plain fake does not), recording each call and the confinement it was sent.
type policyFleet struct {
	*fakeFleet
	mu     sync.Mutex
	argv   [][]string // argv of each exec
	within [][]string // Within of each upload and download
}

func newPolicyFleet() *policyFleet {
	pf := &policyFleet{fakeFleet: &fakeFleet{edges: []gateway.EdgeStatus{
		{Name: "lab1", Fingerprint: "SHA256:lab1", Connected: true, Labels: map[string]string{"env": "lab"}},
		{Name: "prod1", Fingerprint: "SHA256:prod1", Connected: true, Labels: map[string]string{"env": "prod"}},
	}}}
	pf.execFn = func(_ context.Context, _ string, p protocol.ExecParams, _ io.Reader, out func(protocol.FrameType, []byte)) (protocol.ExecResult, error) {
		pf.mu.Lock()
		pf.argv = append(pf.argv, p.Argv)
		pf.mu.Unlock()
		out(protocol.FrameStdout, []byte("up 3 days\n"))
		return protocol.ExecResult{}, nil
	}
	pf.uploadFn = func(_ context.Context, _ string, p protocol.UploadParams, body []byte) (protocol.UploadResult, error) {
		pf.mu.Lock()
		pf.within = append(pf.within, p.Within)
		pf.mu.Unlock()
		return protocol.UploadResult{Path: p.Path, Size: int64(len(body)), SHA256: p.SHA256, Mode: "0644"}, nil
	}
	pf.infoFn = func(_ context.Context, edge string, _ bool) (protocol.DeviceInfo, error) {
		return protocol.DeviceInfo{Edge: edge}, nil
	}
	return pf
}

func (f *policyFleet) Edge(ref string) (gateway.Edge, error) {
	e, err := f.fakeFleet.Edge(ref)
	if err != nil {
		return nil, err
	}
	return &policyEdge{fakeEdge: e.(*fakeEdge), pf: f}, nil
}

// calls returns the fleet's recorded calls.
func (f *policyFleet) recorded() []string {
	f.fakeFleet.mu.Lock()
	defer f.fakeFleet.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *policyFleet) withins() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.within)
}

type policyEdge struct {
	*fakeEdge
	pf *policyFleet
}

func (e *policyEdge) Download(_ context.Context, _ string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error) {
	e.f.record("download " + e.st.Name)
	e.pf.mu.Lock()
	e.pf.within = append(e.pf.within, p.Within)
	e.pf.mu.Unlock()
	body := []byte("Jan 1 kernel: hello\n")
	if _, err := w.Write(body); err != nil {
		return protocol.DownloadResult{}, err
	}
	sum := sha256.Sum256(body)
	return protocol.DownloadResult{Path: p.Path, Size: int64(len(body)), Sent: int64(len(body)), SHA256: hex.EncodeToString(sum[:]), Mode: "0644"}, nil
}

var _ tools.Fleet = (*policyFleet)(nil)

// asClient is the context of a request from the client with this bearer token (the HTTP
// transport's context function sets it); "" is the stdio client.
func asClient(ctx context.Context, token string) context.Context {
	if token == stdioClient {
		return ctx
	}
	return tools.WithBearer(ctx, token)
}

// callAs invokes a tool as the client with token, checking the result like call.
func (h *harness) callAs(token, name string, args map[string]any) *mcp.CallToolResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(asClient(context.Background(), token), 20*time.Second)
	defer cancel()
	return h.callCtx(ctx, name, args, nil)
}

// callRaw invokes a tool as the client with token and returns the JSON-RPC error too.
func (h *harness) callRaw(token, name string, args map[string]any) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(asClient(context.Background(), token), 20*time.Second)
	defer cancel()
	var req mcp.CallToolRequest
	req.Params.Name = name
	req.Params.Arguments = args
	return h.c.CallTool(ctx, req)
}

type callResult struct {
	res *mcp.CallToolResult
	err error
}

// goCall starts a call that may wait for a person; the result arrives on the channel.
func (h *harness) goCall(ctx context.Context, token, name string, args map[string]any, meta *mcp.Meta) <-chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		var req mcp.CallToolRequest
		req.Params.Name = name
		req.Params.Arguments = args
		req.Params.Meta = meta
		res, err := h.c.CallTool(asClient(ctx, token), req)
		ch <- callResult{res, err}
	}()
	return ch
}

// await receives a goCall's result within d and checks it.
func (h *harness) await(name string, ch <-chan callResult, d time.Duration) *mcp.CallToolResult {
	h.t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			h.t.Fatalf("%s: JSON-RPC error %v", name, r.err)
		}
		h.check(name, r.res)
		return r.res
	case <-time.After(d):
		h.t.Fatalf("%s: no result within %s", name, d)
	}
	return nil
}

// listToolsAs returns the sorted tool names the client with token sees.
func (h *harness) listToolsAs(token string) []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(asClient(context.Background(), token), 10*time.Second)
	defer cancel()
	lt, err := h.c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		h.t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tl := range lt.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

// policyConfig is baseConfig with the policy p, an audit log and, when stateDir is set, an
// approval store on it.
func policyConfig(t *testing.T, p *policy.Policy, stateDir string) (tools.Config, func() []audit.Event, *approval.Store) {
	t.Helper()
	cfg := baseConfig()
	cfg.ProvisionToken = provisionToken
	cfg.Access = tools.Access{Policy: func() *policy.Policy { return p }}
	var store *approval.Store
	if stateDir != "" {
		store = openStore(t, stateDir)
		cfg.Access.Approvals = store
	}
	l, read := auditLog(t)
	cfg.Audit = l
	return cfg, read, store
}

// openStore opens an approval store on stateDir, closed when the test ends (a second one on
// the same directory is what `mcp-ssh-gateway actions` opens).
func openStore(t *testing.T, stateDir string) *approval.Store {
	t.Helper()
	s, err := approval.Open(stateDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitPending polls the store until one action waits, within 5 s.
func waitPending(t *testing.T, s *approval.Store) approval.Action {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		list, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 1 {
			return list[0]
		}
		if len(list) > 1 {
			t.Fatalf("%d actions wait, want 1: %+v", len(list), list)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no action appeared in the approval store within 5 s")
	return approval.Action{}
}

// lastCall returns the intent and outcome lines of the last call of tool in the audit log,
// checking that both exist and share their request id.
func lastCall(t *testing.T, read func() []audit.Event, tool string) (intent, outcome audit.Event) {
	t.Helper()
	evs := read()
	var gotOutcome bool
	for _, e := range evs {
		if e.Tool == tool && e.Event == "outcome" {
			outcome, gotOutcome = e, true
		}
	}
	if !gotOutcome {
		t.Fatalf("no outcome line for %s in the audit log: %s", tool, mustJSON(t, evs))
	}
	for _, e := range evs {
		if e.Event == "intent" && e.RequestID == outcome.RequestID {
			return e, outcome
		}
	}
	t.Fatalf("no intent line for %s's request %s: %s", tool, outcome.RequestID, mustJSON(t, evs))
	return
}

// eventsOf returns the audit lines of one kind.
func eventsOf(read func() []audit.Event, kind string) []audit.Event {
	var out []audit.Event
	for _, e := range read() {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

// expectRefused checks a refusal: an isError result of one line (h.check) naming the role and
// containing why, audited as intent plus outcome refused with that line.
func expectRefused(t *testing.T, res *mcp.CallToolResult, read func() []audit.Event, tool, role string, why ...string) {
	t.Helper()
	if !res.IsError || res.StructuredContent != nil {
		t.Fatalf("%s: want a refusal, got %s", tool, mustJSON(t, res))
	}
	msg := text(res)
	if !strings.Contains(msg, "role "+role) {
		t.Fatalf("%s: refusal %q does not name role %s", tool, msg, role)
	}
	for _, w := range why {
		if !strings.Contains(msg, w) {
			t.Fatalf("%s: refusal %q does not say %q", tool, msg, w)
		}
	}
	_, out := lastCall(t, read, tool)
	if out.Outcome != "refused" || out.Error != msg {
		t.Fatalf("%s: audit outcome %q error %q, want refused with %q", tool, out.Outcome, out.Error, msg)
	}
}

// actorOf is the audit actor of each client.
var actorOf = map[string]string{stdioClient: "stdio", viewerToken: "http:openwebui", operatorToken: "http:deployer", opsToken: "http:ops"}

// roleOf is each client's role.
var roleOf = map[string]string{stdioClient: "admin", viewerToken: "viewer", operatorToken: "operator", opsToken: "admin"}

// TestPolicyRules: each rule type allows what it should (the call reaches the fleet, with the
// rule's path confinement sent along) and refuses what it should (nothing reaches the fleet;
// one line naming the role and why; audited as refused).
func TestPolicyRules(t *testing.T) {
	p := parsePolicy(t, testPolicy(120))
	type tc struct {
		name   string
		token  string
		tool   string
		args   map[string]any
		calls  []string // recorded by the fleet when allowed
		within []string // confinement sent to the edge, when the call transfers a file
		why    []string // refusal: what the line must say
		argv0  string   // allowed exec: argv[0] the edge got
	}
	up := func(edge, path string) map[string]any {
		return map[string]any{"edge": edge, "path": path, "content": "x=1\n", "overwrite": true}
	}
	run := func(edge string, argv ...string) map[string]any { return map[string]any{"edge": edge, "argv": argv} }
	tests := []tc{
		// tools
		{name: "tools: viewer's rule lists get_device_info", token: viewerToken, tool: "get_device_info",
			args: map[string]any{"edge": "prod1"}, calls: []string{"device_info prod1"}},
		{name: "tools: operator's lab rule does not list upload_file", token: operatorToken, tool: "upload_file",
			args: up("lab1", "/srv/drop/a.conf"), why: []string{"may not use upload_file on edge lab1", "env=lab"}},
		// edges
		{name: "edges: admin's * rule reaches lab1", token: stdioClient, tool: "run_command",
			args: run("lab1", "reboot"), calls: []string{"exec lab1"}, argv0: "reboot"},
		{name: "edges: operator's prod rule reaches prod1", token: operatorToken, tool: "run_command",
			args: run("prod1", "systemctl", "restart", "app"), calls: []string{"exec prod1"}, argv0: "systemctl"},
		// commands
		{name: "commands: uptime", token: viewerToken, tool: "run_command", args: run("prod1", "uptime"),
			calls: []string{"exec prod1"}, argv0: "uptime"},
		{name: "commands: df -h", token: viewerToken, tool: "run_command", args: run("prod1", "df", "-h"),
			calls: []string{"exec prod1"}, argv0: "df"},
		{name: "commands: journalctl -u nginx", token: viewerToken, tool: "run_command", args: run("prod1", "journalctl", "-u", "nginx"),
			calls: []string{"exec prod1"}, argv0: "journalctl"},
		{name: "commands: rm refused", token: viewerToken, tool: "run_command", args: run("prod1", "rm", "-rf", "/"),
			why: []string{`argv[0] "rm" is not one of the commands [uptime df journalctl]`}},
		{name: "commands: an absolute path does not match a bare name", token: viewerToken, tool: "run_command",
			args: run("prod1", "/usr/bin/uptime"), why: []string{`argv[0] "/usr/bin/uptime" is not one of the commands`}},
		// shell
		{name: "shell: refused where commands apply", token: viewerToken, tool: "run_command",
			args: map[string]any{"edge": "prod1", "command": "uptime"}, why: []string{"shell command strings are refused"}},
		{name: "shell: false refuses a command string", token: operatorToken, tool: "run_command",
			args: map[string]any{"edge": "prod1", "command": "uptime | cat"}, why: []string{"shell command strings are not allowed on env=prod"}},
		{name: "shell: admin may", token: stdioClient, tool: "run_command",
			args: map[string]any{"edge": "prod1", "command": "uptime | cat"}, calls: []string{"exec prod1"}},
		// paths, download
		{name: "paths: download under /var/log/", token: viewerToken, tool: "download_file",
			args: map[string]any{"edge": "prod1", "path": "/var/log/syslog"}, calls: []string{"download prod1"}, within: []string{"/var/log"}},
		{name: "paths: download /var/log/ itself cleaned", token: viewerToken, tool: "download_file",
			args: map[string]any{"edge": "prod1", "path": "/var/log//nginx/./access.log"}, calls: []string{"download prod1"}, within: []string{"/var/log"}},
		{name: "paths: download outside refused", token: viewerToken, tool: "download_file",
			args: map[string]any{"edge": "prod1", "path": "/etc/shadow"}, why: []string{`path "/etc/shadow" is not under the paths [/var/log]`}},
		{name: "paths: admin downloads anywhere, unconfined", token: stdioClient, tool: "download_file",
			args: map[string]any{"edge": "prod1", "path": "/etc/shadow"}, calls: []string{"download prod1"}, within: nil},
		// paths, upload
		{name: "paths: upload under /srv/drop/", token: operatorToken, tool: "upload_file",
			args: up("prod1", "/srv/drop/app.conf"), calls: []string{"upload prod1"}, within: []string{"/srv/drop"}},
		{name: "paths: upload outside refused", token: operatorToken, tool: "upload_file",
			args: up("prod1", "/etc/cron.d/evil"), why: []string{`path "/etc/cron.d/evil" is not under the paths [/srv/drop]`}},
		{name: "paths: upload ../ out refused", token: operatorToken, tool: "upload_file",
			args: up("prod1", "/srv/drop/../../etc/passwd"), why: []string{"contains a '..' element"}},
		{name: "paths: upload to a sibling prefix refused", token: operatorToken, tool: "upload_file",
			args: up("prod1", "/srv/dropbox/x"), why: []string{"is not under the paths [/srv/drop]"}},
		// max_timeout_seconds
		{name: "max_timeout: 60 allowed", token: viewerToken, tool: "run_command",
			args: map[string]any{"edge": "prod1", "argv": []string{"uptime"}, "timeout_seconds": 60}, calls: []string{"exec prod1"}, argv0: "uptime"},
		{name: "max_timeout: 61 refused", token: viewerToken, tool: "run_command",
			args: map[string]any{"edge": "prod1", "argv": []string{"uptime"}, "timeout_seconds": 61}, why: []string{"timeout_seconds 61 is above the 60 allowed on env=prod"}},
		{name: "max_timeout: admin has none", token: stdioClient, tool: "run_command",
			args: map[string]any{"edge": "prod1", "argv": []string{"uptime"}, "timeout_seconds": 3600}, calls: []string{"exec prod1"}, argv0: "uptime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPolicyFleet()
			cfg, read, _ := policyConfig(t, p, "")
			h := newHarness(t, f, cfg)
			res := h.callAs(tt.token, tt.tool, tt.args)
			if tt.why != nil {
				expectRefused(t, res, read, tt.tool, roleOf[tt.token], tt.why...)
				if n := f.callCount(); n != 0 {
					t.Fatalf("refused call reached the fleet: %v", f.recorded())
				}
				intent, _ := lastCall(t, read, tt.tool)
				if intent.Actor != actorOf[tt.token] || intent.Edge != tt.args["edge"] {
					t.Fatalf("intent line actor %q edge %q, want %q %v", intent.Actor, intent.Edge, actorOf[tt.token], tt.args["edge"])
				}
				return
			}
			if res.IsError {
				t.Fatalf("want allowed, got %q", text(res))
			}
			if got := f.recorded(); !slices.Equal(got, tt.calls) {
				t.Fatalf("fleet calls %v, want %v", got, tt.calls)
			}
			if tt.argv0 != "" {
				f.mu.Lock()
				got := f.argv
				f.mu.Unlock()
				if len(got) != 1 || got[0][0] != tt.argv0 {
					t.Fatalf("edge got argv %v, want argv[0] %s", got, tt.argv0)
				}
			}
			if tt.tool == "upload_file" || tt.tool == "download_file" {
				w := f.withins()
				if len(w) != 1 || !slices.Equal(w[0], tt.within) {
					t.Fatalf("edge got within %v, want %v (the rule's paths, enforced again on the edge)", w, tt.within)
				}
			}
			intent, out := lastCall(t, read, tt.tool)
			if out.Outcome != "ok" || intent.Actor != actorOf[tt.token] {
				t.Fatalf("audit: outcome %q actor %q, want ok by %q", out.Outcome, intent.Actor, actorOf[tt.token])
			}
		})
	}
}

// TestPolicySmuggling: ways around a viewer's commands/shell/paths rule are refused before
// anything reaches the edge.
func TestPolicySmuggling(t *testing.T) {
	p := parsePolicy(t, testPolicy(120))
	tests := []struct {
		name string
		tool string
		args map[string]any
		why  string
	}{
		{"shell metacharacters in argv[0]", "run_command", map[string]any{"edge": "prod1", "argv": []string{"uptime; rm -rf /"}}, `argv[0] "uptime; rm -rf /" is not one of the commands`},
		{"sh -c", "run_command", map[string]any{"edge": "prod1", "argv": []string{"sh", "-c", "uptime"}}, `argv[0] "sh" is not one of`},
		{"planted binary by path", "run_command", map[string]any{"edge": "prod1", "argv": []string{"/tmp/x/uptime"}}, `argv[0] "/tmp/x/uptime" is not one of`},
		{"relative path", "run_command", map[string]any{"edge": "prod1", "argv": []string{"./uptime"}}, `argv[0] "./uptime" is not one of`},
		{"env PATH=... uptime", "run_command", map[string]any{"edge": "prod1", "argv": []string{"env", "PATH=/tmp", "uptime"}}, `argv[0] "env" is not one of`},
		{"env PATH", "run_command", map[string]any{"edge": "prod1", "argv": []string{"uptime"}, "env": map[string]any{"PATH": "/tmp/x"}}, `env "PATH" may not be set`},
		{"env LD_PRELOAD", "run_command", map[string]any{"edge": "prod1", "argv": []string{"uptime"}, "env": map[string]any{"LD_PRELOAD": "/tmp/x.so"}}, `env "LD_PRELOAD" may not be set`},
		{"env BASH_ENV", "run_command", map[string]any{"edge": "prod1", "argv": []string{"uptime"}, "env": map[string]any{"BASH_ENV": "/tmp/rc"}}, `env "BASH_ENV" may not be set`},
		{"command string", "run_command", map[string]any{"edge": "prod1", "command": "uptime"}, "shell command strings are refused"},
		{"download ../ out of /var/log", "download_file", map[string]any{"edge": "prod1", "path": "/var/log/../../etc/shadow"}, "contains a '..' element"},
		{"download sibling prefix", "download_file", map[string]any{"edge": "prod1", "path": "/var/logs/x"}, `path "/var/logs/x" is not under the paths [/var/log]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newPolicyFleet()
			cfg, read, _ := policyConfig(t, p, "")
			h := newHarness(t, f, cfg)
			res := h.callAs(viewerToken, tt.tool, tt.args)
			expectRefused(t, res, read, tt.tool, "viewer", tt.why)
			if f.callCount() != 0 {
				t.Fatalf("smuggled call reached the fleet: %v", f.recorded())
			}
		})
	}

	// run_on_edges judges each edge: the refusal is prod1's entry, and nothing runs.
	t.Run("run_on_edges sh -c", func(t *testing.T) {
		f := newPolicyFleet()
		cfg, read, _ := policyConfig(t, p, "")
		h := newHarness(t, f, cfg)
		res := h.callAs(viewerToken, "run_on_edges", map[string]any{"target": "*", "argv": []string{"sh", "-c", "uptime"}})
		var out tools.FanoutOutput
		structured(t, res, &out)
		if out.Matched != 1 || len(out.Results) != 1 || out.Failed != 1 {
			t.Fatalf("run_on_edges: %+v", out)
		}
		r := out.Results[0]
		if r.Edge != "prod1" || !strings.Contains(r.Error, "role viewer") || !strings.Contains(r.Error, `argv[0] "sh"`) {
			t.Fatalf("prod1's entry: %+v", r)
		}
		if f.callCount() != 0 {
			t.Fatalf("refused fan-out reached the fleet: %v", f.recorded())
		}
		if _, o := lastCall(t, read, "run_on_edges"); o.Outcome != "refused" || o.Edge != "prod1" {
			t.Fatalf("audit outcome %+v", o)
		}
	})
}

// TestPolicyVisibility: a viewer token sees only env=prod edges and its rule's tools.
func TestPolicyVisibility(t *testing.T) {
	p := parsePolicy(t, testPolicy(120))
	f := newPolicyFleet()
	cfg, read, _ := policyConfig(t, p, t.TempDir())
	h := newHarness(t, f, cfg)

	t.Run("get_status", func(t *testing.T) {
		names := func(token string) ([]string, int) {
			var out tools.StatusOutput
			structured(t, h.callAs(token, "get_status", nil), &out)
			var n []string
			for _, e := range out.Edges {
				n = append(n, e.Name)
			}
			return n, out.Totals.Known
		}
		if got, known := names(viewerToken); !slices.Equal(got, []string{"prod1"}) || known != 1 {
			t.Fatalf("viewer sees %v (known %d), want [prod1] (1)", got, known)
		}
		if got, known := names(stdioClient); !slices.Equal(got, []string{"lab1", "prod1"}) || known != 2 {
			t.Fatalf("admin sees %v (known %d), want both", got, known)
		}
	})

	t.Run("find_edges", func(t *testing.T) {
		names := func(token string) []string {
			var out tools.FindEdgesOutput
			structured(t, h.callAs(token, "find_edges", map[string]any{"sort_by": "name"}), &out)
			var n []string
			for _, e := range out.Edges {
				n = append(n, e.Name)
			}
			return n
		}
		if got := names(viewerToken); !slices.Equal(got, []string{"prod1"}) {
			t.Fatalf("viewer finds %v, want [prod1]", got)
		}
		if got := names(stdioClient); !slices.Equal(got, []string{"lab1", "prod1"}) {
			t.Fatalf("admin finds %v", got)
		}
	})

	t.Run("run_on_edges", func(t *testing.T) {
		before := f.callCount()
		var out tools.FanoutOutput
		structured(t, h.callAs(viewerToken, "run_on_edges", map[string]any{"target": "*", "argv": []string{"uptime"}}), &out)
		if out.Matched != 1 || len(out.Results) != 1 || out.Results[0].Edge != "prod1" || out.Succeeded != 1 {
			t.Fatalf("viewer's * matched %+v, want prod1 alone", out)
		}
		if got := f.recorded()[before:]; !slices.Equal(got, []string{"exec prod1"}) {
			t.Fatalf("fleet calls %v", got)
		}
		res := h.callAs(viewerToken, "run_on_edges", map[string]any{"target": "env=lab", "argv": []string{"uptime"}})
		var none tools.FanoutOutput
		structured(t, res, &none)
		if !res.IsError || none.Matched != 0 || !strings.Contains(text(res), "matches no edge") {
			t.Fatalf("viewer's env=lab: %s", mustJSON(t, res))
		}
		if got := f.recorded()[before:]; len(got) != 1 {
			t.Fatalf("env=lab reached the fleet: %v", got)
		}
	})

	t.Run("resources", func(t *testing.T) {
		read := func(token, uri string) (string, error) {
			ctx, cancel := context.WithTimeout(asClient(context.Background(), token), 10*time.Second)
			defer cancel()
			var req mcp.ReadResourceRequest
			req.Params.URI = uri
			res, err := h.c.ReadResource(ctx, req)
			if err != nil {
				return "", err
			}
			if len(res.Contents) != 1 {
				t.Fatalf("%s: %d contents", uri, len(res.Contents))
			}
			return res.Contents[0].(mcp.TextResourceContents).Text, nil
		}
		edgeNames := func(token string) []string {
			s, err := read(token, "edge://edges")
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Edges []tools.EdgeListEntry `json:"edges"`
			}
			if err := json.Unmarshal([]byte(s), &doc); err != nil {
				t.Fatal(err)
			}
			var n []string
			for _, e := range doc.Edges {
				n = append(n, e.Name)
			}
			return n
		}
		if got := edgeNames(viewerToken); !slices.Equal(got, []string{"prod1"}) {
			t.Fatalf("viewer's edge://edges lists %v", got)
		}
		if got := edgeNames(stdioClient); !slices.Equal(got, []string{"lab1", "prod1"}) {
			t.Fatalf("admin's edge://edges lists %v", got)
		}
		before := f.callCount()
		if _, err := read(viewerToken, "edge://lab1/info"); err == nil || !strings.Contains(err.Error(), `unknown edge "lab1"`) {
			t.Fatalf("viewer reads edge://lab1/info: %v", err)
		}
		if f.callCount() != before {
			t.Fatalf("hidden edge's inventory was asked for: %v", f.recorded())
		}
		if _, err := read(viewerToken, "edge://prod1/info"); err != nil {
			t.Fatalf("viewer reads edge://prod1/info: %v", err)
		}
	})

	t.Run("calls on lab1 are unknown edge", func(t *testing.T) {
		before := f.callCount()
		for _, c := range []struct {
			tool string
			args map[string]any
		}{
			{"get_device_info", map[string]any{"edge": "lab1"}},
			{"get_device_info", map[string]any{"edge": "SHA256:lab1"}},
			{"run_command", map[string]any{"edge": "lab1", "argv": []string{"uptime"}}},
			{"download_file", map[string]any{"edge": "lab1", "path": "/var/log/syslog"}},
		} {
			res := h.callAs(viewerToken, c.tool, c.args)
			if !res.IsError || !strings.Contains(text(res), fmt.Sprintf("unknown edge %q", c.args["edge"])) {
				t.Fatalf("%s on %v: %s", c.tool, c.args["edge"], mustJSON(t, res))
			}
			// To the caller the edge is unknown; the operator's audit says it was refused.
			if _, o := lastCall(t, read, c.tool); o.Outcome != "refused" || o.Actor != "http:openwebui" {
				t.Fatalf("audit %+v", o)
			}
		}
		if f.callCount() != before {
			t.Fatalf("hidden edge reached: %v", f.recorded()[before:])
		}
		// The same edge for admin works.
		if res := h.callAs(stdioClient, "get_device_info", map[string]any{"edge": "lab1"}); res.IsError {
			t.Fatalf("admin's get_device_info lab1: %s", text(res))
		}
	})

	t.Run("tools/list", func(t *testing.T) {
		want := append(slices.Clone(viewerTools), "explain_policy")
		slices.Sort(want)
		if got := h.listToolsAs(viewerToken); !slices.Equal(got, want) {
			t.Fatalf("viewer lists %v, want %v", got, want)
		}
		all := h.listToolsAs(stdioClient)
		for _, name := range []string{"upload_file", "approve_action", "list_pending_actions", "start_command"} {
			if !slices.Contains(all, name) {
				t.Fatalf("admin does not list %s: %v", name, all)
			}
		}
		if got := h.listToolsAs(operatorToken); !slices.Equal(got, []string{"explain_policy", "run_command", "upload_file"}) {
			t.Fatalf("operator lists %v", got)
		}
		// A token the policy does not know has no role: it sees only explain_policy.
		if got := h.listToolsAs(unknownToken); !slices.Equal(got, []string{"explain_policy"}) {
			t.Fatalf("unknown token lists %v", got)
		}
	})

	t.Run("hidden tools cannot be called", func(t *testing.T) {
		before := f.callCount()
		for _, c := range []struct {
			token, tool string
			args        map[string]any
		}{
			{viewerToken, "upload_file", map[string]any{"edge": "prod1", "path": "/var/log/x", "content": "x"}},
			{viewerToken, "approve_action", map[string]any{"token": provisionToken, "action_id": "0123456789ab", "approve": true}},
			{viewerToken, "start_command", map[string]any{"edge": "prod1", "argv": []string{"uptime"}}},
			{unknownToken, "get_status", nil},
		} {
			res, err := h.callRaw(c.token, c.tool, c.args)
			if err == nil || !strings.Contains(err.Error(), "not found") {
				t.Fatalf("%s as %s: want tool not found, got %v %s", c.tool, actorOf[c.token], err, mustJSON(t, res))
			}
		}
		if f.callCount() != before {
			t.Fatalf("hidden tool reached the fleet: %v", f.recorded()[before:])
		}
	})
}

// TestExplainPolicy: a proposed call's verdict, rule and reason, without running it.
func TestExplainPolicy(t *testing.T) {
	p := parsePolicy(t, testPolicy(120))
	f := newPolicyFleet()
	cfg, _, _ := policyConfig(t, p, t.TempDir())
	h := newHarness(t, f, cfg)
	tests := []struct {
		name          string
		token         string
		tool          string
		args          map[string]any
		allowed, appr bool
		role, rule    string
		reason        string
	}{
		{"allowed", viewerToken, "run_command", map[string]any{"edge": "prod1", "argv": []any{"uptime"}},
			true, false, "viewer", "viewer rule 1 (edges env=prod)", "role viewer: allowed by viewer rule 1 (edges env=prod)"},
		{"refused by commands", viewerToken, "run_command", map[string]any{"edge": "prod1", "argv": []any{"rm", "-rf", "/"}},
			false, false, "viewer", "viewer rule 1 (edges env=prod)", `role viewer: argv[0] "rm" is not one of the commands`},
		{"refused by max_timeout", viewerToken, "run_command", map[string]any{"edge": "prod1", "argv": []any{"uptime"}, "timeout_seconds": 120},
			false, false, "viewer", "viewer rule 1 (edges env=prod)", "timeout_seconds 120 is above the 60"},
		{"refused by env", viewerToken, "run_command", map[string]any{"edge": "prod1", "argv": []any{"uptime"}, "env": map[string]any{"LD_PRELOAD": "x"}},
			false, false, "viewer", "viewer rule 1 (edges env=prod)", `env "LD_PRELOAD" may not be set`},
		{"hidden edge", viewerToken, "run_command", map[string]any{"edge": "lab1", "argv": []any{"uptime"}},
			false, false, "viewer", "", `unknown edge "lab1"`},
		{"tool not in the role", viewerToken, "upload_file", map[string]any{"edge": "prod1", "path": "/var/log/x"},
			false, false, "viewer", "", "role viewer may not use upload_file"},
		{"needs approval", operatorToken, "run_command", map[string]any{"edge": "lab1", "argv": []any{"make", "deploy"}},
			true, true, "operator", "operator rule 2 (edges env=lab)", "waits for a person's approval"},
		{"other rule, no approval", operatorToken, "run_command", map[string]any{"edge": "prod1", "argv": []any{"make", "deploy"}},
			true, false, "operator", "operator rule 1 (edges env=prod)", "allowed by operator rule 1"},
		{"admin upload needs approval", stdioClient, "upload_file", map[string]any{"edge": "prod1", "path": "/etc/motd"},
			true, true, "admin", "admin rule 1", "waits for a person's approval"},
		{"unknown token has no role", unknownToken, "get_status", map[string]any{},
			false, false, "", "", "has no role"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.callCount()
			res := h.callAs(tt.token, "explain_policy", map[string]any{"tool": tt.tool, "arguments": tt.args})
			if res.IsError {
				t.Fatalf("explain_policy failed: %s", text(res))
			}
			var out tools.ExplainOutput
			structured(t, res, &out)
			if out.Allowed != tt.allowed || out.NeedsApproval != tt.appr || out.Role != tt.role ||
				!strings.HasPrefix(out.Rule, tt.rule) || (tt.rule == "" && out.Rule != "") || !strings.Contains(out.Reason, tt.reason) {
				t.Fatalf("explain_policy = %+v, want allowed %v needs_approval %v role %q rule %q reason ~%q",
					out, tt.allowed, tt.appr, tt.role, tt.rule, tt.reason)
			}
			if f.callCount() != before {
				t.Fatalf("explain_policy ran something: %v", f.recorded()[before:])
			}
		})
	}
}

// uploadArgs is admin's upload that waits for a person.
var uploadArgs = map[string]any{"edge": "prod1", "path": "/etc/motd", "content": "welcome\n", "overwrite": true}

// TestApprovalByCLI: the call waits (with progress) while `mcp-ssh-gateway actions` (a
// second Store on the same STATE_DIR) approves or denies it.
func TestApprovalByCLI(t *testing.T) {
	p := parsePolicy(t, testPolicy(60))
	for _, approve := range []bool{true, false} {
		t.Run(map[bool]string{true: "approved", false: "denied"}[approve], func(t *testing.T) {
			dir := t.TempDir()
			f := newPolicyFleet()
			cfg, read, _ := policyConfig(t, p, dir)
			cli := openStore(t, dir)
			h := newHarness(t, f, cfg)
			var mu sync.Mutex
			var progress []string
			h.c.OnNotification(func(n mcp.JSONRPCNotification) {
				if n.Method == "notifications/progress" && n.Params.AdditionalFields["progressToken"] == "appr" {
					m, _ := n.Params.AdditionalFields["message"].(string)
					mu.Lock()
					progress = append(progress, m)
					mu.Unlock()
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ch := h.goCall(ctx, stdioClient, "upload_file", uploadArgs, &mcp.Meta{ProgressToken: "appr"})

			act := waitPending(t, cli)
			if act.Tool != "upload_file" || act.Edge != "prod1" || act.Actor != "stdio" || act.Role != "admin" ||
				!strings.Contains(act.Summary, "path: /etc/motd") || strings.Contains(act.Summary, "welcome") {
				t.Fatalf("pending action %+v", act)
			}
			if f.callCount() != 0 {
				t.Fatal("the call ran before anyone approved it")
			}
			// The waiting call says so, naming the action.
			deadline := time.Now().Add(3 * time.Second)
			for {
				mu.Lock()
				got := strings.Join(progress, "")
				mu.Unlock()
				if strings.Contains(got, "approve action "+act.ID) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no progress naming action %s: %q", act.ID, got)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := cli.Decide(act.ID, approve, "cli:tester", "not today"); err != nil {
				t.Fatal(err)
			}
			res := h.await("upload_file", ch, 10*time.Second)
			appr := eventsOf(read, "approval")
			if len(appr) != 1 || appr[0].Approver != "cli:tester" || appr[0].Path != act.ID || appr[0].Actor != "stdio" {
				t.Fatalf("approval audit lines %s", mustJSON(t, appr))
			}
			if req := eventsOf(read, "approval_requested"); len(req) != 1 || req[0].Path != act.ID {
				t.Fatalf("approval_requested lines %s", mustJSON(t, req))
			}
			if approve {
				if res.IsError {
					t.Fatalf("approved call failed: %s", text(res))
				}
				if got := f.recorded(); !slices.Equal(got, []string{"upload prod1"}) {
					t.Fatalf("fleet calls %v", got)
				}
				if appr[0].Outcome != "approved" {
					t.Fatalf("approval outcome %q", appr[0].Outcome)
				}
				if _, o := lastCall(t, read, "upload_file"); o.Outcome != "ok" {
					t.Fatalf("outcome %+v", o)
				}
				return
			}
			if !res.IsError || !strings.Contains(text(res), "upload_file on prod1 was denied by cli:tester: not today") {
				t.Fatalf("denied call: %s", mustJSON(t, res))
			}
			if f.callCount() != 0 || appr[0].Outcome != "denied" {
				t.Fatalf("denied call ran (%v) or audited %q", f.recorded(), appr[0].Outcome)
			}
			if _, o := lastCall(t, read, "upload_file"); o.Outcome != "refused" {
				t.Fatalf("outcome %+v", o)
			}
		})
	}
}

// TestApprovalTimeout: silence is no.
func TestApprovalTimeout(t *testing.T) {
	p := parsePolicy(t, testPolicy(1))
	dir := t.TempDir()
	f := newPolicyFleet()
	cfg, read, store := policyConfig(t, p, dir)
	h := newHarness(t, f, cfg)
	start := time.Now()
	res := h.call("upload_file", uploadArgs)
	took := time.Since(start)
	if !res.IsError || !strings.Contains(text(res), "upload_file on prod1 was not approved: no decision within 1 s (silence is no)") {
		t.Fatalf("timed-out call: %s", mustJSON(t, res))
	}
	if took < 900*time.Millisecond || took > 5*time.Second {
		t.Fatalf("the call waited %s for approval_timeout_seconds 1", took)
	}
	if f.callCount() != 0 {
		t.Fatalf("unapproved call ran: %v", f.recorded())
	}
	appr := eventsOf(read, "approval")
	if len(appr) != 1 || appr[0].Outcome != "denied" || appr[0].Approver != "" {
		t.Fatalf("approval audit lines %s", mustJSON(t, appr))
	}
	if _, o := lastCall(t, read, "upload_file"); o.Outcome != "refused" {
		t.Fatalf("outcome %+v", o)
	}
	if list, err := store.List(); err != nil || len(list) != 0 {
		t.Fatalf("still pending after the timeout: %v %v", list, err)
	}
}

// TestApproveAction: another client with the PROVISION_TOKEN approves through the tool; the
// caller cannot approve its own call, and a wrong token decides nothing.
func TestApproveAction(t *testing.T) {
	p := parsePolicy(t, testPolicy(60))
	dir := t.TempDir()
	f := newPolicyFleet()
	cfg, read, _ := policyConfig(t, p, dir)
	h := newHarness(t, f, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch := h.goCall(ctx, stdioClient, "upload_file", uploadArgs, nil)

	// ops lists what waits.
	var pending tools.PendingActionsOutput
	deadline := time.Now().Add(5 * time.Second)
	for len(pending.Actions) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("list_pending_actions showed nothing within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
		res := h.callAs(opsToken, "list_pending_actions", map[string]any{"token": provisionToken})
		if res.IsError {
			t.Fatalf("list_pending_actions: %s", text(res))
		}
		structured(t, res, &pending)
	}
	act := pending.Actions[0]
	if len(pending.Actions) != 1 || act.Tool != "upload_file" || act.Edge != "prod1" || act.Actor != "stdio" {
		t.Fatalf("pending %+v", pending)
	}
	if res := h.callAs(opsToken, "list_pending_actions", map[string]any{"token": "wrong"}); !res.IsError ||
		!strings.Contains(text(res), "wrong provisioning token") {
		t.Fatalf("list with a wrong token: %s", mustJSON(t, res))
	}

	// The caller itself may not decide it, even with the token; a wrong token decides nothing.
	// The id as the store reads it (case and spaces do not matter to it) must not slip past.
	for _, id := range []string{act.ActionID, strings.ToUpper(act.ActionID), " " + act.ActionID + "\t"} {
		if res := h.callAs(stdioClient, "approve_action", map[string]any{"token": provisionToken, "action_id": id, "approve": true}); !res.IsError ||
			!strings.Contains(text(res), "is a call of this same client (stdio)") {
			t.Fatalf("self-approval with id %q: %s", id, mustJSON(t, res))
		}
	}
	if res := h.callAs(opsToken, "approve_action", map[string]any{"token": "wrong", "action_id": act.ActionID, "approve": true}); !res.IsError ||
		!strings.Contains(text(res), "wrong provisioning token") {
		t.Fatalf("wrong token: %s", mustJSON(t, res))
	}
	select {
	case r := <-ch:
		t.Fatalf("the call ended before a valid decision: %v %s", r.err, mustJSON(t, r.res))
	case <-time.After(100 * time.Millisecond):
	}
	if f.callCount() != 0 {
		t.Fatal("the call ran without approval")
	}

	res := h.callAs(opsToken, "approve_action", map[string]any{"token": provisionToken, "action_id": act.ActionID, "approve": true})
	if res.IsError {
		t.Fatalf("approve_action: %s", text(res))
	}
	var decided tools.PendingAction
	structured(t, res, &decided)
	if decided.ActionID != act.ActionID || decided.Tool != "upload_file" {
		t.Fatalf("approve_action returned %+v", decided)
	}
	if r := h.await("upload_file", ch, 10*time.Second); r.IsError {
		t.Fatalf("approved call failed: %s", text(r))
	}
	if got := f.recorded(); !slices.Equal(got, []string{"upload prod1"}) {
		t.Fatalf("fleet calls %v", got)
	}
	appr := eventsOf(read, "approval")
	if len(appr) != 1 || appr[0].Approver != "mcp:http:ops" || appr[0].Outcome != "approved" {
		t.Fatalf("approval audit lines %s", mustJSON(t, appr))
	}
	// approve_action's own line names its actor and approver.
	var own []audit.Event
	for _, e := range eventsOf(read, "outcome") {
		if e.Tool == "approve_action" && e.Outcome == "approved" {
			own = append(own, e)
		}
	}
	if len(own) != 1 || own[0].Actor != "http:ops" || own[0].Approver != "mcp:http:ops" || own[0].Path != act.ActionID {
		t.Fatalf("approve_action audit lines %s", mustJSON(t, own))
	}
	// Decided once: a second decision fails.
	if res := h.callAs(opsToken, "approve_action", map[string]any{"token": provisionToken, "action_id": act.ActionID, "approve": false}); !res.IsError {
		t.Fatalf("second decision: %s", mustJSON(t, res))
	}
}

// elicitAnswer answers the gateway's approval elicitation as a person would.
type elicitAnswer struct {
	mu     sync.Mutex
	asked  []string
	answer mcp.ElicitationResult
}

func (e *elicitAnswer) Elicit(_ context.Context, req mcp.ElicitationRequest) (*mcp.ElicitationResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.asked = append(e.asked, req.Params.Message)
	r := e.answer
	return &r, nil
}

// TestApprovalByElicitation: a client that declares elicitation asks its user; accept with
// approve true runs the call, decline or approve false refuses it.
func TestApprovalByElicitation(t *testing.T) {
	p := parsePolicy(t, testPolicy(60))
	tests := []struct {
		name   string
		answer mcp.ElicitationResult
		runs   bool
	}{
		{"accept approve", mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"approve": true}}}, true},
		{"accept but approve false", mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"approve": false}}}, false},
		{"decline", mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionDecline}}, false},
		{"cancel", mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{Action: mcp.ElicitationResponseActionCancel}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := newPolicyFleet()
			cfg, read, store := policyConfig(t, p, dir)
			person := &elicitAnswer{answer: tt.answer}
			h := newHarnessWith(t, f, cfg, mcp.LATEST_PROTOCOL_VERSION, client.WithElicitationHandler(person))
			// The in-process client negotiates the stateless 2026-07-28 protocol, so the
			// gateway's input request comes back as an input_required result (multi round-trip).
			if v := h.c.ProtocolVersion(); v != mcp.LATEST_PROTOCOL_VERSION {
				t.Fatalf("client speaks %q, want %q (multi round-trip elicitation)", v, mcp.LATEST_PROTOCOL_VERSION)
			}
			res := h.call("upload_file", uploadArgs)
			person.mu.Lock()
			asked := slices.Clone(person.asked)
			person.mu.Unlock()
			if len(asked) != 1 || !strings.Contains(asked[0], "Approve upload_file on prod1 for stdio?") || !strings.Contains(asked[0], "path: /etc/motd") {
				t.Fatalf("the person was asked %q", asked)
			}
			appr := eventsOf(read, "approval")
			if len(appr) != 1 || appr[0].Approver != "elicitation:stdio" {
				t.Fatalf("approval audit lines %s", mustJSON(t, appr))
			}
			if list, err := store.List(); err != nil || len(list) != 0 {
				t.Fatalf("still pending after the answer: %v %v", list, err)
			}
			if tt.runs {
				if res.IsError || appr[0].Outcome != "approved" {
					t.Fatalf("approved call: %s (audit %q)", mustJSON(t, res), appr[0].Outcome)
				}
				if got := f.recorded(); !slices.Equal(got, []string{"upload prod1"}) {
					t.Fatalf("fleet calls %v", got)
				}
				return
			}
			if !res.IsError || !strings.Contains(text(res), "upload_file on prod1 was denied by elicitation:stdio") || appr[0].Outcome != "denied" {
				t.Fatalf("refused call: %s (audit %q)", mustJSON(t, res), appr[0].Outcome)
			}
			if f.callCount() != 0 {
				t.Fatalf("denied call ran: %v", f.recorded())
			}
			if _, o := lastCall(t, read, "upload_file"); o.Outcome != "refused" {
				t.Fatalf("outcome %+v", o)
			}
		})
	}
}

// TestPolicyReload: a policy.Watcher's rewrite is in force within 2 s; a broken file keeps
// the last good policy.
func TestPolicyReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	first := testPolicy(60)
	if err := os.WriteFile(path, []byte(first), 0o600); err != nil {
		t.Fatal(err)
	}
	reloads := make(chan error, 16)
	w, err := policy.NewWatcher(path, nil, func(_ *policy.Policy, err error) {
		select {
		case reloads <- err:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("the policy watcher did not stop")
		}
	})

	f := newPolicyFleet()
	cfg, _, _ := policyConfig(t, nil, "")
	cfg.Access.Policy = w.Current
	h := newHarness(t, f, cfg)
	explain := func(argv0 string) tools.ExplainOutput {
		var out tools.ExplainOutput
		structured(t, h.callAs(viewerToken, "explain_policy", map[string]any{"tool": "run_command",
			"arguments": map[string]any{"edge": "prod1", "argv": []any{argv0}}}), &out)
		return out
	}
	if res := h.callAs(viewerToken, "run_command", map[string]any{"edge": "prod1", "argv": []string{"uptime"}}); res.IsError {
		t.Fatalf("first policy: uptime refused: %s", text(res))
	}
	if got := h.listToolsAs(viewerToken); !slices.Contains(got, "download_file") {
		t.Fatalf("first policy: viewer lists %v", got)
	}

	// Rewrite: the viewer loses uptime and download_file, gains hostname.
	second := strings.Replace(first, "commands: [uptime, df, journalctl]", "commands: [hostname, df]", 1)
	second = strings.Replace(second, ", download_file,", ",", 1)
	if second == first || strings.Contains(second, "download_file") {
		t.Fatal("the rewrite did not change the policy")
	}
	written := time.Now()
	if err := os.WriteFile(path, []byte(second), 0o600); err != nil {
		t.Fatal(err)
	}
	for explain("uptime").Allowed {
		if time.Since(written) > 2*time.Second {
			t.Fatal("the rewritten policy is not in force within 2 s")
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Logf("rewrite in force after %s", time.Since(written).Round(time.Millisecond))
	before := f.callCount()
	if res := h.callAs(viewerToken, "run_command", map[string]any{"edge": "prod1", "argv": []string{"uptime"}}); !res.IsError ||
		!strings.Contains(text(res), `role viewer: argv[0] "uptime" is not one of the commands [hostname df]`) {
		t.Fatalf("after reload: uptime %s", mustJSON(t, res))
	}
	if res := h.callAs(viewerToken, "run_command", map[string]any{"edge": "prod1", "argv": []string{"hostname"}}); res.IsError {
		t.Fatalf("after reload: hostname refused: %s", text(res))
	}
	if got := f.recorded()[before:]; !slices.Equal(got, []string{"exec prod1"}) {
		t.Fatalf("fleet calls after reload %v", got)
	}
	if got := h.listToolsAs(viewerToken); slices.Contains(got, "download_file") {
		t.Fatalf("after reload viewer still lists download_file: %v", got)
	}

	// A broken file: the reload fails and the second policy stays (not the first, not
	// AllowAll).
	for len(reloads) > 0 {
		<-reloads
	}
	if err := os.WriteFile(path, []byte("roles: [this is not a policy\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(3 * time.Second)
	for failed := false; !failed; {
		select {
		case err := <-reloads:
			failed = err != nil
		case <-deadline:
			t.Fatal("the broken file was not read within 3 s")
		}
	}
	if out := explain("uptime"); out.Allowed || out.Role != "viewer" {
		t.Fatalf("after a broken file: uptime %+v, want the last good policy's refusal", out)
	}
	if out := explain("hostname"); !out.Allowed || out.Rule != "viewer rule 1 (edges env=prod)" {
		t.Fatalf("after a broken file: hostname %+v", out)
	}
	if got := h.listToolsAs(viewerToken); slices.Contains(got, "download_file") || !slices.Contains(got, "run_command") {
		t.Fatalf("after a broken file viewer lists %v", got)
	}
}

// TestFanoutApproval: run_on_edges under a rule with approval waits for a person for each
// edge, even from a client that elicits (a fan-out cannot hand back one input request per
// edge), and runs only once approved.
func TestFanoutApproval(t *testing.T) {
	p := parsePolicy(t, `clients:
  stdio: {role: admin}
roles:
  admin:
    - {edges: "*", tools: ["*"], approval: [run_on_edges]}
approval_timeout_seconds: 60
`)
	for _, approve := range []bool{true, false} {
		t.Run(map[bool]string{true: "approved", false: "denied"}[approve], func(t *testing.T) {
			dir := t.TempDir()
			f := newPolicyFleet()
			cfg, read, _ := policyConfig(t, p, dir)
			cli := openStore(t, dir)
			person := &elicitAnswer{answer: mcp.ElicitationResult{ElicitationResponse: mcp.ElicitationResponse{
				Action: mcp.ElicitationResponseActionAccept, Content: map[string]any{"approve": true}}}}
			h := newHarnessWith(t, f, cfg, mcp.LATEST_PROTOCOL_VERSION, client.WithElicitationHandler(person))
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ch := h.goCall(ctx, stdioClient, "run_on_edges", map[string]any{"target": "env=prod", "argv": []string{"uptime"}}, nil)
			act := waitPending(t, cli)
			if act.Tool != "run_on_edges" || act.Edge != "prod1" {
				t.Fatalf("pending %+v", act)
			}
			if f.callCount() != 0 {
				t.Fatal("the fan-out ran before approval")
			}
			if _, err := cli.Decide(act.ID, approve, "cli:tester", ""); err != nil {
				t.Fatal(err)
			}
			res := h.await("run_on_edges", ch, 10*time.Second)
			var out tools.FanoutOutput
			structured(t, res, &out)
			if len(out.Results) != 1 {
				t.Fatalf("results %+v", out)
			}
			person.mu.Lock()
			asked := len(person.asked)
			person.mu.Unlock()
			if asked != 0 {
				t.Fatalf("the fan-out elicited %d times", asked)
			}
			appr := eventsOf(read, "approval")
			if len(appr) != 1 || appr[0].Approver != "cli:tester" {
				t.Fatalf("approval audit lines %s", mustJSON(t, appr))
			}
			if approve {
				if out.Succeeded != 1 || out.Results[0].Error != "" || !slices.Equal(f.recorded(), []string{"exec prod1"}) {
					t.Fatalf("approved fan-out: %+v, calls %v", out, f.recorded())
				}
				return
			}
			if out.Failed != 1 || !strings.Contains(out.Results[0].Error, "run_on_edges on prod1 was denied by cli:tester") || f.callCount() != 0 {
				t.Fatalf("denied fan-out: %+v, calls %v", out, f.recorded())
			}
			if _, o := lastCall(t, read, "run_on_edges"); o.Outcome != "refused" {
				t.Fatalf("outcome %+v", o)
			}
		})
	}
}
