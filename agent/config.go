package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// config is every gateway setting (the README's Settings), read once from the environment in main.
type config struct {
	Mode              string        `envconfig:"GATEWAY_MODE" default:"reverse"`
	SSHBind           string        `envconfig:"SSH_BIND" default:"0.0.0.0"`
	SSHPort           int           `envconfig:"SSH_PORT" default:"2222"`
	PublicAddr        string        `envconfig:"PUBLIC_ADDR"`
	KeysDir           string        `envconfig:"KEYS_DIR"`
	HostKeyFile       string        `envconfig:"HOST_KEY_FILE"`
	AuthorizedKeys    string        `envconfig:"AUTHORIZED_KEYS_FILE"`
	ProvisionToken    string        `envconfig:"PROVISION_TOKEN"`
	PolicyFile        string        `envconfig:"POLICY_FILE"`
	ForwardEdgesFile  string        `envconfig:"FORWARD_EDGES_FILE"`
	ClientKeyFile     string        `envconfig:"CLIENT_KEY_FILE"`
	MaxStartups       string        `envconfig:"SSH_MAX_STARTUPS" default:"12288:30:16384"`
	PerSourceStartups int           `envconfig:"SSH_PER_SOURCE_MAX_STARTUPS" default:"32"`
	StateDir          string        `envconfig:"STATE_DIR"`
	AuditLog          string        `envconfig:"AUDIT_LOG"`
	AuditMaxBytes     int64         `envconfig:"AUDIT_LOG_MAX_BYTES" default:"104857600"`
	FilesDir          string        `envconfig:"FILES_DIR"`
	Transport         string        `envconfig:"MCP_TRANSPORT" default:"stdio"`
	HTTPAddr          string        `envconfig:"MCP_HTTP_ADDR" default:":3333"`
	HTTPToken         string        `envconfig:"MCP_HTTP_TOKEN"`
	HTTPTLSCert       string        `envconfig:"MCP_HTTP_TLS_CERT"`
	HTTPTLSKey        string        `envconfig:"MCP_HTTP_TLS_KEY"`
	MetricsToken      string        `envconfig:"METRICS_TOKEN"`
	KeepaliveInterval time.Duration `envconfig:"KEEPALIVE_INTERVAL" default:"15s"`
	ExecTimeout       time.Duration `envconfig:"EXEC_TIMEOUT" default:"30s"`
	ExecTimeoutMax    time.Duration `envconfig:"EXEC_TIMEOUT_MAX" default:"1h"`
	MaxOutputBytes    int64         `envconfig:"MAX_OUTPUT_BYTES" default:"1048576"`
	MaxUploadBytes    int64         `envconfig:"MAX_UPLOAD_BYTES" default:"67108864"`
	MaxTransferBytes  int64         `envconfig:"MAX_TRANSFER_BYTES" default:"17179869184"`
	InventoryInterval time.Duration `envconfig:"INVENTORY_INTERVAL" default:"2m"`
	LogLevel          string        `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat         string        `envconfig:"LOG_FORMAT" default:"text"`
	ClusterNATSURL    string        `envconfig:"CLUSTER_NATS_URL"`
	ClusterNATSCreds  string        `envconfig:"CLUSTER_NATS_CREDS"`
	GatewayID         string        `envconfig:"GATEWAY_ID"`

	tlsCert *certFile // loaded from HTTPTLSCert/HTTPTLSKey by complete; nil without TLS

	startups gateway.StartupLimits // SSH_MAX_STARTUPS, parsed
}

// parseStartups checks SSH_MAX_STARTUPS (start:rate:full, as OpenSSH's MaxStartups) and
// SSH_PER_SOURCE_MAX_STARTUPS.
func (c *config) parseStartups() error {
	var l gateway.StartupLimits
	if n, err := fmt.Sscanf(c.MaxStartups, "%d:%d:%d", &l.Start, &l.Rate, &l.Full); err != nil || n != 3 ||
		l.Start < 1 || l.Rate < 1 || l.Rate > 100 || l.Full < l.Start || strings.Count(c.MaxStartups, ":") != 2 {
		return fmt.Errorf("SSH_MAX_STARTUPS=%q is not start:rate:full (connections before random drop begins, drop percent 1-100, connections at which all are dropped), e.g. 12288:30:16384", c.MaxStartups)
	}
	c.startups = l
	if c.PerSourceStartups < 1 {
		return fmt.Errorf("SSH_PER_SOURCE_MAX_STARTUPS=%d must be at least 1 (unauthenticated connections at once from one address; raise it for many edges behind one NAT address)", c.PerSourceStartups)
	}
	return nil
}

// validGatewayID reports whether id can name a gateway: it is part of NATS subjects.
func validGatewayID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// typeWords says what a setting of a Go type must look like, with an example.
func typeWords(goType string) string {
	switch goType {
	case "time.Duration":
		return "a duration: a number with a unit, e.g. 30s, 5m or 1h"
	case "int", "int64":
		return "a whole number, e.g. 2222"
	case "bool":
		return "true or false"
	}
	return "a valid " + goType
}

// loadConfig reads and validates the environment. Every error names the variable at fault.
func loadConfig() (*config, error) {
	var c config
	if err := envconfig.Process("", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s=%q is not %s", pe.KeyName, pe.Value, typeWords(pe.TypeName))
		}
		return nil, err
	}
	return &c, c.complete()
}

// complete fills the defaults that depend on other settings or on who runs the gateway, and
// checks ranges.
func (c *config) complete() error {
	if err := c.parseStartups(); err != nil {
		return err
	}
	switch c.Mode {
	case "reverse", "forward", "both":
	default:
		return fmt.Errorf("GATEWAY_MODE=%q is not a mode: reverse (edges dial in), forward (the gateway dials the hosts in FORWARD_EDGES_FILE) or both", c.Mode)
	}
	if c.SSHPort < 0 || c.SSHPort > 65535 {
		return fmt.Errorf("SSH_PORT=%d is out of range (0-65535; 0 picks a free port)", c.SSHPort)
	}
	if net.ParseIP(c.SSHBind) == nil && c.SSHBind != "localhost" {
		return fmt.Errorf("SSH_BIND=%q is not an IP address", c.SSHBind)
	}
	if c.PublicAddr != "" {
		if _, _, err := net.SplitHostPort(c.PublicAddr); err != nil {
			return fmt.Errorf("PUBLIC_ADDR=%q is not host:port", c.PublicAddr)
		}
	}
	if c.InventoryInterval < time.Second {
		return fmt.Errorf("INVENTORY_INTERVAL=%v is too short (at least 1s; each pull is one RPC per edge)", c.InventoryInterval)
	}
	switch c.Transport {
	case "stdio":
	case "http":
		if c.HTTPToken == "" && c.PolicyFile == "" {
			return errors.New("MCP_HTTP_TOKEN is empty: the gateway refuses to serve MCP over HTTP without a bearer token (set it, or name clients with tokens in a POLICY_FILE)")
		}
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return fmt.Errorf("MCP_HTTP_ADDR=%q is not [host]:port", c.HTTPAddr)
		}
		if (c.HTTPTLSCert == "") != (c.HTTPTLSKey == "") {
			return errors.New("MCP_HTTP_TLS_CERT and MCP_HTTP_TLS_KEY must be set together (or neither, for plain HTTP)")
		}
		if c.HTTPTLSCert != "" {
			cert, err := loadCertFile(c.HTTPTLSCert, c.HTTPTLSKey)
			if err != nil {
				return err
			}
			c.tlsCert = cert
		}
	default:
		return fmt.Errorf("MCP_TRANSPORT=%q is not supported: use stdio or http", c.Transport)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"KEEPALIVE_INTERVAL", c.KeepaliveInterval}, {"EXEC_TIMEOUT", c.ExecTimeout}, {"EXEC_TIMEOUT_MAX", c.ExecTimeoutMax}} {
		if d.v <= 0 {
			return fmt.Errorf("%s=%s must be positive", d.name, d.v)
		}
	}
	if c.ExecTimeout > c.ExecTimeoutMax {
		return fmt.Errorf("EXEC_TIMEOUT=%s is above EXEC_TIMEOUT_MAX=%s", c.ExecTimeout, c.ExecTimeoutMax)
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"MAX_OUTPUT_BYTES", c.MaxOutputBytes}, {"MAX_UPLOAD_BYTES", c.MaxUploadBytes}, {"MAX_TRANSFER_BYTES", c.MaxTransferBytes}, {"AUDIT_LOG_MAX_BYTES", c.AuditMaxBytes}} {
		if n.v <= 0 {
			return fmt.Errorf("%s=%d must be positive", n.name, n.v)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("LOG_LEVEL=%q is not one of debug, info, warn, error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("LOG_FORMAT=%q is not text or json", c.LogFormat)
	}

	if c.GatewayID == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			host = "gateway"
		}
		c.GatewayID = host
	}
	if !validGatewayID(c.GatewayID) {
		return fmt.Errorf("GATEWAY_ID=%q is not 1-64 of a-z A-Z 0-9 _ - (it names this gateway in NATS subjects and in get_status)", c.GatewayID)
	}
	if c.ClusterNATSCreds != "" && c.ClusterNATSURL == "" {
		return errors.New("CLUSTER_NATS_CREDS is set but CLUSTER_NATS_URL is empty: set the NATS server's URL to join a cluster")
	}
	if c.ClusterNATSURL != "" && c.Mode == "forward" {
		return errors.New("CLUSTER_NATS_URL needs GATEWAY_MODE reverse or both: a cluster shares the edges that dial in")
	}

	root := os.Geteuid() == 0
	if c.KeysDir == "" {
		c.KeysDir = userDir(root, "/keys", "XDG_CONFIG_HOME", ".config")
	}
	if c.StateDir == "" {
		c.StateDir = userDir(root, "/var/lib/mcp-ssh-gateway", "XDG_STATE_HOME", ".local/state")
	}
	if c.HostKeyFile == "" {
		c.HostKeyFile = filepath.Join(c.KeysDir, "host_ed25519")
		if rsa := filepath.Join(c.KeysDir, "host_rsa"); fileExists(rsa) {
			c.HostKeyFile = rsa
		}
	}
	if c.AuthorizedKeys == "" {
		c.AuthorizedKeys = filepath.Join(c.KeysDir, "authorized_keys")
	}
	if c.ForwardEdgesFile == "" {
		c.ForwardEdgesFile = filepath.Join(c.KeysDir, "forward_edges.yaml")
	}
	if c.ClientKeyFile == "" {
		c.ClientKeyFile = filepath.Join(c.KeysDir, "client_ed25519")
	}
	if c.AuditLog == "" {
		c.AuditLog = filepath.Join(c.StateDir, "audit.jsonl")
	}
	if c.FilesDir == "" {
		c.FilesDir = filepath.Join(c.StateDir, "files")
	}
	return nil
}

// userDir is rootPath for root, else $XDG_VAR/mcp-ssh-gateway or ~/fallback/mcp-ssh-gateway.
func userDir(root bool, rootPath, xdgVar, fallback string) string {
	if root {
		return rootPath
	}
	if x := os.Getenv(xdgVar); x != "" {
		return filepath.Join(x, "mcp-ssh-gateway")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "."
	}
	return filepath.Join(home, fallback, "mcp-ssh-gateway")
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// publicAddr is PUBLIC_ADDR, or the address edges can dial derived from where SSH listens.
func (c *config) publicAddr(listen net.Addr) string {
	if c.PublicAddr != "" {
		return c.PublicAddr
	}
	host, port, _ := net.SplitHostPort(listen.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

func (c *config) sshAddr() string {
	return net.JoinHostPort(c.SSHBind, strconv.Itoa(c.SSHPort))
}
