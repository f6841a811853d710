package e2e

// Several gateways, one fleet (SPEC §10, docs/SCALING.md): three real gateways coordinated
// through one in-process NATS server (localfleet.StartNATS), edges spread over them, each edge
// dialling through its own toxiproxy, which stands for the TCP load balancer and is re-pointed
// to fail an edge over to another gateway.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

const (
	clusterToken = "a-long-cluster-provisioning-token" // PROVISION_TOKEN of every gateway
	clusterWait  = 20 * time.Second                    // the cluster view settles within this
	keySyncWait  = 10 * time.Second                    // a key change reaches every gateway within this
)

// clusterIDs are the GATEWAY_IDs of the three gateways, index 0, 1, 2 (A, B, C).
var clusterIDs = []string{"gw-a", "gw-b", "gw-c"}

// clusterGW is one gateway of the cluster, with its own files.
type clusterGW struct {
	*gateway
	id string
	m  *localfleet.ClusterMember
}

// clusterEdge is one edge of the cluster: its key, its load balancer and a directory of its
// own for files.
type clusterEdge struct {
	spec  clusterEdgeSpec
	key   edgeKey
	lb    *localfleet.Proxy // what the edge dials; re-pointed with lb.SetUpstream
	dir   string            // a directory the edge writes uploads to and downloads from
	state string            // EDGE_STATE_DIR
	proc  *edgeProc
}

type clusterEdgeSpec struct {
	name    string // bound to the key (unless unbound) and asked for as EDGE_NAME
	labels  string // bound labels
	at      int    // index of the gateway its load balancer points at first
	unbound bool   // authorize the key without a name
	manual  bool   // do not start it in newCluster (see startEdge)
}

type clusterEnv struct {
	f       *fixture
	edgeEnv map[string]string // on top of edgeDefaults for every edge
	nats    *localfleet.NATS
	gws     []*clusterGW
	edges   map[string]*clusterEdge
}

// newCluster starts NATS, three gateways (gatewayDefaults, PROVISION_TOKEN, then env) and
// the edges of specs, and waits until every gateway shows every started edge on its holder.
func newCluster(t *testing.T, env map[string]string, specs ...clusterEdgeSpec) *clusterEnv {
	t.Helper()
	f := newFixture(t)
	c := &clusterEnv{f: f, edges: map[string]*clusterEdge{}, edgeEnv: map[string]string{}}
	if ka := env["KEEPALIVE_INTERVAL"]; ka != "" {
		c.edgeEnv["EDGE_KEEPALIVE_INTERVAL"] = ka // the edges keep the gateways' pace
	}
	for _, s := range specs {
		k := f.newEdgeKey(t)
		name := s.name
		if s.unbound {
			name = ""
		}
		f.authorize(t, k, name, s.labels)
		c.edges[s.name] = &clusterEdge{spec: s, key: k, dir: t.TempDir(), state: t.TempDir()}
	}
	n, err := localfleet.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop) // after the gateways' cleanups: they close while NATS is up
	c.nats = n
	for _, id := range clusterIDs {
		m, err := f.NewClusterMember(id, n.URL())
		if err != nil {
			t.Fatal(err)
		}
		extra := map[string]string{"PROVISION_TOKEN": clusterToken}
		for _, kv := range m.Env() {
			k, v, _ := strings.Cut(kv, "=")
			extra[k] = v
		}
		for k, v := range env {
			extra[k] = v
		}
		g := f.startGateway(t, extra)
		c.gws = append(c.gws, &clusterGW{gateway: g, id: id, m: m})
	}
	for _, s := range specs {
		e := c.edges[s.name]
		e.lb = newToxiproxy(t, c.gws[s.at].addr)
		if !s.manual {
			c.startEdge(t, s.name)
		}
	}
	for _, s := range specs {
		if !s.manual {
			c.waitHeld(t, s.name, c.gws[s.at].id, clusterWait)
		}
	}
	return c
}

// startEdge starts the edge called name through its load balancer.
func (c *clusterEnv) startEdge(t *testing.T, name string) *edgeProc {
	t.Helper()
	e := c.edges[name]
	e.proc = c.f.startEdge(t, e.key, e.lb.Addr(), c.withEdgeEnv(map[string]string{"EDGE_STATE_DIR": e.state, "EDGE_NAME": e.spec.name}))
	return e.proc
}

// withEdgeEnv is env on top of the cluster's edge settings.
func (c *clusterEnv) withEdgeEnv(env map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range c.edgeEnv {
		out[k] = v
	}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// gw is the gateway with GATEWAY_ID id.
func (c *clusterEnv) gw(id string) *clusterGW {
	for _, g := range c.gws {
		if g.id == id {
			return g
		}
	}
	panic("no gateway " + id)
}

// live are the gateways still running.
func (c *clusterEnv) live() []*clusterGW {
	var out []*clusterGW
	for _, g := range c.gws {
		if g.Running() {
			out = append(out, g)
		}
	}
	return out
}

// entries are the get_status entries of g for fingerprint fp.
func (g *clusterGW) entries(t *testing.T, fp string) []edgeStatus {
	t.Helper()
	_, all := g.edgeByFP(t, fp)
	return all
}

// heldView says whether g shows the edge with fp exactly once, connected, on holder.
func (g *clusterGW) heldView(t *testing.T, fp, holder string) (bool, []edgeStatus) {
	t.Helper()
	all := g.entries(t, fp)
	return len(all) == 1 && all[0].Connected && all[0].Gateway == holder, all
}

// waitHeld waits until every live gateway shows the edge called name exactly once,
// connected, with gateway = holder.
func (c *clusterEnv) waitHeld(t *testing.T, name, holder string, within time.Duration) {
	t.Helper()
	fp := c.edges[name].key.Fingerprint
	last := map[string][]edgeStatus{}
	ok := waitFor(within, func() bool {
		all := true
		for _, g := range c.live() {
			held, es := g.heldView(t, fp, holder)
			last[g.id] = es
			all = all && held
		}
		return all
	})
	if !ok {
		t.Fatalf("edge %s (%s) not shown once, connected, on gateway %s by every gateway within %v; last views: %+v", name, fp, holder, within, last)
	}
}

// connectedAnywhere lists the live gateways that show fp connected.
func (c *clusterEnv) connectedAnywhere(t *testing.T, fp string) []string {
	t.Helper()
	var out []string
	for _, g := range c.live() {
		for _, e := range g.entries(t, fp) {
			if e.Connected {
				out = append(out, g.id+"→"+e.Gateway)
			}
		}
	}
	return out
}

// auditLines decodes g's audit log, one map per line.
func (g *clusterGW) auditLines(t *testing.T) []map[string]any {
	t.Helper()
	b, _ := os.ReadFile(g.m.AuditLog)
	var out []map[string]any
	for _, l := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("gateway %s: audit line is not JSON: %v: %.200s", g.id, err, l)
			continue
		}
		out = append(out, m)
	}
	return out
}

// admin runs `mcp-ssh-gateway args…` on g's files (its environment, as an operator runs the
// CLI next to a gateway).
func (g *clusterGW) admin(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin, args...)
	cmd.Env = g.m.GatewayEnv(append(gatewayDefaults(), "PROVISION_TOKEN="+clusterToken, "SSH_PORT=2222", "PUBLIC_ADDR=127.0.0.1:1")...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("gateway %s: mcp-ssh-gateway %v: %v\n%s%s", g.id, args, err, out.String(), tail(errb.String(), 3000))
	}
	return out.String()
}

// authorizedOn says whether fp's key is in g's authorized_keys file.
func (g *clusterGW) authorizedOn(t *testing.T, k edgeKey) bool {
	t.Helper()
	b, err := os.ReadFile(g.m.AuthorizedKeys)
	if err != nil {
		t.Fatalf("gateway %s authorized_keys: %v", g.id, err)
	}
	blob := strings.Fields(k.Line)[1]
	return strings.Contains(string(b), blob)
}

// waitAuthorizedEverywhere waits until k is (want true) or is not (false) in every
// gateway's authorized_keys file.
func (c *clusterEnv) waitAuthorizedEverywhere(t *testing.T, k edgeKey, want bool, within time.Duration) {
	t.Helper()
	var wrong []string
	if !waitFor(within, func() bool {
		wrong = nil
		for _, g := range c.gws {
			if g.authorizedOn(t, k) != want {
				wrong = append(wrong, g.id)
			}
		}
		return len(wrong) == 0
	}) {
		t.Fatalf("key %s: in authorized_keys = %v wanted on every gateway within %v; wrong on %v", k.Fingerprint, want, within, wrong)
	}
}

// withoutDuration is a run_command result with duration_ms cleared, for comparisons.
func withoutDuration(o execOut) execOut { o.DurationMs = 0; return o }

// TestClusterToolsThroughNonOwner: every tool reaches an edge through a gateway that does not
// hold it, with the result the holder gives; get_status shows the whole fleet with each
// edge's gateway and the peers; a relayed call is audited on both gateways.
func TestClusterToolsThroughNonOwner(t *testing.T) {
	t.Parallel()
	// 3 s keepalives: nothing here waits for a fault to be noticed, and a loaded machine must
	// not drop tunnels in the middle of a comparison.
	c := newCluster(t, map[string]string{"EXEC_TIMEOUT": "20s", "KEEPALIVE_INTERVAL": "3s"},
		clusterEdgeSpec{name: "ea", labels: "role=cam,site=lab", at: 0},
		clusterEdgeSpec{name: "eb", labels: "role=cam,site=hq", at: 1},
		clusterEdgeSpec{name: "ec", labels: "role=db", at: 2},
	)
	a, b, cc := c.gw("gw-a"), c.gw("gw-b"), c.gw("gw-c")
	ea := c.edges["ea"]

	t.Run("get_status", func(t *testing.T) {
		holders := map[string]string{"ea": "gw-a", "eb": "gw-b", "ec": "gw-c"}
		for _, g := range c.gws {
			var st statusOut
			ok := waitFor(10*time.Second, func() bool {
				st = g.status(t, map[string]any{"limit": 1000})
				if st.Cluster == nil || !st.Cluster.Connected {
					return false
				}
				seen := map[string]bool{}
				for _, p := range st.Cluster.Peers {
					seen[p.ID] = p.Edges == 1
				}
				for _, id := range clusterIDs {
					if id != g.id && !seen[id] {
						return false
					}
				}
				return true
			})
			if !ok {
				t.Errorf("gateway %s: cluster = %+v, want enabled, connected, and the two other gateways as peers with 1 edge each", g.id, st.Cluster)
			}
			if st.Gateway.ID != g.id {
				t.Errorf("gateway %s: get_status gateway.id = %q", g.id, st.Gateway.ID)
			}
			if st.Cluster != nil {
				if !st.Cluster.Enabled {
					t.Errorf("gateway %s: cluster.enabled false", g.id)
				}
				for _, p := range st.Cluster.Peers {
					ls, err := time.Parse(time.RFC3339, p.LastSeen)
					if !isRFC3339UTC(p.LastSeen) || err != nil || time.Since(ls) > 30*time.Second || time.Until(ls) > 5*time.Second {
						t.Errorf("gateway %s: peer %s last_seen %q, want a recent RFC 3339 UTC time", g.id, p.ID, p.LastSeen)
					}
					if p.ID == g.id {
						t.Logf("gateway %s lists itself among its peers: %+v", g.id, p)
					}
				}
			}
			if st.Totals.Connected != 3 || st.Totals.Known < 3 {
				t.Errorf("gateway %s: totals %+v, want 3 connected", g.id, st.Totals)
			}
			for _, e := range st.Edges {
				if want, ok := holders[e.Name]; ok && (e.Gateway != want || !e.Connected) {
					t.Errorf("gateway %s: edge %s gateway %q connected %v, want %q", g.id, e.Name, e.Gateway, e.Connected, want)
				}
			}
		}
		// The same edge looks the same from every gateway, where it is connected aside.
		ref, _ := a.edgeByFP(t, ea.key.Fingerprint)
		for _, g := range []*clusterGW{b, cc} {
			got, _ := g.edgeByFP(t, ea.key.Fingerprint)
			if got.Name != ref.Name || !mapsEqual(got.Labels, ref.Labels) || !mapsEqual(got.ReportedLabels, ref.ReportedLabels) ||
				got.EdgeVersion != ref.EdgeVersion || got.OS != ref.OS || got.Arch != ref.Arch || got.ConnectedSince != ref.ConnectedSince {
				t.Errorf("edge ea through %s: %+v\nthrough its holder gw-a: %+v", g.id, got, ref)
			}
		}
	})

	t.Run("run_command", func(t *testing.T) {
		cwd := ea.dir
		if real, err := filepath.EvalSymlinks(cwd); err == nil {
			cwd = real
		}
		for _, args := range []map[string]any{
			{"command": `echo out; echo err >&2; printf '%s|' "$FOO"; pwd; cat; exit 3`, "env": map[string]any{"FOO": "bar"}, "stdin": "in\n", "cwd": cwd},
			{"argv": []any{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"}},
		} {
			args["edge"] = "ea"
			ro := a.call(t, "run_command", args)
			for _, g := range []*clusterGW{b, cc} {
				rr := g.call(t, "run_command", args)
				if rr.IsError != ro.IsError {
					t.Errorf("run_command %v through %s: isError %v (%s); through the holder %v", args, g.id, rr.IsError, rr.Text, ro.IsError)
					continue
				}
				if got, want := withoutDuration(decode[execOut](t, rr.Structured)), withoutDuration(decode[execOut](t, ro.Structured)); got != want {
					t.Errorf("run_command through %s:\n%+v\nthrough the holder:\n%+v", g.id, got, want)
				}
			}
			if o := decode[execOut](t, ro.Structured); args["command"] != nil && (o.ExitCode != 3 || o.Stdout != "out\nbar|"+cwd+"\nin\n" || o.Stderr != "err\n") {
				t.Errorf("run_command through the holder: %+v", o)
			}
		}
		// A timeout relayed: captured output, timed_out, isError, and the edge's process gone.
		start := time.Now()
		r := b.call(t, "run_command", map[string]any{"edge": "ea", "command": "echo started; sleep 30", "timeout_seconds": 1})
		o := decode[execOut](t, r.Structured)
		if !r.IsError || !o.TimedOut || o.Stdout != "started\n" || time.Since(start) > 10*time.Second {
			t.Errorf("run_command timeout through gw-b: isError %v %+v after %v", r.IsError, o, time.Since(start))
		}
		if r := b.call(t, "run_command", map[string]any{"edge": "nosuch", "argv": []any{"true"}}); !r.IsError {
			t.Errorf("run_command on an unknown edge through gw-b: %s", r.Text)
		}
	})

	t.Run("get_device_info", func(t *testing.T) {
		type info struct {
			Edge          string `json:"edge"`
			Hostname      string `json:"hostname"`
			OS            string `json:"os"`
			Platform      string `json:"platform"`
			KernelVersion string `json:"kernel_version"`
			Arch          string `json:"arch"`
			EdgeVersion   string `json:"edge_version"`
			CPU           struct {
				Model        string `json:"model"`
				Cores        int    `json:"cores"`
				LogicalCores int    `json:"logical_cores"`
			} `json:"cpu"`
			Memory struct {
				Total uint64 `json:"total"`
			} `json:"memory"`
		}
		pick := func(m map[string]any) info { return decode[info](t, m) }
		start := time.Now()
		// The edge's cached inventory through the holder (a refresh costs seconds, more on a
		// loaded machine: one relayed refresh below is enough).
		ro := a.call(t, "get_device_info", map[string]any{"edge": "ea"})
		t.Logf("get_device_info through the holder: %v", time.Since(start).Round(time.Millisecond))
		if ro.IsError {
			t.Fatalf("get_device_info through the holder: %s", ro.Text)
		}
		want := pick(ro.Structured)
		for _, g := range []*clusterGW{b, cc} {
			for _, refresh := range []bool{false, g == b} {
				start := time.Now()
				rr := g.call(t, "get_device_info", map[string]any{"edge": "ea", "refresh": refresh})
				t.Logf("get_device_info refresh %v through %s: %v", refresh, g.id, time.Since(start).Round(time.Millisecond))
				if rr.IsError {
					t.Errorf("get_device_info through %s (refresh %v): %s", g.id, refresh, rr.Text)
					continue
				}
				if got := pick(rr.Structured); got != want || want.Edge != "ea" || want.Hostname == "" {
					t.Errorf("get_device_info through %s (refresh %v): %+v, through the holder %+v", g.id, refresh, got, want)
				}
			}
		}
	})

	type dlOut struct {
		Size      int64  `json:"size"`
		Bytes     int64  `json:"bytes"`
		SHA256    string `json:"sha256"`
		Truncated bool   `json:"truncated"`
		Encoding  string `json:"encoding"`
		Content   string `json:"content"`
		DestPath  string `json:"dest_path"`
	}

	t.Run("upload_file and download_file", func(t *testing.T) {
		binary := randBytes(t, 70000)
		cases := []struct {
			name string
			args map[string]any
			want []byte
		}{
			{"utf-8", map[string]any{"content": "héllo cluster\n", "mode": "0600"}, []byte("héllo cluster\n")},
			{"base64", map[string]any{"content": base64.StdEncoding.EncodeToString(binary), "encoding": "base64"}, binary},
		}
		for _, tc := range cases {
			outs := map[string]uploadOut{}
			for _, g := range c.gws {
				args := map[string]any{"edge": "ea", "path": filepath.Join(ea.dir, tc.name+"-via-"+g.id)}
				for k, v := range tc.args {
					args[k] = v
				}
				r := g.call(t, "upload_file", args)
				if r.IsError {
					t.Errorf("upload_file %s through %s: %s", tc.name, g.id, r.Text)
					continue
				}
				u := decode[uploadOut](t, r.Structured)
				if got, _ := os.ReadFile(args["path"].(string)); !bytes.Equal(got, tc.want) {
					t.Errorf("upload_file %s through %s: %d bytes on the edge, %d sent", tc.name, g.id, len(got), len(tc.want))
				}
				u.Path = ""
				outs[g.id] = u
			}
			if outs["gw-b"] != outs["gw-a"] || outs["gw-c"] != outs["gw-a"] || outs["gw-a"].SHA256 != sha256hex(tc.want) {
				t.Errorf("upload_file %s results differ: %+v", tc.name, outs)
			}
		}

		// source_path: from the calling gateway's FILES_DIR.
		src := randBytes(t, 3<<20+17)
		for _, g := range c.gws {
			if err := os.WriteFile(filepath.Join(g.m.FilesDir, "src.bin"), src, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var ref uploadOut
		for _, g := range c.gws {
			path := filepath.Join(ea.dir, "src-via-"+g.id)
			r := g.call(t, "upload_file", map[string]any{"edge": "ea", "path": path, "source_path": "src.bin"})
			if r.IsError {
				t.Errorf("upload_file source_path through %s: %s", g.id, r.Text)
				continue
			}
			u := decode[uploadOut](t, r.Structured)
			if u.Size != int64(len(src)) || u.SHA256 != sha256hex(src) || u.Edge != "ea" || u.Path != path {
				t.Errorf("upload_file source_path through %s: %+v", g.id, u)
			}
			if got, _ := os.ReadFile(path); sha256hex(got) != sha256hex(src) {
				t.Errorf("upload_file source_path through %s: the edge's file differs", g.id)
			}
			u.Path = ""
			if g == a {
				ref = u
			} else if u != ref {
				t.Errorf("upload_file source_path through %s: %+v, through the holder %+v", g.id, u, ref)
			}
		}

		// download_file inline and to dest_path (in the calling gateway's FILES_DIR).
		for _, args := range []map[string]any{
			{"path": filepath.Join(ea.dir, "utf-8-via-gw-a")},
			{"path": filepath.Join(ea.dir, "base64-via-gw-a"), "max_bytes": 1000},
		} {
			args["edge"] = "ea"
			ro := a.call(t, "download_file", args)
			if ro.IsError {
				t.Fatalf("download_file %v through the holder: %s", args, ro.Text)
			}
			for _, g := range []*clusterGW{b, cc} {
				rr := g.call(t, "download_file", args)
				if got, want := decode[dlOut](t, rr.Structured), decode[dlOut](t, ro.Structured); rr.IsError || got != want {
					t.Errorf("download_file %v through %s: isError %v %+v; through the holder %+v", args["path"], g.id, rr.IsError, got, want)
				}
			}
		}
		for _, g := range []*clusterGW{b, cc} {
			r := g.call(t, "download_file", map[string]any{"edge": "ea", "path": filepath.Join(ea.dir, "src-via-gw-a"), "dest_path": "back/src.bin"})
			d := decode[dlOut](t, r.Structured)
			if r.IsError || d.Bytes != int64(len(src)) || d.SHA256 != sha256hex(src) || d.DestPath != "back/src.bin" {
				t.Errorf("download_file to dest_path through %s: %s", g.id, r.Text)
			}
			if got, err := os.ReadFile(filepath.Join(g.m.FilesDir, "back", "src.bin")); err != nil || sha256hex(got) != sha256hex(src) {
				t.Errorf("download_file to dest_path through %s: the file in its FILES_DIR: %v", g.id, err)
			}
		}
		if _, err := os.Stat(filepath.Join(a.m.FilesDir, "back")); err == nil {
			t.Error("a download to dest_path through another gateway wrote into the holder's FILES_DIR")
		}
	})

	t.Run("jobs", func(t *testing.T) {
		r := b.call(t, "start_command", map[string]any{"edge": "ea", "command": "for i in 1 2 3 4 5; do echo l$i; sleep 0.2; done; echo e >&2; exit 4"})
		if r.IsError {
			t.Fatalf("start_command through gw-b: %s", r.Text)
		}
		j := decode[jobOut](t, r.Structured)
		if j.Status != "running" || !strings.HasPrefix(j.JobID, "ea/") || j.Edge != "ea" {
			t.Fatalf("start_command through gw-b: %+v", j)
		}
		final, output := b.pollJob(t, j.JobID, 30*time.Second)
		want := "l1\nl2\nl3\nl4\nl5\ne\n"
		if final.Status != "exited" || final.ExitCode == nil || *final.ExitCode != 4 || output != want {
			t.Fatalf("job through gw-b: %+v output %q", final, output)
		}
		ref := decode[jobOut](t, a.call(t, "get_command", map[string]any{"job_id": j.JobID}).Structured)
		for _, g := range c.gws {
			r := g.call(t, "get_command", map[string]any{"job_id": j.JobID})
			got := decode[jobOut](t, r.Structured)
			if r.IsError || !reflect.DeepEqual(got, ref) || got.Output != want {
				t.Errorf("get_command through %s: %+v, through the holder %+v", g.id, got, ref)
			}
			r = g.call(t, "list_commands", map[string]any{"edge": "ea"})
			if r.IsError || !strings.Contains(r.Text, j.JobID) {
				t.Errorf("list_commands through %s: %s", g.id, r.Text)
			}
		}
		// Started through the holder, cancelled through another gateway.
		rb := randBytes(t, 4)
		marker := fmt.Sprintf("301.%d", uint32(rb[0])<<24|uint32(rb[1])<<16|uint32(rb[2])<<8|uint32(rb[3]))
		r = a.call(t, "start_command", map[string]any{"edge": "ea", "argv": []any{"sleep", marker}})
		if r.IsError {
			t.Fatal(r.Text)
		}
		long := decode[jobOut](t, r.Structured)
		if r := cc.call(t, "cancel_command", map[string]any{"job_id": long.JobID}); r.IsError {
			t.Fatalf("cancel_command through gw-c: %s", r.Text)
		}
		end, _ := a.pollJob(t, long.JobID, 15*time.Second)
		if end.Status != "killed" {
			t.Errorf("job cancelled through gw-c: %+v", end)
		}
		if !waitFor(5*time.Second, func() bool { return countProcs(marker) == 0 }) {
			t.Errorf("the cancelled job's process still runs")
		}
	})

	t.Run("find_edges", func(t *testing.T) {
		for _, args := range []map[string]any{{"sort_by": "name"}, {"selector": "role=cam", "sort_by": "name"}} {
			var ref findOut
			for i, g := range c.gws {
				r := g.call(t, "find_edges", args)
				if r.IsError {
					t.Errorf("find_edges %v through %s: %s", args, g.id, r.Text)
					continue
				}
				got := decode[findOut](t, r.Structured)
				for k := range got.Edges { // measurements of the moment may differ
					got.Edges[k].FreeMemory = 0
				}
				if i == 0 {
					ref = got
					continue
				}
				if !reflect.DeepEqual(got, ref) {
					t.Errorf("find_edges %v through %s:\n%+v\nthrough gw-a:\n%+v", args, g.id, got, ref)
				}
			}
			want := []string{"ea", "eb", "ec"}
			if args["selector"] != nil {
				want = []string{"ea", "eb"}
			}
			if !slices.Equal(names(ref.Edges), want) || ref.Matched != len(want) {
				t.Errorf("find_edges %v: %v (matched %d), want %v", args, names(ref.Edges), ref.Matched, want)
			}
			for _, e := range ref.Edges {
				if !e.Connected {
					t.Errorf("find_edges: %s not connected", e.Name)
				}
			}
		}
	})

	t.Run("run_on_edges", func(t *testing.T) {
		type fanOut struct {
			Matched   int `json:"matched"`
			Succeeded int `json:"succeeded"`
			Failed    int `json:"failed"`
			Results   []struct {
				Edge     string `json:"edge"`
				ExitCode int    `json:"exit_code"`
				Stdout   string `json:"stdout"`
				Error    string `json:"error"`
			} `json:"results"`
		}
		for _, g := range c.gws {
			r := g.call(t, "run_on_edges", map[string]any{"target": "*", "argv": []any{"echo", "fleet"}})
			out := decode[fanOut](t, r.Structured)
			if r.IsError || out.Matched != 3 || out.Succeeded != 3 || out.Failed != 0 || len(out.Results) != 3 {
				t.Errorf("run_on_edges * through %s: %s", g.id, r.Text)
				continue
			}
			var got []string
			for _, res := range out.Results {
				got = append(got, res.Edge)
				if res.Stdout != "fleet\n" || res.ExitCode != 0 || res.Error != "" {
					t.Errorf("run_on_edges * through %s: %+v", g.id, res)
				}
			}
			if slices.Sort(got); !slices.Equal(got, []string{"ea", "eb", "ec"}) {
				t.Errorf("run_on_edges * through %s: edges %v", g.id, got)
			}
			r = g.call(t, "run_on_edges", map[string]any{"target": "role=cam", "command": "exit 2"})
			if out := decode[fanOut](t, r.Structured); r.IsError || out.Matched != 2 || out.Failed+out.Succeeded != 2 {
				t.Errorf("run_on_edges role=cam through %s: %s", g.id, r.Text)
			}
		}
	})

	t.Run("audit names both gateways", func(t *testing.T) {
		marker := "audit-marker-" + hex.EncodeToString(randBytes(t, 6))
		if r := b.call(t, "run_command", map[string]any{"edge": "ea", "argv": []any{"echo", marker}}); r.IsError {
			t.Fatal(r.Text)
		}
		hasMarker := func(l map[string]any) bool {
			argv, _ := l["argv"].([]any)
			return slices.Contains(argv, any(marker))
		}
		var callerLines, holderLines []map[string]any
		ok := waitFor(5*time.Second, func() bool {
			callerLines, holderLines = nil, nil
			var rid any
			bl := b.auditLines(t)
			for _, l := range bl {
				if hasMarker(l) {
					rid = l["request_id"]
				}
			}
			if rid == nil {
				return false
			}
			for _, l := range bl {
				if l["request_id"] == rid {
					callerLines = append(callerLines, l)
				}
			}
			for _, l := range a.auditLines(t) {
				if l["request_id"] == rid {
					holderLines = append(holderLines, l)
				}
			}
			return len(callerLines) >= 2 && len(holderLines) >= 2
		})
		if !ok {
			var bRun, aRun []map[string]any
			for _, l := range b.auditLines(t) {
				if l["tool"] == "run_command" {
					bRun = append(bRun, l)
				}
			}
			for _, l := range a.auditLines(t) {
				if l["tool"] == "run_command" || strings.HasPrefix(fmt.Sprint(l["actor"]), "gateway:") {
					aRun = append(aRun, l)
				}
			}
			t.Fatalf("want intent and outcome lines with argv [echo %s] on gw-b (caller), and lines with the same request_id on gw-a (holder);\nfound on gw-b: %v\non gw-a: %v\nlast run_command lines of gw-b: %v\nlast run_command or relayed lines of gw-a: %v",
				marker, callerLines, holderLines, lastN(bRun, 4), lastN(aRun, 4))
		}
		events := func(ls []map[string]any) []string {
			var out []string
			for _, l := range ls {
				out = append(out, fmt.Sprint(l["event"]))
			}
			slices.Sort(out)
			return out
		}
		for _, l := range callerLines {
			if l["gateway"] != "gw-b" || l["edge_gateway"] != "gw-a" || l["edge"] != "ea" || l["tool"] != "run_command" {
				t.Errorf("caller's audit line: gateway %v edge_gateway %v edge %v tool %v, want gw-b, gw-a, ea, run_command: %v", l["gateway"], l["edge_gateway"], l["edge"], l["tool"], l)
			}
			if l["request_id"] != callerLines[0]["request_id"] {
				t.Errorf("caller's lines carry different request_ids: %v", callerLines)
			}
		}
		for _, l := range holderLines {
			if l["actor"] != "gateway:gw-b" || l["edge"] != "ea" || l["tool"] == nil {
				t.Errorf("holder's audit line: actor %v edge %v tool %v, want gateway:gw-b, ea and a tool: %v", l["actor"], l["edge"], l["tool"], l)
			}
			// Not in the contract, noted for the report: what the holder records of the call.
			if l["event"] == "intent" {
				t.Logf("holder's intent line: tool %v, argv %v", l["tool"], l["argv"])
			}
		}
		for who, ls := range map[string][]map[string]any{"gw-b (caller)": callerLines, "gw-a (holder)": holderLines} {
			if ev := events(ls); !slices.Contains(ev, "intent") || !slices.Contains(ev, "outcome") {
				t.Errorf("%s audit events for the call: %v, want intent and outcome", who, ev)
			}
		}
		for _, l := range cc.auditLines(t) {
			if hasMarker(l) || l["request_id"] == callerLines[0]["request_id"] {
				t.Errorf("gw-c, neither caller nor holder, audited the call: %v", l)
			}
		}
	})
}

// lastN is the end of s, at most n elements.
func lastN[T any](s []T, n int) []T { return s[max(0, len(s)-n):] }

// vmRSSKiB is VmRSS of pid, in KiB.
func vmRSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// TestClusterLargeUploadThroughNonOwner: a 64 MiB upload_file from source_path through a
// gateway that does not hold the edge streams through both gateways: neither grows by more
// than 64 MiB (sampled every 20 ms), and the edge's file has the right SHA-256.
func TestClusterLargeUploadThroughNonOwner(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"KEEPALIVE_INTERVAL": "3s"},
		clusterEdgeSpec{name: "big", at: 0},
		clusterEdgeSpec{name: "other", at: 1},
		clusterEdgeSpec{name: "third", at: 2},
	)
	owner, caller := c.gw("gw-a"), c.gw("gw-b")
	e := c.edges["big"]
	content := make([]byte, 64<<20)
	rand.Read(content)
	sum := sha256.Sum256(content)
	if err := os.WriteFile(filepath.Join(caller.m.FilesDir, "big.bin"), content, 0o600); err != nil {
		t.Fatal(err)
	}
	content = nil
	time.Sleep(time.Second) // let both gateways settle after the cluster formed
	base := map[string]int64{}
	for _, g := range []*clusterGW{owner, caller} {
		v, err := vmRSSKiB(g.PID())
		if err != nil {
			t.Fatal(err)
		}
		base[g.id] = v
	}
	peak := map[string]int64{owner.id: base[owner.id], caller.id: base[caller.id]}
	var samples int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			samples++
			for _, g := range []*clusterGW{owner, caller} {
				if v, err := vmRSSKiB(g.PID()); err == nil && v > peak[g.id] {
					peak[g.id] = v
				}
			}
		}
	})
	target := filepath.Join(e.dir, "big.bin")
	start := time.Now()
	r := caller.call(t, "upload_file", map[string]any{"edge": "big", "path": target, "source_path": "big.bin"})
	took := time.Since(start)
	close(stop)
	wg.Wait()
	if r.IsError {
		t.Fatalf("upload_file of 64 MiB through gw-b to an edge on gw-a: %s", r.Text)
	}
	u := decode[uploadOut](t, r.Structured)
	if u.Size != 64<<20 || u.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("upload_file result %+v, want size %d sha256 %x", u, 64<<20, sum)
	}
	for _, g := range []*clusterGW{owner, caller} {
		growth := peak[g.id] - base[g.id]
		t.Logf("gateway %s: VmRSS %d KiB before, peak %d KiB (+%d KiB) over %d samples; upload took %v", g.id, base[g.id], peak[g.id], growth, samples, took)
		if growth > 64<<10 {
			t.Errorf("gateway %s grew by %d KiB during a 64 MiB upload, want at most 65536 KiB", g.id, growth)
		}
	}
	// The edge's side: the file it wrote, hashed here and by the edge itself.
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sum {
		t.Errorf("the edge's file %s (%d bytes) has another SHA-256", target, len(got))
	}
	rr := c.gw("gw-c").call(t, "run_command", map[string]any{"edge": "big", "argv": []any{"sha256sum", target}})
	if o := decode[execOut](t, rr.Structured); rr.IsError || !strings.HasPrefix(o.Stdout, hex.EncodeToString(sum[:])+" ") {
		t.Errorf("sha256sum on the edge through gw-c: %s", rr.Text)
	}
}

// TestClusterKeyChanges: revoking on gateway A an edge connected to gateway B drops it from B
// within 10 s and it is refused everywhere, with the MCP tool and with the admin CLI;
// register_edge_key, `keys add` and approve_edge on one gateway admit the key on all.
func TestClusterKeyChanges(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil,
		clusterEdgeSpec{name: "bystander", at: 0},
		clusterEdgeSpec{name: "victim", at: 1},
		clusterEdgeSpec{name: "victim2", at: 2},
	)
	a, b, cc := c.gw("gw-a"), c.gw("gw-b"), c.gw("gw-c")

	// refusedEverywhere points the edge's load balancer at each gateway in turn and checks it
	// never shows connected anywhere.
	refusedEverywhere := func(t *testing.T, name string) {
		t.Helper()
		e := c.edges[name]
		for _, g := range c.gws {
			if err := e.lb.SetUpstream(g.addr); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				if on := c.connectedAnywhere(t, e.key.Fingerprint); len(on) > 0 {
					t.Fatalf("revoked edge %s connected again (edge dialling %s): %v", name, g.id, on)
				}
				time.Sleep(250 * time.Millisecond)
			}
		}
	}
	revokedAndDropped := func(t *testing.T, name string, holder *clusterGW, start time.Time) {
		t.Helper()
		e := c.edges[name]
		if !waitFor(10*time.Second, func() bool {
			for _, s := range holder.entries(t, e.key.Fingerprint) {
				if s.Connected {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("%s still connected to %s 10 s after the revocation on gw-a", name, holder.id)
		}
		t.Logf("%s dropped from %s %v after the revocation on gw-a", name, holder.id, time.Since(start).Round(time.Millisecond))
		c.waitAuthorizedEverywhere(t, e.key, false, keySyncWait)
		if on := c.connectedAnywhere(t, e.key.Fingerprint); len(on) > 0 {
			t.Fatalf("revoked %s still shown connected: %v", name, on)
		}
		refusedEverywhere(t, name)
	}

	t.Run("revoke_edge_key on A of an edge on B", func(t *testing.T) {
		start := time.Now()
		r := a.call(t, "revoke_edge_key", map[string]any{"token": clusterToken, "edge": "victim"})
		if r.IsError || r.Structured["revoked"] != true || r.Structured["fingerprint"] != c.edges["victim"].key.Fingerprint {
			t.Fatalf("revoke_edge_key victim on gw-a: %s", r.Text)
		}
		revokedAndDropped(t, "victim", b, start)
		if r := b.call(t, "run_command", map[string]any{"edge": "victim", "argv": []any{"true"}}); !r.IsError {
			t.Errorf("run_command on the revoked edge through its old holder: %s", r.Text)
		}
	})

	t.Run("keys revoke on A's files of an edge on C", func(t *testing.T) {
		start := time.Now()
		a.admin(t, "", "keys", "revoke", "victim2")
		revokedAndDropped(t, "victim2", cc, start)
	})

	t.Run("register_edge_key on C admits on A", func(t *testing.T) {
		k := c.f.newEdgeKey(t)
		r := cc.call(t, "register_edge_key", map[string]any{"token": clusterToken, "public_key": k.Line, "name": "newcomer", "labels": map[string]any{"role": "new"}})
		if r.IsError {
			t.Fatalf("register_edge_key on gw-c: %s", r.Text)
		}
		c.waitAuthorizedEverywhere(t, k, true, keySyncWait)
		c.edges["newcomer"] = &clusterEdge{spec: clusterEdgeSpec{name: "newcomer"}, key: k, state: t.TempDir(), lb: newToxiproxy(t, a.addr)}
		c.startEdge(t, "newcomer")
		c.waitHeld(t, "newcomer", "gw-a", clusterWait)
		if e, _ := b.edgeByFP(t, k.Fingerprint); e.Name != "newcomer" || e.Labels["role"] != "new" {
			t.Errorf("registered edge through gw-b: %+v", e)
		}
	})

	t.Run("keys add on B's files admits on C", func(t *testing.T) {
		k := c.f.newEdgeKey(t)
		b.admin(t, k.Line+"\n", "keys", "add", "--name", "cli-one", "--labels", "role=cli", "-")
		c.waitAuthorizedEverywhere(t, k, true, keySyncWait)
		c.edges["cli-one"] = &clusterEdge{spec: clusterEdgeSpec{name: "cli-one"}, key: k, state: t.TempDir(), lb: newToxiproxy(t, cc.addr)}
		c.startEdge(t, "cli-one")
		c.waitHeld(t, "cli-one", "gw-c", clusterWait)
		if e, _ := a.edgeByFP(t, k.Fingerprint); e.Name != "cli-one" || e.Labels["role"] != "cli" {
			t.Errorf("CLI-added edge through gw-a: %+v", e)
		}
	})

	t.Run("approve_edge on A admits on B", func(t *testing.T) {
		k := c.f.newEdgeKey(t)
		c.edges["stranger"] = &clusterEdge{spec: clusterEdgeSpec{name: "stranger"}, key: k, state: t.TempDir(), lb: newToxiproxy(t, a.addr)}
		c.startEdge(t, "stranger")
		if !waitFor(15*time.Second, func() bool {
			r := a.call(t, "list_pending_edges", map[string]any{"token": clusterToken})
			return !r.IsError && strings.Contains(r.Text, k.Fingerprint)
		}) {
			t.Fatal("unknown key not pending on gw-a")
		}
		r := a.call(t, "approve_edge", map[string]any{"token": clusterToken, "fingerprint": k.Fingerprint, "name": "approved-one", "labels": map[string]any{"role": "ok"}})
		if r.IsError {
			t.Fatalf("approve_edge on gw-a: %s", r.Text)
		}
		c.waitAuthorizedEverywhere(t, k, true, keySyncWait)
		c.waitHeld(t, "stranger", "gw-a", clusterWait)
		if err := c.edges["stranger"].lb.SetUpstream(b.addr); err != nil {
			t.Fatal(err)
		}
		c.waitHeld(t, "stranger", "gw-b", clusterWait)
		if e, _ := cc.edgeByFP(t, k.Fingerprint); e.Name != "approved-one" || e.Labels["role"] != "ok" {
			t.Errorf("approved edge through gw-c: %+v", e)
		}
	})
	if r := b.call(t, "run_command", map[string]any{"edge": "bystander", "argv": []any{"true"}}); r.IsError {
		t.Errorf("bystander after the key changes: %s", r.Text)
	}
}

// TestClusterNamesUnique: keys without a bound name asking the same name on different
// gateways get different names, the same on every gateway.
func TestClusterNamesUnique(t *testing.T) {
	t.Parallel()
	const races = 4 // pairs asking one name at the same moment: a race is lost only now and then
	specs := []clusterEdgeSpec{
		{name: "dup", unbound: true, at: 0, manual: true},
		{name: "dup-second", unbound: true, at: 1, manual: true},
	}
	for i := range races {
		specs = append(specs, clusterEdgeSpec{name: fmt.Sprintf("race%d", i), unbound: true, at: 1, manual: true},
			clusterEdgeSpec{name: fmt.Sprintf("race%d-second", i), unbound: true, at: 2, manual: true})
	}
	c := newCluster(t, nil, specs...)
	// Each pair asks one name: "dup", "race0", ….
	start := func(name, ask string) {
		e := c.edges[name]
		e.proc = c.f.startEdge(t, e.key, e.lb.Addr(), c.withEdgeEnv(map[string]string{"EDGE_STATE_DIR": e.state, "EDGE_NAME": ask}))
	}
	nameOf := func(g *clusterGW, name string) string {
		es := g.entries(t, c.edges[name].key.Fingerprint)
		if len(es) != 1 || !es[0].Connected {
			return ""
		}
		return es[0].Name
	}
	check := func(first, second, ask string, ordered bool) {
		t.Helper()
		c.waitHeld(t, first, c.gws[c.edges[first].spec.at].id, clusterWait)
		c.waitHeld(t, second, c.gws[c.edges[second].spec.at].id, clusterWait)
		n1, n2 := nameOf(c.gws[0], first), nameOf(c.gws[0], second)
		for _, g := range c.gws {
			if m1, m2 := nameOf(g, first), nameOf(g, second); m1 != n1 || m2 != n2 {
				t.Errorf("gateway %s names the two edges %q and %q, gw-a %q and %q", g.id, m1, m2, n1, n2)
			}
		}
		if n1 == n2 {
			t.Errorf("two keys asking %q on two gateways both got %q", ask, n1)
			return
		}
		if ordered && (n1 != ask || !strings.HasPrefix(n2, ask+"-")) {
			t.Errorf("names %q (first) and %q (second), want %q and %q-<fingerprint>", n1, n2, ask, ask)
		}
		if !ordered && !(n1 == ask && strings.HasPrefix(n2, ask+"-") || n2 == ask && strings.HasPrefix(n1, ask+"-")) {
			t.Errorf("names %q and %q, want %q and %q-<fingerprint>", n1, n2, ask, ask)
		}
		for _, g := range c.gws {
			for _, n := range []string{n1, n2} {
				if r := g.call(t, "run_command", map[string]any{"edge": n, "argv": []any{"true"}}); r.IsError {
					t.Errorf("run_command on %s through %s: %s", n, g.id, r.Text)
				}
			}
		}
	}
	// One after the other, on gw-a then gw-b.
	start("dup", "dup")
	c.waitHeld(t, "dup", "gw-a", clusterWait)
	start("dup-second", "dup")
	check("dup", "dup-second", "dup", true)
	// At the same moment, on gw-b and gw-c.
	for i := range races {
		n := fmt.Sprintf("race%d", i)
		start(n, n)
		start(n+"-second", n)
	}
	for i := range races {
		n := fmt.Sprintf("race%d", i)
		check(n, n+"-second", n, false)
	}
}

// TestClusterReconnectEvicts: an edge that connects to another gateway while its old session
// still looks alive (the old process is frozen; keepalives would take 30 s to notice) evicts
// that session: every gateway shows it once, on the new gateway, within seconds. First a
// move a few seconds after the old session began, then a quick second move (usually within
// the same second as the session it replaces).
func TestClusterReconnectEvicts(t *testing.T) {
	t.Parallel()
	c := newCluster(t, map[string]string{"KEEPALIVE_INTERVAL": "10s"},
		clusterEdgeSpec{name: "mover", at: 0},
		clusterEdgeSpec{name: "stay", at: 2},
	)
	e := c.edges["mover"]
	move := func(old *localfleet.Proc, to *clusterGW) *edgeProc {
		t.Helper()
		if err := old.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = old.Signal(syscall.SIGCONT) }) // then killed at cleanup
		before, _ := to.edgeByFP(t, e.key.Fingerprint)
		start := time.Now()
		p := c.f.startEdge(t, e.key, to.addr, c.withEdgeEnv(map[string]string{"EDGE_STATE_DIR": t.TempDir(), "EDGE_NAME": "mover"}))
		c.waitHeld(t, "mover", to.id, 8*time.Second)
		after, _ := to.edgeByFP(t, e.key.Fingerprint)
		t.Logf("mover shown on %s alone by every gateway %v after the new session started (old session connected_since %s, new %s)",
			to.id, time.Since(start).Round(time.Millisecond), before.ConnectedSince, after.ConnectedSince)
		for _, g := range c.gws {
			st := g.status(t, map[string]any{"limit": 1000})
			n := 0
			for _, s := range st.Edges {
				if s.Name == "mover" || s.Fingerprint == e.key.Fingerprint {
					n++
				}
			}
			if n != 1 {
				t.Errorf("gateway %s lists mover %d times: %+v", g.id, n, st.Edges)
			}
			if r := g.call(t, "run_command", map[string]any{"edge": "mover", "argv": []any{"echo", "moved"}}); r.IsError || decode[execOut](t, r.Structured).Stdout != "moved\n" {
				t.Errorf("run_command on mover through %s: %s", g.id, r.Text)
			}
		}
		return p
	}

	time.Sleep(1100 * time.Millisecond) // the new session starts in a later second than the old
	p2 := move(e.proc.Proc, c.gw("gw-b"))
	// The old holder closed the stale session: its audit says so for this key.
	a := c.gw("gw-a")
	if !waitFor(5*time.Second, func() bool {
		for _, l := range a.auditLines(t) {
			if l["event"] == "edge_disconnect" && l["fingerprint"] == e.key.Fingerprint {
				return true
			}
		}
		return false
	}) {
		t.Errorf("gw-a has no edge_disconnect audit line for the evicted session")
	}
	t.Run("quick second move", func(t *testing.T) {
		move(p2.Proc, c.gw("gw-c"))
	})
}

// TestClusterGatewayKilled: a gateway is SIGKILLed; its edge, failed over by the load
// balancer, comes back on another gateway, and a job started through the dead gateway is
// read to its end through a third. A call for an edge the dead gateway held answers at once.
func TestClusterGatewayKilled(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil,
		clusterEdgeSpec{name: "ea", at: 0},
		clusterEdgeSpec{name: "ek", at: 2},
		clusterEdgeSpec{name: "stranded", at: 2},
	)
	a, b, dead := c.gw("gw-a"), c.gw("gw-b"), c.gw("gw-c")
	r := dead.call(t, "start_command", map[string]any{"edge": "ek", "command": "for i in $(seq 1 20); do echo k$i; sleep 0.2; done; exit 5"})
	if r.IsError {
		t.Fatal(r.Text)
	}
	j := decode[jobOut](t, r.Structured)
	time.Sleep(500 * time.Millisecond)
	if err := dead.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	// The stranded edge keeps dialling the dead gateway: a call for it fails at once.
	start := time.Now()
	rr := a.call(t, "run_command", map[string]any{"edge": "stranded", "argv": []any{"true"}})
	took := time.Since(start)
	t.Logf("run_command on an edge of the killed gateway, %v after the kill: %v after %v: %s", start.Sub(killed).Round(time.Millisecond), rr.IsError, took.Round(time.Millisecond), rr.Text)
	if !rr.IsError || took > 5*time.Second {
		t.Errorf("run_command on an edge of the killed gateway: isError %v after %v: %s; want an isError result within 5 s", rr.IsError, took, rr.Text)
	}
	if !strings.Contains(rr.Text, "cannot be reached") && !strings.Contains(rr.Text, "not connected") {
		t.Errorf("run_command on an edge of the killed gateway: %q, want it to say the gateway cannot be reached (or, once its routes expired, that the edge is not connected)", rr.Text)
	}

	// The load balancer sends ek to gw-a.
	if err := c.edges["ek"].lb.SetUpstream(a.addr); err != nil {
		t.Fatal(err)
	}
	c.waitHeld(t, "ek", "gw-a", clusterWait)
	t.Logf("ek back on gw-a %v after the kill", time.Since(killed).Round(time.Millisecond))
	final, output := b.pollJob(t, j.JobID, 30*time.Second)
	var want strings.Builder
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&want, "k%d\n", i)
	}
	if final.Status != "exited" || final.ExitCode == nil || *final.ExitCode != 5 || output != want.String() {
		t.Errorf("job started through the killed gateway, read through gw-b: %+v output %q", final, output)
	}
	if r := a.call(t, "list_commands", map[string]any{"edge": "ek"}); r.IsError || !strings.Contains(r.Text, j.JobID) {
		t.Errorf("list_commands through gw-a: %s", r.Text)
	}

	// The edge left on the dead gateway is shown as not connected, on no gateway.
	fp := c.edges["stranded"].key.Fingerprint
	if !waitFor(15*time.Second, func() bool {
		for _, g := range []*clusterGW{a, b} {
			for _, s := range g.entries(t, fp) {
				if s.Connected || s.Gateway != "" {
					return false
				}
			}
		}
		return true
	}) {
		ea, _ := a.edgeByFP(t, fp)
		t.Errorf("15 s after its gateway was killed, gw-a still shows stranded as %+v, want not connected, gateway \"\"", ea)
	}
	if r := b.call(t, "run_command", map[string]any{"edge": "ea", "argv": []any{"true"}}); r.IsError {
		t.Errorf("ea through gw-b after gw-c died: %s", r.Text)
	}
}

// TestClusterNATSOutage: with NATS stopped, each gateway keeps serving its own edges and a
// call for an edge on another gateway fails at once with the clear message; once NATS is back,
// remote calls work again within 15 s.
func TestClusterNATSOutage(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil,
		clusterEdgeSpec{name: "ea", at: 0},
		clusterEdgeSpec{name: "eb", at: 1},
		clusterEdgeSpec{name: "ec", at: 2},
	)
	a, b := c.gw("gw-a"), c.gw("gw-b")
	echo := func(g *clusterGW, edge string) result {
		return g.call(t, "run_command", map[string]any{"edge": edge, "argv": []any{"echo", edge}})
	}
	if r := echo(a, "eb"); r.IsError {
		t.Fatalf("remote call before the outage: %s", r.Text)
	}
	c.nats.Stop()
	stopped := time.Now()

	start := time.Now()
	r := echo(a, "eb")
	took := time.Since(start)
	t.Logf("remote call %v after NATS stopped: isError %v after %v: %s", start.Sub(stopped).Round(time.Millisecond), r.IsError, took.Round(time.Millisecond), r.Text)
	if !r.IsError || took > 3*time.Second {
		t.Errorf("remote call with NATS down: isError %v after %v, want an isError result within 3 s", r.IsError, took)
	}
	for _, want := range []string{"connected to gateway", "gw-b", "cannot be reached"} {
		if !strings.Contains(r.Text, want) {
			t.Errorf("remote call with NATS down: %q does not contain %q", r.Text, want)
		}
	}
	for _, g := range c.gws {
		local := map[string]string{"gw-a": "ea", "gw-b": "eb", "gw-c": "ec"}[g.id]
		if r := echo(g, local); r.IsError || decode[execOut](t, r.Structured).Stdout != local+"\n" {
			t.Errorf("local call through %s with NATS down: %s", g.id, r.Text)
		}
	}
	if r := echo(b, "ec"); !r.IsError || !strings.Contains(r.Text, "gw-c") {
		t.Errorf("remote call gw-b→ec with NATS down: isError %v %s", r.IsError, r.Text)
	}
	if !waitFor(5*time.Second, func() bool { st := a.status(t, nil); return st.Cluster != nil && !st.Cluster.Connected }) {
		t.Errorf("gw-a's get_status cluster.connected still true 5 s after NATS stopped")
	}
	// Once the gateway knows NATS is gone, a remote call fails at once.
	start = time.Now()
	r = echo(a, "eb")
	took = time.Since(start)
	t.Logf("remote call with cluster.connected false: isError %v after %v: %s", r.IsError, took.Round(time.Millisecond), r.Text)
	if !r.IsError || took > 3*time.Second || !strings.Contains(r.Text, "connected to gateway") || !strings.Contains(r.Text, "gw-b") || !strings.Contains(r.Text, "cannot be reached") {
		t.Errorf("remote call with NATS known down: isError %v after %v: %s; want the message within 3 s", r.IsError, took, r.Text)
	}

	if err := c.nats.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	var ab, bc result
	if !waitFor(15*time.Second, func() bool {
		ab, bc = echo(a, "eb"), echo(b, "ec")
		return !ab.IsError && !bc.IsError
	}) {
		t.Fatalf("remote calls still fail 15 s after NATS came back:\ngw-a→eb: isError %v %s\ngw-b→ec: isError %v %s", ab.IsError, ab.Text, bc.IsError, bc.Text)
	}
	t.Logf("remote calls work again %v after NATS came back", time.Since(restarted).Round(time.Millisecond))
	for _, name := range []string{"ea", "eb", "ec"} {
		c.waitHeld(t, name, c.gws[c.edges[name].spec.at].id, 10*time.Second)
	}
	for _, g := range c.gws {
		if !waitFor(10*time.Second, func() bool { st := g.status(t, nil); return st.Cluster != nil && st.Cluster.Connected }) {
			t.Errorf("gateway %s: cluster.connected false after NATS came back", g.id)
		}
	}
}

// TestClusterStandalone: without CLUSTER_NATS_URL a gateway reports its GATEWAY_ID, holds its
// own edges (gateway = its id) and shows the cluster as disabled, with no peers ([] not null).
func TestClusterStandalone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "solo-edge", "")
	g := f.startGateway(t, map[string]string{"GATEWAY_ID": "solo"})
	f.startEdge(t, k, g.addr, nil)
	e := g.waitConnected(t, k.Fingerprint, nil)
	if e.Gateway != "solo" {
		t.Errorf("edge gateway = %q, want solo", e.Gateway)
	}
	r := g.call(t, "get_status", nil)
	st := decode[statusOut](t, r.Structured)
	if st.Gateway.ID != "solo" {
		t.Errorf("gateway.id = %q, want solo", st.Gateway.ID)
	}
	cl, _ := r.Structured["cluster"].(map[string]any)
	if st.Cluster == nil || st.Cluster.Enabled || st.Cluster.Connected || cl == nil || cl["peers"] == nil || len(st.Cluster.Peers) != 0 {
		t.Errorf("cluster = %v, want {enabled: false, connected: false, peers: []}", r.Structured["cluster"])
	}
	if r := g.call(t, "run_command", map[string]any{"edge": "solo-edge", "argv": []any{"true"}}); r.IsError {
		t.Errorf("run_command: %s", r.Text)
	}
}
