// Package localfleet starts a throw-away fleet on loopback: one mcp-ssh-gateway driven over
// MCP stdio by an mcp-go client, and any number of mcp-ssh-edge processes dialling it. It
// generates the keys, enrols the edges in authorized_keys and keeps everything (keys, state,
// uploads) under one directory the caller owns and removes. The demo and the benchmark use it;
// tests can too. It runs the binaries `make build` wrote and builds nothing itself.
//
// A typical run:
//
//	l, _ := localfleet.Prepare(ctx, dir, edgeBin, localfleet.EdgeSpec{Name: "e1"})
//	e, _ := l.StartEdge("e1")
//	defer e.Stop()
//	g, _ := localfleet.StartGateway(ctx, l, gatewayBin)
//	defer g.Close()
//	_ = g.WaitForEdge(ctx, e)
//	res, _ := g.Call(ctx, "run_command", map[string]any{"edge": "e1", "argv": []string{"true"}})
//
// Everything logs through slog.Default(); the child processes log at LOG_LEVEL=warn to this
// process's stderr.
package localfleet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// EdgeSpec describes one edge to enrol in the gateway's authorized_keys.
type EdgeSpec struct {
	// Name is bound to the edge's key in authorized_keys and sent as EDGE_NAME
	// (SPEC §5: ^[a-z0-9][a-z0-9._-]{0,62}$).
	Name string
	// Labels is the `k=v,…` list bound at the gateway (they select edges); may be empty.
	Labels string
	// ReportedLabels is EDGE_LABELS, what the edge says about itself; may be empty.
	ReportedLabels string
}

// EdgeLayout is where one enrolled edge keeps its key and state.
type EdgeLayout struct {
	EdgeSpec
	KeyFile     string // EDGE_KEY_FILE
	StateDir    string // EDGE_STATE_DIR
	Fingerprint string // SHA256:… of the edge's public key
}

// Layout is a prepared fleet: the gateway's keys and state and the enrolled edges, all under
// Dir. It holds no processes; StartEdge and StartGateway start them.
type Layout struct {
	Dir            string // the caller's directory holding everything below
	EdgeBin        string // the mcp-ssh-edge binary StartEdge runs
	KeysDir        string // gateway KEYS_DIR
	HostKeyFile    string // gateway HOST_KEY_FILE
	AuthorizedKeys string // gateway AUTHORIZED_KEYS_FILE
	StateDir       string // gateway STATE_DIR
	UploadDir      string // EDGE_UPLOAD_DIRS of every edge
	SSHPort        int    // gateway SSH_PORT on 127.0.0.1
	HostKeyFP      string // SHA256:… of the gateway host key, pinned by the edges
	Edges          []EdgeLayout
}

// namePattern is SPEC §5's edge name.
var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// labelsPattern keeps labels safe inside a quoted authorized_keys option.
var labelsPattern = regexp.MustCompile(`^[A-Za-z0-9._/:=,-]{0,1000}$`)

// maxEdges bounds one fleet; each edge is a process.
const maxEdges = 64

// Prepare generates the gateway host key and one key per edge (with `mcp-ssh-edge pubkey`),
// enrols the edges in authorized_keys under their names and labels, and picks a free
// loopback port for the gateway. dir must exist; the caller removes it.
func Prepare(ctx context.Context, dir, edgeBin string, edges ...EdgeSpec) (*Layout, error) {
	if len(edges) > maxEdges {
		return nil, fmt.Errorf("%d edges asked, at most %d", len(edges), maxEdges)
	}
	seen := map[string]bool{}
	for _, e := range edges {
		if !namePattern.MatchString(e.Name) {
			return nil, fmt.Errorf("edge name %q: want %s", e.Name, namePattern)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("edge name %q given twice", e.Name)
		}
		seen[e.Name] = true
		for _, lb := range []string{e.Labels, e.ReportedLabels} {
			if !labelsPattern.MatchString(lb) {
				return nil, fmt.Errorf("edge %s: labels %q: want k=v,… of %s", e.Name, lb, labelsPattern)
			}
		}
	}

	l := &Layout{
		Dir:       dir,
		EdgeBin:   edgeBin,
		KeysDir:   filepath.Join(dir, "keys"),
		StateDir:  filepath.Join(dir, "state"),
		UploadDir: filepath.Join(dir, "uploads"),
	}
	l.HostKeyFile = filepath.Join(l.KeysDir, "host_ed25519")
	l.AuthorizedKeys = filepath.Join(l.KeysDir, "authorized_keys")
	for _, d := range []string{l.KeysDir, l.StateDir, l.UploadDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}

	host, _, err := keys.LoadOrGenerate(l.HostKeyFile, "mcp-ssh-gateway localfleet")
	if err != nil {
		return nil, fmt.Errorf("gateway host key: %w", err)
	}
	l.HostKeyFP = keys.Fingerprint(host.PublicKey())
	slog.Info("generated gateway host key", "fingerprint", l.HostKeyFP)

	var authorized strings.Builder
	for _, spec := range edges {
		el := EdgeLayout{
			EdgeSpec: spec,
			KeyFile:  filepath.Join(dir, "edges", spec.Name, "id_ed25519"),
			StateDir: filepath.Join(dir, "edges", spec.Name, "state"),
		}
		if err := os.MkdirAll(el.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", el.StateDir, err)
		}
		pub, err := edgePubkey(ctx, edgeBin, el.KeyFile)
		if err != nil {
			return nil, err
		}
		el.Fingerprint = keys.Fingerprint(pub)
		opts := fmt.Sprintf("name=%q", spec.Name)
		if spec.Labels != "" {
			opts += fmt.Sprintf(",labels=%q", spec.Labels)
		}
		fmt.Fprintf(&authorized, "%s %s\n", opts, keys.AuthorizedLine(pub))
		l.Edges = append(l.Edges, el)
	}
	if err := keys.WriteFileAtomic(l.AuthorizedKeys, []byte(authorized.String()), 0o600); err != nil {
		return nil, fmt.Errorf("authorized_keys: %w", err)
	}
	for _, el := range l.Edges {
		slog.Info("enrolled edge", "name", el.Name, "fingerprint", el.Fingerprint)
	}

	if l.SSHPort, err = FreePort(); err != nil {
		return nil, err
	}
	return l, nil
}

// Edge returns the layout of the enrolled edge called name.
func (l *Layout) Edge(name string) (EdgeLayout, error) {
	for _, e := range l.Edges {
		if e.Name == name {
			return e, nil
		}
	}
	return EdgeLayout{}, fmt.Errorf("edge %q is not enrolled in this fleet", name)
}

// edgePubkey runs `mcp-ssh-edge pubkey`, which generates the edge key if needed and prints
// its public line; the line is parsed so garbage never reaches authorized_keys.
func edgePubkey(ctx context.Context, edgeBin, keyFile string) (ssh.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, edgeBin, "pubkey")
	cmd.Env = append(CleanEnv("EDGE_", "LOG_"), "EDGE_KEY_FILE="+keyFile, "LOG_LEVEL=warn")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s pubkey: %w: %s", edgeBin, err, strings.TrimSpace(stderr.String()))
	}
	if len(out) > keys.MaxKeyFile {
		return nil, fmt.Errorf("%s pubkey printed %d bytes, more than a public key", edgeBin, len(out))
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(out)
	if err != nil {
		return nil, fmt.Errorf("%s pubkey printed %q, not a public key: %w", edgeBin, strings.TrimSpace(string(out)), err)
	}
	return pub, nil
}

// FreePort asks the kernel for a free loopback port. Another process could take it before
// it is bound again; the server then fails to start with a clear error and the run can
// simply be repeated.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// CleanEnv is this process's environment without the variables that start with any of the
// prefixes, so a setting from the caller's shell cannot redirect a fleet to real keys.
func CleanEnv(prefixes ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		for _, p := range prefixes {
			if strings.HasPrefix(kv, p) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// GatewayVarPrefixes match the variables the gateway reads (SPEC §2); StartGateway drops the
// caller's values so the gateway uses only the throw-away keys and state.
func GatewayVarPrefixes() []string {
	return []string{
		"GATEWAY_MODE=", "SSH_BIND=", "SSH_PORT=", "PUBLIC_ADDR=", "KEYS_DIR=", "HOST_KEY_FILE=",
		"AUTHORIZED_KEYS_FILE=", "PROVISION_TOKEN=", "STATE_DIR=", "AUDIT_LOG=", "FILES_DIR=",
		"MCP_", "KEEPALIVE_INTERVAL=", "EXEC_TIMEOUT", "MAX_", "LOG_", "POLICY_FILE=", "METRICS_TOKEN=",
	}
}

// errExitedZero is an edge that stopped on its own without an error.
var errExitedZero = errors.New("edge exited early with status 0")
