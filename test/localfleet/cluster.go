package localfleet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// gatewayIDPattern keeps a GATEWAY_ID usable as a directory name and in NATS subjects.
var gatewayIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ClusterMember is one gateway of a cluster built from a Layout (SPEC §10): its own
// GATEWAY_ID, authorized_keys, state directory, audit log and FILES_DIR under
// Dir/gateways/<id>, and the Layout's host key, which every gateway of a cluster shares (the
// edges pin one key, and a load balancer may send an edge to any gateway). It holds no
// process: pass Env to SpawnGateway or StartGateway, or use StartCluster.
type ClusterMember struct {
	ID             string // GATEWAY_ID
	Dir            string // everything of this gateway but the host key
	KeysDir        string // KEYS_DIR (the host key is the Layout's HOST_KEY_FILE)
	AuthorizedKeys string // AUTHORIZED_KEYS_FILE, a copy of the Layout's when the member was made
	StateDir       string // STATE_DIR
	AuditLog       string // AUDIT_LOG
	FilesDir       string // FILES_DIR
	NATSURL        string // CLUSTER_NATS_URL

	l *Layout
}

// NewClusterMember makes the files of gateway id of a cluster coordinated through natsURL:
// its directories, and its authorized_keys as a copy of the Layout's, so that every edge
// Prepare enrolled (or Authorize added before) is known to it from the start. Keys changed
// later travel through the cluster (register_edge_key, `keys add`, …), not through the
// Layout's file.
func (l *Layout) NewClusterMember(id, natsURL string) (*ClusterMember, error) {
	if !gatewayIDPattern.MatchString(id) {
		return nil, fmt.Errorf("gateway id %q: want %s", id, gatewayIDPattern)
	}
	dir := filepath.Join(l.Dir, "gateways", id)
	m := &ClusterMember{
		ID:       id,
		Dir:      dir,
		KeysDir:  filepath.Join(dir, "keys"),
		StateDir: filepath.Join(dir, "state"),
		FilesDir: filepath.Join(dir, "files"),
		NATSURL:  natsURL,
		l:        l,
	}
	m.AuthorizedKeys = filepath.Join(m.KeysDir, "authorized_keys")
	m.AuditLog = filepath.Join(m.StateDir, "audit.jsonl")
	if _, err := os.Stat(dir); err == nil {
		return nil, fmt.Errorf("gateway %s: %s exists already", id, dir)
	}
	for _, d := range []string{m.KeysDir, m.StateDir, m.FilesDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	seed, err := os.ReadFile(l.AuthorizedKeys)
	if err != nil {
		return nil, fmt.Errorf("authorized_keys: %w", err)
	}
	if err := keys.WriteFileAtomic(m.AuthorizedKeys, seed, 0o600); err != nil {
		return nil, fmt.Errorf("gateway %s authorized_keys: %w", id, err)
	}
	return m, nil
}

// Env is what this member's gateway gets on top of GatewayEnv: GATEWAY_ID, CLUSTER_NATS_URL,
// and its own keys directory, authorized_keys, state, audit log and FILES_DIR; HOST_KEY_FILE
// stays the Layout's.
func (m *ClusterMember) Env() []string {
	return []string{
		"GATEWAY_ID=" + m.ID,
		"CLUSTER_NATS_URL=" + m.NATSURL,
		"KEYS_DIR=" + m.KeysDir,
		"HOST_KEY_FILE=" + m.l.HostKeyFile,
		"AUTHORIZED_KEYS_FILE=" + m.AuthorizedKeys,
		"STATE_DIR=" + m.StateDir,
		"AUDIT_LOG=" + m.AuditLog,
		"FILES_DIR=" + m.FilesDir,
	}
}

// GatewayEnv is the member's gateway's whole environment: GatewayEnv(l), Env, then
// extraEnv, which overrides; e.g. for the admin CLI on this gateway's files.
func (m *ClusterMember) GatewayEnv(extraEnv ...string) []string {
	return GatewayEnv(m.l, append(m.Env(), extraEnv...)...)
}

// Authorize appends k to this gateway's authorized_keys, as Layout.Authorize does to the
// Layout's.
func (m *ClusterMember) Authorize(k EdgeKey, name, labels string) error {
	line, err := authorizedLine(k, name, labels)
	if err != nil {
		return err
	}
	return m.l.appendAuthorized(m.AuthorizedKeys, line)
}

// StartCluster starts one gateway per id, each a ClusterMember of l coordinated through
// natsURL, with extraEnv on top of each one's environment, and connects to each (see
// StartGateway). On an error the gateways already started are closed. The caller must Close
// the gateways.
func StartCluster(ctx context.Context, l *Layout, bin, natsURL string, ids []string, extraEnv ...string) ([]*Gateway, []*ClusterMember, error) {
	var gws []*Gateway
	var members []*ClusterMember
	fail := func(err error) ([]*Gateway, []*ClusterMember, error) {
		for _, g := range gws {
			_ = g.Close()
		}
		return nil, nil, err
	}
	for _, id := range ids {
		m, err := l.NewClusterMember(id, natsURL)
		if err != nil {
			return fail(err)
		}
		g, err := StartGateway(ctx, l, bin, append(m.Env(), extraEnv...)...)
		if err != nil {
			return fail(fmt.Errorf("gateway %s: %w", id, err))
		}
		gws = append(gws, g)
		members = append(members, m)
	}
	return gws, members, nil
}
