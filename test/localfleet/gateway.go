package localfleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	"github.com/mark3labs/mcp-go/mcp"
)

const (
	// CallTimeout bounds one tool call made through Gateway; the gateway's own run_command
	// default is 30 s.
	CallTimeout = 45 * time.Second
	// ConnectWait bounds how long WaitForEdge waits for an edge to dial in.
	ConnectWait = 20 * time.Second
	// CloseWait bounds how long Close waits for a gateway to exit once its stdin is closed.
	CloseWait = 15 * time.Second
	// pollEvery is WaitForEdge's get_status period.
	pollEvery = 250 * time.Millisecond
)

// ErrStillRunning is Close's error for a gateway that had to be killed: it was still running
// CloseWait after its stdin closed (or, over HTTP, after SIGTERM).
var ErrStillRunning = errors.New("gateway still running 15 s after Close, killed")

// Gateway is a running mcp-ssh-gateway and, once connected, the MCP client that drives it.
// One Gateway serves many calls: a call costs one JSON-RPC round trip.
type Gateway struct {
	*Proc
	http   bool     // MCP_TRANSPORT=http: the gateway ignores its stdin
	stdin  *os.File // the gateway's stdin, where a stdio session's requests go
	stdout *os.File // the gateway's stdout, where a stdio session's answers come from

	c       *client.Client
	ownsC   bool // c runs over stdin and stdout and is closed with the gateway
	sshAddr string
	tools   []mcp.Tool

	closeOnce sync.Once
	closeErr  error
}

// GatewayEnv is the gateway's whole environment for the fleet l: BaseEnv, loopback only on a
// port the kernel picks (SSH_PORT=0), the fleet's keys and state, MCP over stdio, warnings and
// up logged; then extraEnv (`NAME=value`), which overrides. README.md (Settings) lists the
// variables.
func GatewayEnv(l *Layout, extraEnv ...string) []string {
	env := append(BaseEnv(l.Dir),
		"SSH_BIND=127.0.0.1",
		"SSH_PORT=0",
		"KEYS_DIR="+l.KeysDir,
		"HOST_KEY_FILE="+l.HostKeyFile,
		"AUTHORIZED_KEYS_FILE="+l.AuthorizedKeys,
		"STATE_DIR="+l.StateDir,
		"MCP_TRANSPORT=stdio",
		"LOG_LEVEL=warn",
	)
	return append(env, extraEnv...)
}

// SpawnGateway starts bin with GatewayEnv(l, extraEnv...) and speaks no MCP to it yet: Connect
// does. It is for a gateway that is expected to refuse to start, or that serves MCP over HTTP;
// StartGateway is the usual way. The caller must Close it.
func SpawnGateway(l *Layout, bin string, extraEnv ...string) (*Gateway, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	env := GatewayEnv(l, extraEnv...)
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout = inR, outW
	p, err := StartProc(cmd, l.Log)
	inR.Close() // the child's ends
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, err
	}
	g := &Gateway{Proc: p, http: lastValue(env, "MCP_TRANSPORT") == "http", stdin: inW, stdout: outR}
	l.logger.Info("started gateway", "pid", p.PID())
	return g, nil
}

// StartGateway starts bin as an MCP stdio server for the fleet l and connects to it (see
// Connect). extraEnv (`NAME=value`, e.g. MAX_UPLOAD_BYTES) overrides GatewayEnv. The caller
// must Close it.
func StartGateway(ctx context.Context, l *Layout, bin string, extraEnv ...string) (*Gateway, error) {
	g, err := SpawnGateway(l, bin, extraEnv...)
	if err != nil {
		return nil, err
	}
	if err := g.Connect(ctx, nil); err != nil {
		_ = g.Close()
		return nil, err
	}
	l.logger.Info("gateway ready", "ssh_addr", g.SSHAddr())
	return g, nil
}

// Initialize runs the MCP initialize handshake on the started client c.
func Initialize(ctx context.Context, c *client.Client) (*mcp.InitializeResult, error) {
	req := mcp.InitializeRequest{}
	req.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	req.Params.ClientInfo = mcp.Implementation{Name: "mcp-ssh-gateway-localfleet", Version: "0.0.0"}
	return c.Initialize(ctx, req)
}

// Connect makes c the gateway's MCP session: it initializes it, lists the tools and reads the
// gateway's SSH address from get_status (gateway.ssh_addr), which SSHAddr then returns. c must
// be started (Client.Start) and stays the caller's; nil means a new client over the gateway's
// stdio, which Close closes.
func (g *Gateway) Connect(ctx context.Context, c *client.Client) error {
	if c == nil {
		c = client.NewClient(transport.NewIO(g.stdout, g.stdin, nil))
		if err := c.Start(context.Background()); err != nil {
			return fmt.Errorf("MCP client over the gateway's stdio: %w", err)
		}
		g.ownsC = true
	}
	g.c = c
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	if _, err := Initialize(ctx, c); err != nil {
		return fmt.Errorf("MCP initialize: %w; gateway stderr:\n%s", err, lastBytes(g.Stderr(), 4000))
	}
	lt, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		return fmt.Errorf("tools/list: %w", err)
	}
	g.tools = lt.Tools
	st, err := g.Status(ctx, map[string]any{"limit": 1})
	if err != nil {
		return err
	}
	if _, port, err := net.SplitHostPort(st.Gateway.SSHAddr); err != nil || port == "0" {
		return fmt.Errorf("get_status: gateway.ssh_addr %q is not the host:port the gateway listens on", st.Gateway.SSHAddr)
	}
	g.sshAddr = st.Gateway.SSHAddr
	return nil
}

// SSHAddr is the address the gateway listens on for edges (get_status's gateway.ssh_addr),
// once connected.
func (g *Gateway) SSHAddr() string { return g.sshAddr }

// Tools are the tools the gateway listed when it was connected.
func (g *Gateway) Tools() []mcp.Tool { return g.tools }

// Client is the MCP client, once connected, for what Call does not cover (notifications,
// progress, resources, cancellation).
func (g *Gateway) Client() *client.Client { return g.c }

// Close ends the gateway and returns once it has exited. A stdio gateway exits by itself when
// its stdin closes, which Close does (with the client it made); one serving MCP over HTTP gets
// SIGTERM. A gateway still running CloseWait later is killed and Close returns
// ErrStillRunning. Otherwise Close reports how it exited, or nil for status 0 or when it had
// already exited before Close. It may be called more than once.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		wasRunning := g.Running()
		if g.ownsC {
			_ = g.c.Close()
		}
		_ = g.stdin.Close()
		if g.http && wasRunning {
			_ = g.Signal(syscall.SIGTERM)
		}
		select {
		case <-g.Done():
			if wasRunning && g.Err() != nil {
				g.closeErr = fmt.Errorf("gateway exited: %w", g.Err())
			}
		case <-time.After(CloseWait):
			g.closeErr = ErrStillRunning
			if err := g.Kill(); err != nil {
				g.closeErr = fmt.Errorf("%w: %w", ErrStillRunning, err)
			}
		}
		_ = g.stdout.Close()
	})
	return g.closeErr
}

// Call invokes one tool, bounded by CallTimeout, and returns the result as the gateway sent
// it, isError included. The error is only for a failed round trip (JSON-RPC error, transport).
func (g *Gateway) Call(ctx context.Context, tool string, args map[string]any) (*mcp.CallToolResult, error) {
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	req := mcp.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	res, err := g.c.CallTool(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	return res, nil
}

// CallStructured invokes one tool and returns its structured content as JSON. A tool error
// (isError) is returned as a Go error carrying the tool's message.
func (g *Gateway) CallStructured(ctx context.Context, tool string, args map[string]any) (json.RawMessage, error) {
	res, err := g.Call(ctx, tool, args)
	if err != nil {
		return nil, err
	}
	if res.IsError {
		return nil, fmt.Errorf("%s returned an error: %s", tool, ResultText(res))
	}
	switch {
	case len(res.RawStructuredContent) > 0:
		return res.RawStructuredContent, nil
	case res.StructuredContent != nil:
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			return nil, fmt.Errorf("%s: encode structured content: %w", tool, err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("%s returned no structured content: %s", tool, ResultText(res))
	}
}

// ResultText joins the text parts of a tool result, for error messages.
func ResultText(res *mcp.CallToolResult) string {
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

// Status is get_status's structured output (README.md, Tools).
type Status struct {
	Gateway GatewayInfo `json:"gateway"`
	Totals  struct {
		Known     int `json:"known"`
		Connected int `json:"connected"`
	} `json:"totals"`
	Edges      []EdgeStatus `json:"edges"`
	NextCursor string       `json:"next_cursor"`
	// Cluster is the gateway's view of its cluster (SPEC §10); nil from a gateway that does
	// not report one.
	Cluster *ClusterStatus `json:"cluster"`
}

// ClusterStatus is get_status's cluster object.
type ClusterStatus struct {
	Enabled   bool         `json:"enabled"`   // CLUSTER_NATS_URL is set
	Connected bool         `json:"connected"` // the NATS link is up
	Peers     []PeerStatus `json:"peers"`
}

// PeerStatus is one gateway of the cluster as another sees it.
type PeerStatus struct {
	ID       string `json:"id"`        // its GATEWAY_ID
	Edges    int    `json:"edges"`     // edges connected to it
	LastSeen string `json:"last_seen"` // when it was last heard of
}

// GatewayInfo is get_status's gateway object.
type GatewayInfo struct {
	ID                  string `json:"id"` // GATEWAY_ID
	Version             string `json:"version"`
	Mode                string `json:"mode"`
	SSHAddr             string `json:"ssh_addr"`
	PublicAddr          string `json:"public_addr"`
	HostKeyFingerprint  string `json:"host_key_fingerprint"`
	UptimeSeconds       *int64 `json:"uptime_seconds"`
	ProvisioningEnabled *bool  `json:"provisioning_enabled"`
}

// EdgeStatus is one edge of get_status.
type EdgeStatus struct {
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
	Kind           string            `json:"kind"`
	Problem        string            `json:"problem"`
	Gateway        string            `json:"gateway"` // the GATEWAY_ID holding it; "" when not connected
}

// Status calls get_status with args and decodes it.
func (g *Gateway) Status(ctx context.Context, args map[string]any) (Status, error) {
	var st Status
	raw, err := g.CallStructured(ctx, "get_status", args)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("get_status: decode: %w", err)
	}
	return st, nil
}

// WaitForEdge polls get_status until the edge e shows connected, for at most ConnectWait.
// It fails at once if the edge or the gateway exits.
func (g *Gateway) WaitForEdge(ctx context.Context, e *Edge) error {
	ctx, cancel := context.WithTimeout(ctx, ConnectWait)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if err := e.Exited(); err != nil {
			return fmt.Errorf("edge %s: %w", e.Key.Fingerprint, err)
		}
		if err := g.Exited(); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		st, err := g.Status(ctx, map[string]any{"connected_only": true, "limit": 1000})
		if err != nil && ctx.Err() == nil {
			return err
		}
		for _, s := range st.Edges {
			if s.Fingerprint == e.Key.Fingerprint && s.Connected {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("edge %s did not connect within %s; its log:\n%s", e.Key.Fingerprint, ConnectWait, lastBytes(e.Stderr(), 2000))
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// lastValue is the value of the last NAME=… in env, the one a process sees.
func lastValue(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], name+"="); ok {
			return v
		}
	}
	return ""
}

// lastBytes is the end of s, at most n bytes, for error messages.
func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
