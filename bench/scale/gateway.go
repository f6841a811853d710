package scale

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// GatewayDir is one gateway's keys and state in a directory: host key, authorized_keys,
// STATE_DIR (with audit.jsonl).
type GatewayDir struct {
	Dir            string
	HostKeyFile    string
	AuthorizedKeys string
	StateDir       string
	HostKeyFP      string // SHA256:… of the host key, the edges' pin
}

// NewGatewayDir creates the host key and an authorized_keys file holding authorized.
func NewGatewayDir(dir string, authorized []byte) (*GatewayDir, error) {
	d := &GatewayDir{
		Dir:            dir,
		HostKeyFile:    filepath.Join(dir, "keys", "host_ed25519"),
		AuthorizedKeys: filepath.Join(dir, "keys", "authorized_keys"),
		StateDir:       filepath.Join(dir, "state"),
	}
	signer, _, err := keys.LoadOrGenerate(d.HostKeyFile, "edgesim-gateway")
	if err != nil {
		return nil, fmt.Errorf("gateway host key: %w", err)
	}
	d.HostKeyFP = keys.Fingerprint(signer.PublicKey())
	if err := keys.WriteFileAtomic(d.AuthorizedKeys, authorized, 0o600); err != nil {
		return nil, fmt.Errorf("authorized_keys: %w", err)
	}
	return d, nil
}

// Env is the gateway's environment for port on 127.0.0.1 with MCP over stdio; extra
// (NAME=value) comes last and so overrides.
func (d *GatewayDir) Env(port int, extra ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + d.Dir,
		"SSH_BIND=127.0.0.1",
		"SSH_PORT=" + strconv.Itoa(port),
		"KEYS_DIR=" + filepath.Dir(d.HostKeyFile),
		"HOST_KEY_FILE=" + d.HostKeyFile,
		"AUTHORIZED_KEYS_FILE=" + d.AuthorizedKeys,
		"STATE_DIR=" + d.StateDir,
		// Every simulated edge dials from 127.0.0.1: one "NAT address" for the whole fleet.
		"SSH_PER_SOURCE_MAX_STARTUPS=16384",
		"MCP_TRANSPORT=stdio",
		"LOG_LEVEL=warn",
		"LOG_FORMAT=json",
	}
	return append(env, extra...)
}

// Gateway is a running mcp-ssh-gateway binary with an initialized MCP client on its stdio.
type Gateway struct {
	c      *client.Client
	cmd    *exec.Cmd
	stderr *tailBuffer
}

// StartGateway runs bin with env and initializes an MCP session over its stdio.
func StartGateway(ctx context.Context, bin string, env []string) (*Gateway, error) {
	g := &Gateway{stderr: &tailBuffer{max: 64 << 10}}
	c, err := client.NewStdioMCPClientWithOptions(bin, nil, nil, transport.WithCommandFunc(
		func(ctx context.Context, command string, _ []string, args []string) (*exec.Cmd, error) {
			cmd := exec.Command(command, args...)
			cmd.Env = env
			cmd.Stderr = g.stderr
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			g.cmd = cmd
			return cmd, nil
		}))
	if err != nil {
		return nil, fmt.Errorf("start gateway %s: %w", bin, err)
	}
	g.c = c
	if err := c.Start(ctx); err != nil {
		g.Kill()
		return nil, fmt.Errorf("start MCP client: %w", err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ClientInfo = mcp.Implementation{Name: "edgesim", Version: "0"}
	if _, err := c.Initialize(ctx, init); err != nil {
		g.Kill()
		return nil, fmt.Errorf("initialize: %w; gateway stderr: %s", err, g.Stderr())
	}
	return g, nil
}

// Client is the MCP client driving the gateway.
func (g *Gateway) Client() *client.Client { return g.c }

// PID is the gateway process id.
func (g *Gateway) PID() int { return g.cmd.Process.Pid }

// Stderr is the end of what the gateway logged.
func (g *Gateway) Stderr() string { return g.stderr.String() }

// Call runs one tool.
func (g *Gateway) Call(ctx context.Context, name string, args map[string]any) (*mcp.CallToolResult, error) {
	req := mcp.CallToolRequest{}
	req.Params.Name = name
	req.Params.Arguments = args
	return g.c.CallTool(ctx, req)
}

// Kill sends SIGKILL to the gateway's process group and reaps it.
func (g *Gateway) Kill() {
	if g.cmd != nil && g.cmd.Process != nil {
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	}
	if g.c != nil {
		done := make(chan struct{})
		go func() { g.c.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	}
}

// Close ends the gateway the normal way (stdin closed), killing it after 15 s.
func (g *Gateway) Close() {
	done := make(chan struct{})
	go func() { g.c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		g.Kill()
	}
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RSS is the resident memory of process pid in bytes (/proc/PID/status VmRSS).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var kb int64
		if n, _ := fmt.Sscanf(sc.Text(), "VmRSS: %d kB", &kb); n == 1 {
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS line in /proc/PID/status")
}

// Threads is the number of OS threads of process pid.
func Threads(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var n int
		if c, _ := fmt.Sscanf(sc.Text(), "Threads: %d", &n); c == 1 {
			return n
		}
	}
	return 0
}

// OpenFDs counts the open descriptors of process pid (0: this process) in /proc.
func OpenFDs(pid int) (int, error) {
	dir := "/proc/self/fd"
	if pid > 0 {
		dir = fmt.Sprintf("/proc/%d/fd", pid)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("count descriptors: %w", err)
	}
	return len(ents), nil
}

// RaiseFDLimit raises this process's soft descriptor limit to its hard limit and returns it.
func RaiseFDLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return r.Cur, nil
}

// tailBuffer keeps the last max bytes written; safe for concurrent use.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

var _ io.Writer = (*tailBuffer)(nil)

// ConnectedEdges asks get_status how many edges are connected right now.
func ConnectedEdges(ctx context.Context, g *Gateway) (int, error) {
	res, err := g.Call(ctx, "get_status", map[string]any{"limit": 1, "connected_only": true})
	if err != nil {
		return 0, fmt.Errorf("get_status: %w", err)
	}
	if res.IsError {
		return 0, fmt.Errorf("get_status: %s", resultText(res))
	}
	var out struct {
		Totals struct {
			Connected int `json:"connected"`
		} `json:"totals"`
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return 0, fmt.Errorf("get_status: %w", err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return 0, fmt.Errorf("get_status: %w", err)
	}
	return out.Totals.Connected, nil
}

// resultText is the first text content of a tool result.
func resultText(r *mcp.CallToolResult) string {
	for _, c := range r.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			return tc.Text
		}
	}
	return ""
}
