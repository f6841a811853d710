// Package e2e starts the real mcp-ssh-gateway and mcp-ssh-edge binaries on loopback and
// drives the gateway through a real MCP client, checking the contract of README.md end to
// end. The fleet is test/localfleet's; this file only binds it to a *testing.T: errors fail
// the test, processes are stopped at cleanup, and a failed test logs what they wrote.
package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
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

// What every gateway and edge of these tests gets on top of localfleet's defaults: 1 s
// keepalives, so that faults resolve in seconds, and JSON logs at debug, which tests read.
func gatewayDefaults() []string {
	return []string{"KEEPALIVE_INTERVAL=1s", "LOG_FORMAT=json", "LOG_LEVEL=debug"}
}

func edgeDefaults() []string {
	return []string{"EDGE_KEEPALIVE_INTERVAL=1s", "LOG_FORMAT=json", "LOG_LEVEL=debug"}
}

// envList is m as NAME=value lines, in a stable order.
func envList(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// fixture is one fleet directory: a gateway's keys and state, and edge keys made on demand.
type fixture struct {
	*localfleet.Layout
}

type (
	edgeKey  = localfleet.EdgeKey
	edgeProc = localfleet.Edge
)

func newFixture(t *testing.T) *fixture {
	t.Helper()
	l, err := localfleet.Prepare(context.Background(), localfleet.Config{Dir: t.TempDir(), EdgeBin: edgeBin})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{l}
}

// newEdgeKey makes an edge key with `mcp-ssh-edge pubkey`, which must write it with mode 0600.
func (f *fixture) newEdgeKey(t *testing.T) edgeKey {
	t.Helper()
	k, err := f.NewEdgeKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(k.KeyFile)
	if err != nil {
		t.Fatalf("mcp-ssh-edge pubkey did not write EDGE_KEY_FILE: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("edge key %s has mode %v, want 0600", k.KeyFile, st.Mode().Perm())
	}
	return k
}

// authorize appends k to authorized_keys, with name= and labels= options when given.
func (f *fixture) authorize(t *testing.T, k edgeKey, name, labels string) {
	t.Helper()
	if err := f.Authorize(k, name, labels); err != nil {
		t.Fatal(err)
	}
}

// gatewayEnv is the gateway's whole environment; extra overrides the defaults.
func (f *fixture) gatewayEnv(extra map[string]string) []string {
	return localfleet.GatewayEnv(f.Layout, append(gatewayDefaults(), envList(extra)...)...)
}

// gateway is a running mcp-ssh-gateway; once connected, c is its MCP client, addr its SSH
// address (from get_status) and schemas the output schemas gateway.check validates against.
type gateway struct {
	*localfleet.Gateway
	c       *client.Client
	addr    string
	tools   map[string]mcp.Tool
	schemas map[string]*jsonschema.Resolved
	f       *fixture
}

// spawnGateway starts the gateway without an MCP session (see localfleet.SpawnGateway); it
// is closed at cleanup.
func (f *fixture) spawnGateway(t *testing.T, extra map[string]string) *gateway {
	t.Helper()
	lg, err := localfleet.SpawnGateway(f.Layout, gatewayBin, append(gatewayDefaults(), envList(extra)...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lg.Close(); errors.Is(err, localfleet.ErrStillRunning) {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("gateway (pid %d) stderr:\n%s", lg.PID(), tail(lg.Stderr(), 8000))
		}
	})
	return &gateway{Gateway: lg, f: f}
}

// startGateway starts the gateway and connects an MCP client over its stdio.
func (f *fixture) startGateway(t *testing.T, extra map[string]string) *gateway {
	t.Helper()
	g := f.spawnGateway(t, extra)
	g.connect(t, nil)
	return g
}

// connect makes c (nil: a client over stdio) the gateway's session and resolves the tools'
// output schemas.
func (g *gateway) connect(t *testing.T, c *client.Client) {
	t.Helper()
	if err := g.Connect(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	g.c, g.addr = g.Client(), g.SSHAddr()
	g.tools, g.schemas = toolSchemas(t, g.Tools())
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

// startEdge runs mcp-ssh-edge with key against addr (the gateway's, or a proxy's); env
// overrides the defaults. It is killed at cleanup.
func (f *fixture) startEdge(t *testing.T, key edgeKey, addr string, env map[string]string) *edgeProc {
	t.Helper()
	e, err := f.StartEdge(addr, key, append(edgeDefaults(), envList(env)...)...)
	if err != nil {
		t.Fatal(err)
	}
	killAtCleanup(t, "edge "+key.Fingerprint, e.Proc)
	return e
}

// startProc starts cmd (see localfleet.StartProc); it is killed at cleanup.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *localfleet.Proc {
	t.Helper()
	p, err := localfleet.StartProc(cmd, nil)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	killAtCleanup(t, name, p)
	return p
}

// killAtCleanup kills p's process group when the test ends, and logs p's stderr if it failed.
func killAtCleanup(t *testing.T, name string, p *localfleet.Proc) {
	t.Cleanup(func() {
		kill(t, p)
		if t.Failed() {
			t.Logf("%s (pid %d) stderr:\n%s", name, p.PID(), tail(p.Stderr(), 6000))
		}
	})
}

// kill sends SIGKILL to p's process group and waits for p.
func kill(t *testing.T, p *localfleet.Proc) {
	if err := p.Kill(); err != nil {
		t.Error(err)
	}
}

// freePort picks a loopback port that was free a moment ago, for a listener of a program
// other than the gateway (see localfleet.FreePort).
func freePort(t *testing.T) int {
	t.Helper()
	port, err := localfleet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// newToxiproxy starts the fault proxy in front of upstream; it is closed at cleanup.
func newToxiproxy(t *testing.T, upstream string) *localfleet.Proxy {
	t.Helper()
	p, err := localfleet.NewProxy(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// addToxic adds a toxic of type typ with attrs to streams of p (both directions if none).
func addToxic(t *testing.T, p *localfleet.Proxy, typ string, attrs map[string]any, streams ...string) {
	t.Helper()
	if err := p.AddToxic(typ, attrs, streams...); err != nil {
		t.Fatal(err)
	}
}

func removeToxic(t *testing.T, p *localfleet.Proxy, typ string, streams ...string) {
	t.Helper()
	if err := p.RemoveToxic(typ, streams...); err != nil {
		t.Fatal(err)
	}
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

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// clientKey makes the key a forward-mode gateway logs in with (CLIENT_KEY_FILE under the
// fixture's KEYS_DIR) and returns its file and signer.
func (f *fixture) clientKey(t *testing.T) (string, ssh.Signer) {
	t.Helper()
	file := filepath.Join(f.KeysDir, "client_ed25519")
	s, _, err := keys.LoadOrGenerate(file, "test client key")
	if err != nil {
		t.Fatal(err)
	}
	return file, s
}

// startSSHD starts Debian's sshd on loopback (localfleet.SSHD) authorizing the given keys,
// stopped at cleanup. Without openssh-server the test is skipped (failed when CI=true).
func startSSHD(t *testing.T, authorized ...ssh.PublicKey) *localfleet.SSHD {
	t.Helper()
	d, err := localfleet.StartSSHD(t.TempDir(), authorized...)
	if errors.Is(err, localfleet.ErrNoSSHD) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}
