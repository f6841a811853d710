// Command mcp-ssh-gateway is the control side of mcp-ssh-gateway: an SSH server that edge
// devices dial into, and an MCP server (stdio or streamable HTTP) whose tools reach those edges
// through typed RPCs. Settings come from the environment; see --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/approval"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/cluster"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/forward"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/metrics"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/policy"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// minTokenLen is the PROVISION_TOKEN and MCP_HTTP_TOKEN length below which the gateway warns at start.
const minTokenLen = 16

// shortToken reports whether a set token is too short to resist guessing.
func shortToken(tok string) bool { return tok != "" && len(tok) < minTokenLen }

// shutdownGrace bounds how long in-flight calls may run after SIGTERM.
const shutdownGrace = 20 * time.Second

const usage = `mcp-ssh-gateway: an SSH gateway for edge devices, exposed as an MCP server.

Usage:
  mcp-ssh-gateway              run the gateway (settings from the environment)
  mcp-ssh-gateway --version    print the version
  mcp-ssh-gateway healthcheck  exit 0 if the local gateway answers GET /healthz (MCP_TRANSPORT=http)
  mcp-ssh-gateway --help       print this help

Edges dial in over SSH (SSH_BIND:SSH_PORT, default 0.0.0.0:2222) and are admitted when their
key is in AUTHORIZED_KEYS_FILE. MCP clients talk to the gateway over stdio (MCP_TRANSPORT=stdio,
the default) or streamable HTTP at /mcp (MCP_TRANSPORT=http, MCP_HTTP_ADDR, MCP_HTTP_TOKEN), which also serves
/healthz (no token) and Prometheus metrics at /metrics (METRICS_TOKEN, else MCP_HTTP_TOKEN).

Main settings: GATEWAY_MODE SSH_BIND SSH_PORT PUBLIC_ADDR KEYS_DIR HOST_KEY_FILE
AUTHORIZED_KEYS_FILE FORWARD_EDGES_FILE CLIENT_KEY_FILE PROVISION_TOKEN POLICY_FILE STATE_DIR AUDIT_LOG FILES_DIR MCP_TRANSPORT
MCP_HTTP_ADDR MCP_HTTP_TOKEN MCP_HTTP_TLS_CERT MCP_HTTP_TLS_KEY METRICS_TOKEN KEEPALIVE_INTERVAL
EXEC_TIMEOUT EXEC_TIMEOUT_MAX MAX_OUTPUT_BYTES MAX_UPLOAD_BYTES MAX_TRANSFER_BYTES AUDIT_LOG_MAX_BYTES
INVENTORY_INTERVAL SSH_MAX_STARTUPS SSH_PER_SOURCE_MAX_STARTUPS LOG_LEVEL LOG_FORMAT. Logs go to stderr; stdout is the MCP stdio channel.

Several gateways share one fleet through NATS with JetStream: CLUSTER_NATS_URL (empty: this
gateway alone), CLUSTER_NATS_CREDS (a NATS credentials file), GATEWAY_ID (unique; default the
host name). They share one HOST_KEY_FILE; keys, names and routes are shared through NATS.
`

func main() {
	os.Exit(run(os.Args[1:], pollableStdin(), os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "--version", "-version", "version":
			fmt.Fprintln(stdout, "mcp-ssh-gateway", version)
			return 0
		case "--help", "-help", "-h", "help":
			fmt.Fprint(stdout, usage+"\n"+adminUsage)
			return 0
		case "healthcheck":
			return healthcheck(os.Getenv, stderr)
		default:
			if isAdminCommand(args) {
				return runAdmin(args, stdin, stdout, stderr)
			}
			fmt.Fprintf(stderr, "mcp-ssh-gateway: unknown argument %q (see --help)\n", args[0])
			return 2
		}
	}
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-gateway: %v\n", err)
		return 2
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	if shortToken(cfg.ProvisionToken) {
		log.Warn("PROVISION_TOKEN is short: use at least 16 random characters (e.g. `openssl rand -hex 16`)", "length", len(cfg.ProvisionToken))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if gcTunerOn(os.Getenv) {
		go tuneGC(ctx, gcTuneEvery)
	}
	if err := serve(ctx, cfg, log, stdin, stdout); err != nil {
		log.Error("gateway stopped", "err", err)
		fmt.Fprintf(stderr, "mcp-ssh-gateway: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(level, format string, w io.Writer) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(strings.ToUpper(level)))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the gateway until the MCP transport ends (stdin closed) or a signal arrives.
// Nothing is served until every setting, key and file has been checked: a bad start stops
// before any listener opens.
func serve(ctx context.Context, cfg *config, log *slog.Logger, stdin io.Reader, stdout io.Writer) error {
	release, err := gateway.LockState(cfg.StateDir)
	if err != nil {
		return err
	}
	defer release()
	if err := os.MkdirAll(cfg.KeysDir, 0o700); err != nil {
		return fmt.Errorf("KEYS_DIR: %w", err)
	}
	hostKey, generated, err := keys.LoadOrGenerate(cfg.HostKeyFile, "mcp-ssh-gateway host key")
	if err != nil {
		return fmt.Errorf("HOST_KEY_FILE: %w", err)
	}
	fp := keys.Fingerprint(hostKey.PublicKey())
	if generated {
		log.Info("generated a new host key", "file", cfg.HostKeyFile, "fingerprint", fp)
	}
	auditLog, err := audit.OpenSize(cfg.AuditLog, cfg.AuditMaxBytes, log)
	if err != nil {
		return fmt.Errorf("AUDIT_LOG: %w", err)
	}
	defer auditLog.Close()

	mtr := metrics.New()
	gw, err := gateway.New(gateway.Config{
		HostKey:              hostKey,
		ID:                   cfg.GatewayID,
		Bind:                 cfg.sshAddr(),
		PublicAddr:           cfg.PublicAddr,
		KeepaliveInterval:    cfg.KeepaliveInterval,
		AuthorizedKeysFile:   cfg.AuthorizedKeys,
		Version:              version,
		Mode:                 cfg.Mode,
		ProvisioningEnabled:  cfg.ProvisionToken != "",
		StateDir:             cfg.StateDir,
		Audit:                auditLog,
		Log:                  log,
		Metrics:              mtr,
		InventoryInterval:    cfg.InventoryInterval,
		MaxStartups:          cfg.startups,
		PerSourceMaxStartups: cfg.PerSourceStartups,
	})
	if err != nil {
		return fmt.Errorf("AUTHORIZED_KEYS_FILE: %w", err)
	}
	mtr.Observe(gw, auditLog)
	sshCtx, stopSSH := context.WithCancel(context.Background())
	defer stopSSH()
	if cfg.Mode != "forward" {
		addr, err := gw.Listen()
		if err != nil {
			return fmt.Errorf("SSH_BIND/SSH_PORT: %w", err)
		}
		gw.SetPublicAddr(cfg.publicAddr(addr))
		log.Info("gateway started", "version", version, "ssh_addr", addr.String(), "public_addr", gw.Info().PublicAddr,
			"host_key_fingerprint", fp, "transport", cfg.Transport)
		sshDone := make(chan error, 1)
		go func() { sshDone <- gw.Serve(sshCtx) }()
		defer func() {
			stopSSH()
			<-sshDone
		}()
	}
	var fleet tools.Fleet = gw
	var clientPub string
	if cfg.Mode != "reverse" {
		fwd, pub, err := openForward(cfg, auditLog, log)
		if err != nil {
			return err
		}
		gw.SetAgentlessServer(fwd.ServeAgentless) // agentless reverse tunnels (GATEWAY_MODE=both)
		fwdDone := make(chan struct{})
		go func() { defer close(fwdDone); fwd.Run(sshCtx) }()
		defer func() {
			stopSSH()
			<-fwdDone
		}()
		fleet, clientPub = &forward.Merged{Gateway: gw, Forward: fwd}, pub
		log.Info("forward edges", "file", cfg.ForwardEdgesFile, "mode", cfg.Mode, "client_key", cfg.ClientKeyFile)
	}

	if cfg.ClusterNATSURL != "" {
		node, err := cluster.Start(sshCtx, cluster.Config{URL: cfg.ClusterNATSURL, Creds: cfg.ClusterNATSCreds,
			ID: cfg.GatewayID, Interval: cfg.KeepaliveInterval, Gateway: gw, Audit: auditLog, Log: log})
		if err != nil {
			return err
		}
		defer node.Close()
		cf := &cluster.Fleet{Gateway: gw, Local: fleet, Node: node}
		mtr.ObserveCluster(cf)
		fleet = cf
		log.Info("cluster", "nats_url", cfg.ClusterNATSURL, "gateway_id", cfg.GatewayID)
	}

	approvals, err := approval.Open(cfg.StateDir, log)
	if err != nil {
		return fmt.Errorf("STATE_DIR: %w", err)
	}
	defer approvals.Close()
	// The policy is loaded once the tools exist (it is checked against their names); the
	// tools read it through this variable, which is set before anything is served.
	var guard *policy.Watcher
	access := tools.Access{HTTPToken: cfg.HTTPToken, Approvals: approvals}
	if cfg.PolicyFile != "" {
		access.Policy = func() *policy.Policy { return guard.Current() }
	}
	mcpSrv := tools.NewServer(fleet, tools.Config{
		Version:          version,
		GatewayID:        cfg.GatewayID,
		ExecTimeout:      cfg.ExecTimeout,
		ExecTimeoutMax:   cfg.ExecTimeoutMax,
		MaxOutputBytes:   cfg.MaxOutputBytes,
		MaxUploadBytes:   cfg.MaxUploadBytes,
		FilesDir:         cfg.FilesDir,
		MaxTransferBytes: cfg.MaxTransferBytes,
		ProvisionToken:   cfg.ProvisionToken,
		Actor:            "stdio",
		Audit:            auditLog,
		Log:              log,
		Access:           access,
		ClientPublicKey:  clientPub,
	})
	if cfg.PolicyFile != "" {
		if guard, err = openPolicy(cfg, mcpSrv, auditLog, log); err != nil {
			return err
		}
		go guard.Run(sshCtx)
	}
	go tools.WatchResources(sshCtx, mcpSrv, fleet) // MCP resources follow edges coming and going

	// Calls keep running on their own context for shutdownGrace after a signal; stdin closing
	// ends the stdio session at once (the client is gone, nobody reads the results).
	callCtx, cancelCalls := context.WithCancel(context.Background())
	defer cancelCalls()
	go func() {
		<-ctx.Done()
		t := time.NewTimer(shutdownGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-drained(gw):
		}
		cancelCalls()
	}()

	switch cfg.Transport {
	case "http":
		err = serveHTTP(ctx, callCtx, cfg, mcpSrv, access, mtr.Handler(), log)
	default:
		err = tools.ServeStdio(callCtx, mcpSrv, stdin, stdout)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("gateway stopping: closing tunnels")
	return nil
}

// openForward loads (or generates) the client key and FORWARD_EDGES_FILE; the gateway logs in
// to those hosts with that key, pinning each one's host key. Connections, disconnections and
// refused host keys are audited.
func openForward(cfg *config, auditLog *audit.Logger, log *slog.Logger) (*forward.Fleet, string, error) {
	key, generated, err := keys.LoadOrGenerate(cfg.ClientKeyFile, "mcp-ssh-gateway client key")
	if err != nil {
		return nil, "", fmt.Errorf("CLIENT_KEY_FILE: %w", err)
	}
	pub := forward.ClientPublicKey(key)
	if generated {
		log.Info("generated a new client key: add it to the forward edges' authorized_keys", "file", cfg.ClientKeyFile, "public_key", pub)
	}
	events := map[forward.EventKind]string{forward.EventHostKeyMismatch: "host_key_refused",
		forward.EventConnected: "edge_connect", forward.EventDisconnected: "edge_disconnect"}
	fwd, err := forward.New(cfg.ForwardEdgesFile, forward.Options{ClientKey: key, Log: log, OnEvent: func(e forward.Event) {
		if name, ok := events[e.Kind]; ok {
			ev := audit.Event{Event: name, Edge: e.Edge, Fingerprint: e.Fingerprint, RemoteAddr: e.Address, Outcome: "ok"}
			if e.Err != nil {
				ev.Outcome, ev.Error = "refused", e.Err.Error()
			}
			auditLog.Write(ev)
		}
	}})
	if err != nil {
		return nil, "", fmt.Errorf("FORWARD_EDGES_FILE: %w", err)
	}
	return fwd, pub, nil
}

// openPolicy loads POLICY_FILE (a broken file stops the start) and watches it: a change takes
// effect at once without touching a tunnel, and a broken one keeps the last good policy; both
// are logged and audited, and clients are told that their list of tools may have changed.
func openPolicy(cfg *config, srv *server.MCPServer, auditLog *audit.Logger, log *slog.Logger) (*policy.Watcher, error) {
	names := slices.Sorted(maps.Keys(srv.ListTools()))
	onReload := func(p *policy.Policy, err error) {
		if err != nil {
			log.Error("policy file rejected: the last good policy stays in force", "file", cfg.PolicyFile, "err", err)
			auditLog.Write(audit.Event{Event: "policy_rejected", Path: cfg.PolicyFile, Outcome: "error", Error: err.Error()})
			return
		}
		log.Info("policy reloaded", "file", cfg.PolicyFile, "roles", len(p.Roles()), "http_clients", p.HTTPClientCount())
		auditLog.Write(audit.Event{Event: "policy_reloaded", Path: cfg.PolicyFile, Outcome: "ok"})
		srv.SendNotificationToAllClients(mcp.MethodNotificationToolsListChanged, nil)
	}
	w, err := policy.NewWatcher(cfg.PolicyFile, log, onReload, policy.WithKnownTools(names...))
	if err != nil {
		return nil, fmt.Errorf("POLICY_FILE: %w", err)
	}
	p := w.Current()
	if cfg.Transport == "http" && cfg.HTTPToken == "" && p.HTTPClientCount() == 0 {
		return nil, errors.New("POLICY_FILE names no HTTP client and MCP_HTTP_TOKEN is empty: no client could reach the gateway over HTTP")
	}
	log.Info("policy loaded", "file", cfg.PolicyFile, "roles", len(p.Roles()), "http_clients", p.HTTPClientCount(), "stdio_role", p.StdioRole())
	return w, nil
}

// drained is closed once no RPC is in flight on any edge (polled: shutdown only).
func drained(gw *gateway.Gateway) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		for range int(shutdownGrace / (100 * time.Millisecond)) {
			busy := 0
			for _, e := range gw.Edges(true) {
				busy += e.InFlight
			}
			if busy == 0 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return ch
}
