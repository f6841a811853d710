// Package e2e starts the real mcp-ssh-gateway and mcp-ssh-edge binaries on loopback and
// drives the gateway through a real MCP client, checking the contract of SPEC.md end to end.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// Binaries under test, set by TestMain.
var (
	gatewayBin string
	edgeBin    string
	repoRoot   string
)

const (
	connectTimeout = 15 * time.Second // an edge shows up connected within this
	callTimeout    = 60 * time.Second // one MCP tool call
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	if dir := os.Getenv("BIN_DIR"); dir != "" {
		gatewayBin = filepath.Join(dir, "mcp-ssh-gateway")
		edgeBin = filepath.Join(dir, "mcp-ssh-edge")
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	gatewayBin = filepath.Join(dir, "mcp-ssh-gateway")
	edgeBin = filepath.Join(dir, "mcp-ssh-edge")
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, b := range []struct{ out, pkg string }{{gatewayBin, "./agent"}, {edgeBin, "./edge"}} {
		wg.Go(func() {
			cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	return m.Run()
}

// syncBuffer collects a subprocess's output; safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail is the last n bytes, for failure messages.
func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// baseEnv is the minimal environment every subprocess gets: no HOME or XDG dir of the user.
func baseEnv(dir string) []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"XDG_CONFIG_HOME=" + filepath.Join(dir, "config"),
		"XDG_STATE_HOME=" + filepath.Join(dir, "state"),
		"LANG=C",
	}
}

func envList(base []string, m map[string]string) []string {
	out := append([]string(nil), base...)
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

// fixture is one gateway's keys and state in a temp dir.
type fixture struct {
	dir         string
	keysDir     string
	stateDir    string
	hostKeyFile string
	authFile    string
	hostPub     ssh.PublicKey
	hostFP      string
	authMu      sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{
		dir:         dir,
		keysDir:     filepath.Join(dir, "keys"),
		stateDir:    filepath.Join(dir, "gwstate"),
		hostKeyFile: filepath.Join(dir, "keys", "host_ed25519"),
		authFile:    filepath.Join(dir, "keys", "authorized_keys"),
	}
	signer, _, err := keys.LoadOrGenerate(f.hostKeyFile, "e2e-gateway")
	if err != nil {
		t.Fatalf("host key: %v", err)
	}
	f.hostPub = signer.PublicKey()
	f.hostFP = keys.Fingerprint(f.hostPub)
	if err := os.WriteFile(f.authFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// gatewayEnv is the gateway's environment; extra overrides the defaults.
func (f *fixture) gatewayEnv(extra map[string]string) []string {
	m := map[string]string{
		"SSH_BIND":             "127.0.0.1",
		"SSH_PORT":             "0",
		"KEYS_DIR":             f.keysDir,
		"STATE_DIR":            f.stateDir,
		"HOST_KEY_FILE":        f.hostKeyFile,
		"AUTHORIZED_KEYS_FILE": f.authFile,
		"MCP_TRANSPORT":        "stdio",
		"KEEPALIVE_INTERVAL":   "1s",
		"LOG_FORMAT":           "json",
		"LOG_LEVEL":            "debug",
	}
	for k, v := range extra {
		m[k] = v
	}
	return envList(baseEnv(f.dir), m)
}

// edgeKey is an edge identity made by `mcp-ssh-edge pubkey`.
type edgeKey struct {
	file string // private key, OpenSSH format
	line string // authorized_keys line as printed
	fp   string
	pub  ssh.PublicKey
}

var keySeq atomic.Int64

// newEdgeKey runs `mcp-ssh-edge pubkey`, which generates the key, and parses its output.
func (f *fixture) newEdgeKey(t *testing.T) edgeKey {
	t.Helper()
	file := filepath.Join(f.dir, fmt.Sprintf("edgekey-%d", keySeq.Add(1)), "id_ed25519")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, edgeBin, "pubkey")
	cmd.Env = envList(baseEnv(f.dir), map[string]string{
		"EDGE_KEY_FILE":         file,
		"EDGE_STATE_DIR":        filepath.Join(filepath.Dir(file), "state"),
		"EDGE_GATEWAY":          "127.0.0.1:1",
		"EDGE_GATEWAY_HOST_KEY": f.hostFP,
	})
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("mcp-ssh-edge pubkey: %v\n%s", err, stderr.String())
	}
	line := strings.TrimSpace(string(out))
	if strings.Count(line, "\n") != 0 {
		t.Fatalf("mcp-ssh-edge pubkey printed more than one line: %q", out)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatalf("mcp-ssh-edge pubkey printed %q, not an authorized_keys line: %v", line, err)
	}
	st, err := os.Stat(file)
	if err != nil {
		t.Fatalf("mcp-ssh-edge pubkey did not write EDGE_KEY_FILE: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("edge key %s has mode %v, want 0600", file, st.Mode().Perm())
	}
	return edgeKey{file: file, line: line, fp: keys.Fingerprint(pub), pub: pub}
}

// authorize appends pub to authorized_keys, with name= and labels= options when given.
func (f *fixture) authorize(t *testing.T, k edgeKey, name, labels string) {
	t.Helper()
	f.authMu.Lock()
	defer f.authMu.Unlock()
	var opts []string
	if name != "" {
		opts = append(opts, fmt.Sprintf("name=%q", name))
	}
	if labels != "" {
		opts = append(opts, fmt.Sprintf("labels=%q", labels))
	}
	line := keys.AuthorizedLine(k.pub) + " e2e-" + k.fp[7:15]
	if len(opts) > 0 {
		line = strings.Join(opts, ",") + " " + line
	}
	old, err := os.ReadFile(f.authFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.WriteFileAtomic(f.authFile, append(old, []byte(line+"\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// proc is a started subprocess in its own process group, stopped at test cleanup.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's result, valid after done
}

func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if cmd.Stderr == nil {
		cmd.Stderr = p.stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("%s (pid %d) stderr:\n%s", name, cmd.Process.Pid, tail(p.stderr.String(), 6000))
		}
	})
	return p
}

// kill sends SIGKILL to the process group and waits for the process (bounded).
func (p *proc) kill(t *testing.T) {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("pid %d did not exit 10 s after SIGKILL", p.cmd.Process.Pid)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// edgeProc is a running mcp-ssh-edge.
type edgeProc struct {
	*proc
	key edgeKey
}

// startEdge runs mcp-ssh-edge with key against gwAddr; env overrides the defaults.
func (f *fixture) startEdge(t *testing.T, key edgeKey, gwAddr string, env map[string]string) *edgeProc {
	t.Helper()
	m := map[string]string{
		"EDGE_GATEWAY":            gwAddr,
		"EDGE_GATEWAY_HOST_KEY":   f.hostFP,
		"EDGE_KEY_FILE":           key.file,
		"EDGE_STATE_DIR":          t.TempDir(),
		"EDGE_KEEPALIVE_INTERVAL": "1s",
		"EDGE_BACKOFF_MAX":        "2s",
		"LOG_FORMAT":              "json",
		"LOG_LEVEL":               "debug",
	}
	for k, v := range env {
		m[k] = v
	}
	cmd := exec.Command(edgeBin)
	cmd.Env = envList(baseEnv(f.dir), m)
	return &edgeProc{proc: startProc(t, "edge "+key.fp, cmd), key: key}
}

// gateway is a running mcp-ssh-gateway with an initialized MCP client on its stdio.
type gateway struct {
	c       *client.Client
	stderr  *syncBuffer
	addr    string // from the "ssh listening" log line
	tools   map[string]mcp.Tool
	schemas map[string]*jsonschema.Resolved
	f       *fixture
}

// startGateway launches the gateway through mcp-go's stdio client, initializes the session,
// lists the tools and resolves their output schemas.
func (f *fixture) startGateway(t *testing.T, extra map[string]string) *gateway {
	t.Helper()
	g := &gateway{stderr: &syncBuffer{}, f: f}
	var cmd *exec.Cmd
	cmdFunc := func(ctx context.Context, command string, env []string, args []string) (*exec.Cmd, error) {
		cmd = exec.Command(command, args...)
		cmd.Env = env
		cmd.Stderr = g.stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		return cmd, nil
	}
	c, err := client.NewStdioMCPClientWithOptions(gatewayBin, nil, nil, transport.WithCommandFunc(
		func(ctx context.Context, command string, _ []string, args []string) (*exec.Cmd, error) {
			return cmdFunc(ctx, command, f.gatewayEnv(extra), args)
		}))
	if err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	g.c = c
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() { c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(15 * time.Second):
			t.Errorf("gateway did not stop within 15 s of closing its stdin")
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			t.Logf("gateway stderr:\n%s", tail(g.stderr.String(), 8000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("client start: %v", err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "e2e", Version: "0"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("initialize: %v\ngateway stderr:\n%s", err, tail(g.stderr.String(), 4000))
	}
	g.addr = g.waitListening(t)
	lt, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	g.tools, g.schemas = toolSchemas(t, lt.Tools)
	return g
}

// toolSchemas indexes tools by name with their resolved output schemas, for gateway.check;
// a tool without an output schema is an error.
func toolSchemas(t *testing.T, tools []mcp.Tool) (map[string]mcp.Tool, map[string]*jsonschema.Resolved) {
	t.Helper()
	byName := map[string]mcp.Tool{}
	schemas := map[string]*jsonschema.Resolved{}
	for _, tool := range tools {
		byName[tool.Name] = tool
		raw, err := json.Marshal(tool.OutputSchema)
		if err != nil || tool.OutputSchema.Type == "" {
			t.Errorf("tool %s has no output schema", tool.Name)
			continue
		}
		var s jsonschema.Schema
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("tool %s output schema: %v", tool.Name, err)
		}
		rs, err := s.Resolve(nil)
		if err != nil {
			t.Fatalf("tool %s output schema does not resolve: %v", tool.Name, err)
		}
		schemas[tool.Name] = rs
	}
	return byName, schemas
}

// waitListening parses the gateway's JSON log for {"msg":"ssh listening","addr":"host:port"}.
func (g *gateway) waitListening(t *testing.T) string {
	t.Helper()
	var addr string
	ok := waitFor(10*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(g.stderr.String()))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "ssh listening" && line.Addr != "" {
				addr = line.Addr
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf(`gateway never logged {"msg":"ssh listening","addr":…} on stderr:\n%s`, tail(g.stderr.String(), 4000))
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("ssh listening addr %q: %v", addr, err)
	}
	return addr
}

// result is one tool call's outcome.
type result struct {
	IsError    bool
	Structured map[string]any // nil when the result carried none
	Text       string         // the first text content
}

// call runs a tool and checks the §4.1 rules every result obeys: structured content validates
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

// Typed views of the structured outputs (SPEC §4.2).
type gatewayInfo struct {
	Version             string `json:"version"`
	Mode                string `json:"mode"`
	SSHAddr             string `json:"ssh_addr"`
	PublicAddr          string `json:"public_addr"`
	HostKeyFingerprint  string `json:"host_key_fingerprint"`
	UptimeSeconds       *int64 `json:"uptime_seconds"`
	ProvisioningEnabled *bool  `json:"provisioning_enabled"`
}

type edgeStatus struct {
	Name           string            `json:"name"`
	Fingerprint    string            `json:"fingerprint"`
	Connected      bool              `json:"connected"`
	Labels         map[string]string `json:"labels"`
	ReportedLabels map[string]string `json:"reported_labels"`
	RemoteAddr     string            `json:"remote_addr"`
	ConnectedSince string            `json:"connected_since"`
	LastSeen       string            `json:"last_seen"`
	EdgeVersion    string            `json:"edge_version"`
	OS             string            `json:"os"`
	Arch           string            `json:"arch"`
	InFlight       *int              `json:"in_flight"`
}

type statusOut struct {
	Gateway gatewayInfo `json:"gateway"`
	Totals  struct {
		Known     int `json:"known"`
		Connected int `json:"connected"`
	} `json:"totals"`
	Edges      []edgeStatus `json:"edges"`
	NextCursor string       `json:"next_cursor"`
}

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
	b, _ := os.ReadFile(filepath.Join(g.f.stateDir, "audit.jsonl"))
	return string(b)
}

// freePort picks a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// throttleProxy forwards loopback TCP to target, limiting the target→client direction... the
// gateway→edge direction, that is: the edge dials the proxy, the proxy dials the gateway.
type throttleProxy struct {
	l         net.Listener
	target    string
	rate      int64        // bytes per second towards the edge
	toEdge    atomic.Int64 // bytes forwarded towards the edge so far
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     []net.Conn
	closeOnce sync.Once
}

func newThrottleProxy(t *testing.T, target string, rate int64) *throttleProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &throttleProxy{l: l, target: target, rate: rate}
	p.wg.Go(p.serve)
	t.Cleanup(p.close)
	return p
}

func (p *throttleProxy) addr() string { return p.l.Addr().String() }

func (p *throttleProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

func (p *throttleProxy) close() {
	p.closeOnce.Do(func() {
		p.l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}

func (p *throttleProxy) serve() {
	for {
		edge, err := p.l.Accept()
		if err != nil {
			return
		}
		gw, err := net.Dial("tcp", p.target)
		if err != nil {
			edge.Close()
			continue
		}
		p.track(edge)
		p.track(gw)
		p.wg.Go(func() {
			io.Copy(gw, edge)
			gw.Close()
			edge.Close()
		})
		p.wg.Go(func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := gw.Read(buf)
				if n > 0 {
					if _, werr := edge.Write(buf[:n]); werr != nil {
						break
					}
					p.toEdge.Add(int64(n))
					time.Sleep(time.Duration(int64(n) * int64(time.Second) / p.rate))
				}
				if err != nil {
					break
				}
			}
			gw.Close()
			edge.Close()
		})
	}
}

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
