package localfleet

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// Edge is a running mcp-ssh-edge process of a fleet.
type Edge struct {
	*Proc
	// Name is the enrolled name, the `edge` argument of the tools; empty for an edge started
	// from a bare key, whose name the gateway decides (get_status tells it).
	Name string
	// Key is the identity the edge authenticates with.
	Key EdgeKey
}

// edgeEnv is the environment of an edge with key k dialling gateway: the fleet's host key
// pinned, a reconnect backoff capped at 2 s, warnings and up logged, then extraEnv, which
// overrides. Without EDGE_STATE_DIR in extraEnv the edge gets a fresh state directory.
func (l *Layout) edgeEnv(gateway string, k EdgeKey, extraEnv []string) ([]string, error) {
	env := append(BaseEnv(l.Dir),
		"EDGE_GATEWAY="+gateway,
		"EDGE_GATEWAY_HOST_KEY="+l.HostKeyFP,
		"EDGE_KEY_FILE="+k.KeyFile,
		"EDGE_BACKOFF_MAX=2s",
		"LOG_LEVEL=warn",
	)
	if !slices.ContainsFunc(extraEnv, func(kv string) bool { return strings.HasPrefix(kv, "EDGE_STATE_DIR=") }) {
		state, err := os.MkdirTemp(l.Dir, "edge-state-")
		if err != nil {
			return nil, fmt.Errorf("edge state directory: %w", err)
		}
		env = append(env, "EDGE_STATE_DIR="+state)
	}
	return append(env, extraEnv...), nil
}

// StartEdge starts mcp-ssh-edge with key k dialling gateway (host:port: a Gateway's SSHAddr,
// or a Proxy's Addr in front of it). The gateway need not be up yet: the edge retries with
// its backoff until it is. extraEnv (`NAME=value`, e.g. EDGE_NAME) is appended last, so it
// overrides the defaults. The caller must Stop or Kill the edge.
func (l *Layout) StartEdge(gateway string, k EdgeKey, extraEnv ...string) (*Edge, error) {
	env, err := l.edgeEnv(gateway, k, extraEnv)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(l.EdgeBin)
	cmd.Env = env
	p, err := StartProc(cmd, l.Log)
	if err != nil {
		return nil, err
	}
	l.logger.Info("started edge", "pid", p.PID(), "fingerprint", k.Fingerprint, "gateway", gateway)
	return &Edge{Proc: p, Key: k}, nil
}

// StartEnrolled starts the edge Prepare enrolled as name, dialling gateway: with its key and
// state directory, EDGE_NAME, its reported labels and the fleet's upload directory.
func (l *Layout) StartEnrolled(gateway, name string, extraEnv ...string) (*Edge, error) {
	el, err := l.Edge(name)
	if err != nil {
		return nil, err
	}
	env := []string{"EDGE_STATE_DIR=" + el.StateDir, "EDGE_NAME=" + el.Name, "EDGE_UPLOAD_DIRS=" + l.UploadDir}
	if el.ReportedLabels != "" {
		env = append(env, "EDGE_LABELS="+el.ReportedLabels)
	}
	e, err := l.StartEdge(gateway, el.EdgeKey, append(env, extraEnv...)...)
	if err != nil {
		return nil, err
	}
	e.Name = el.Name
	return e, nil
}
