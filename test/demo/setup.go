package main

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
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// edgeName is the name bound to the demo edge's key in authorized_keys.
const edgeName = "demo-edge"

// layout is where the demo keeps its throw-away keys and state, all under one temp dir.
type layout struct {
	keysDir        string // gateway KEYS_DIR
	hostKeyFile    string
	authorizedKeys string
	stateDir       string // gateway STATE_DIR
	edgeKeyFile    string
	edgeStateDir   string
	uploadDir      string
	sshPort        int
	hostKeyFP      string // SHA256:… of the gateway host key, pinned by the edge
}

// prepare generates the gateway host key and the edge key, enrols the edge in
// authorized_keys and picks the SSH port.
func prepare(ctx context.Context, dir, edgeBin string) (*layout, error) {
	l := &layout{
		keysDir:      filepath.Join(dir, "keys"),
		stateDir:     filepath.Join(dir, "state"),
		edgeKeyFile:  filepath.Join(dir, "edge", "id_ed25519"),
		edgeStateDir: filepath.Join(dir, "edge", "state"),
		uploadDir:    filepath.Join(dir, "uploads"),
	}
	l.hostKeyFile = filepath.Join(l.keysDir, "host_ed25519")
	l.authorizedKeys = filepath.Join(l.keysDir, "authorized_keys")
	for _, d := range []string{l.keysDir, l.stateDir, l.edgeStateDir, l.uploadDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}

	host, _, err := keys.LoadOrGenerate(l.hostKeyFile, "mcp-ssh-gateway demo")
	if err != nil {
		return nil, fmt.Errorf("gateway host key: %w", err)
	}
	l.hostKeyFP = keys.Fingerprint(host.PublicKey())
	slog.Info("generated gateway host key", "fingerprint", l.hostKeyFP)

	edgePub, err := edgePubkey(ctx, edgeBin, l.edgeKeyFile)
	if err != nil {
		return nil, err
	}
	line := fmt.Sprintf("name=%q,labels=%q %s\n", edgeName, "env=demo", keys.AuthorizedLine(edgePub))
	if err := keys.WriteFileAtomic(l.authorizedKeys, []byte(line), 0o600); err != nil {
		return nil, fmt.Errorf("authorized_keys: %w", err)
	}
	slog.Info("enrolled edge", "name", edgeName, "fingerprint", keys.Fingerprint(edgePub))

	if l.sshPort, err = freePort(); err != nil {
		return nil, err
	}
	return l, nil
}

// edgePubkey runs `mcp-ssh-edge pubkey`, which generates the edge key if needed and prints
// its public line; the line is parsed so garbage never reaches authorized_keys.
func edgePubkey(ctx context.Context, edgeBin, keyFile string) (ssh.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, edgeBin, "pubkey")
	cmd.Env = append(cleanEnv("EDGE_", "LOG_"), "EDGE_KEY_FILE="+keyFile, "LOG_LEVEL=warn")
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

// freePort asks the kernel for a free loopback port. Another process could take it before
// the gateway binds it; the gateway then fails to start with a clear error and the demo
// can simply be run again.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// cleanEnv is this process's environment without the variables that start with any of the
// prefixes, so a setting from the caller's shell cannot redirect the demo to real keys.
func cleanEnv(prefixes ...string) []string {
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

// edgeProc is the running mcp-ssh-edge.
type edgeProc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
}

// startEdge starts the edge dialling the gateway's port. The gateway is not up yet: the edge
// retries with its backoff (capped at 2 s here) until it is.
func startEdge(l *layout, edgeBin string) (*edgeProc, error) {
	cmd := exec.Command(edgeBin)
	cmd.Env = append(cleanEnv("EDGE_", "LOG_"),
		"EDGE_GATEWAY=127.0.0.1:"+strconv.Itoa(l.sshPort),
		"EDGE_GATEWAY_HOST_KEY="+l.hostKeyFP,
		"EDGE_KEY_FILE="+l.edgeKeyFile,
		"EDGE_STATE_DIR="+l.edgeStateDir,
		"EDGE_NAME="+edgeName,
		"EDGE_LABELS=site=laptop",
		"EDGE_UPLOAD_DIRS="+l.uploadDir,
		"EDGE_BACKOFF_MAX=2s",
		"LOG_LEVEL=warn",
	)
	cmd.Stdin = nil
	cmd.Stdout = os.Stderr // the edge writes nothing to stdout; keep ours for results
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", edgeBin, err)
	}
	p := &edgeProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	slog.Info("started edge", "pid", cmd.Process.Pid, "gateway", "127.0.0.1:"+strconv.Itoa(l.sshPort))
	return p, nil
}

// exited reports why the edge stopped, or nil while it runs.
func (p *edgeProc) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			return errors.New("edge exited early with status 0")
		}
		return fmt.Errorf("edge exited early: %w", p.err)
	default:
		return nil
	}
}

// stop ends the edge: SIGTERM, then SIGKILL if it has not exited within 5 s.
func (p *edgeProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		slog.Warn("edge ignored SIGTERM for 5 s; killing it")
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// gatewayEnv is the gateway's configuration for the demo (SPEC §2).
func gatewayEnv(l *layout) []string {
	return []string{
		"SSH_BIND=127.0.0.1",
		"SSH_PORT=" + strconv.Itoa(l.sshPort),
		"KEYS_DIR=" + l.keysDir,
		"HOST_KEY_FILE=" + l.hostKeyFile,
		"AUTHORIZED_KEYS_FILE=" + l.authorizedKeys,
		"STATE_DIR=" + l.stateDir,
		"MCP_TRANSPORT=stdio",
		"LOG_LEVEL=warn",
	}
}

// gatewayVarPrefixes match the variables the gateway reads; the demo drops the caller's
// values so its gateway uses only the throw-away keys and state.
func gatewayVarPrefixes() []string {
	return []string{
		"GATEWAY_MODE=", "SSH_BIND=", "SSH_PORT=", "PUBLIC_ADDR=", "KEYS_DIR=", "HOST_KEY_FILE=",
		"AUTHORIZED_KEYS_FILE=", "PROVISION_TOKEN=", "STATE_DIR=", "AUDIT_LOG=", "FILES_DIR=",
		"MCP_", "KEEPALIVE_INTERVAL=", "EXEC_TIMEOUT", "MAX_", "LOG_", "POLICY_FILE=", "METRICS_TOKEN=",
	}
}
