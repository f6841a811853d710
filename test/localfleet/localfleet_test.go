package localfleet

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

// TestBaseEnv checks that nothing of the caller's environment but PATH reaches a child: no
// gateway or edge setting, no log setting, no HOME.
func TestBaseEnv(t *testing.T) {
	t.Setenv("EDGE_GATEWAY", "example.com:22")
	t.Setenv("SSH_PORT", "22")
	t.Setenv("LOG_LEVEL", "debug")
	t.Setenv("MCP_TRANSPORT", "http")
	t.Setenv("DEMO_KEEP", "1")
	home := t.TempDir()
	env := BaseEnv(home)
	tests := []struct {
		name string
		kv   string // NAME=value, or NAME= for a variable that must be absent
		want bool
	}{
		{"edge setting", "EDGE_GATEWAY=", false},
		{"gateway setting", "SSH_PORT=", false},
		{"log setting", "LOG_LEVEL=", false},
		{"transport", "MCP_TRANSPORT=", false},
		{"anything else", "DEMO_KEEP=", false},
		{"PATH", "PATH=" + os.Getenv("PATH"), true},
		{"HOME", "HOME=" + home, true},
		{"locale", "LANG=C", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			has := slices.ContainsFunc(env, func(kv string) bool {
				if tt.want {
					return kv == tt.kv
				}
				return strings.HasPrefix(kv, tt.kv)
			})
			if has != tt.want {
				t.Errorf("%s in the environment: %v, want %v (%q)", tt.kv, has, tt.want, env)
			}
		})
	}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "XDG_"); ok && !strings.Contains(v, home) {
			t.Errorf("%s is outside HOME %s", kv, home)
		}
	}
}

// TestPrepareRefuses checks the specs are validated before any key is generated.
func TestPrepareRefuses(t *testing.T) {
	tests := []struct {
		name    string
		edges   []EdgeSpec
		wantErr string
	}{
		{"upper case name", []EdgeSpec{{Name: "Edge"}}, "edge name"},
		{"empty name", []EdgeSpec{{Name: ""}}, "edge name"},
		{"duplicate", []EdgeSpec{{Name: "a"}, {Name: "a"}}, "twice"},
		{"quote in labels", []EdgeSpec{{Name: "a", Labels: `x="y"`}}, "labels"},
		{"newline in reported labels", []EdgeSpec{{Name: "a", ReportedLabels: "x=y\nz"}}, "labels"},
		{"too many", make([]EdgeSpec, maxEdges+1), "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := Prepare(context.Background(), Config{Dir: dir, EdgeBin: "/nonexistent/mcp-ssh-edge", Edges: tt.edges})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("Prepare wrote %d entries before refusing", len(entries))
			}
		})
	}
}

// TestFleet starts a gateway and two edges from the binaries `make build` wrote (BIN_DIR),
// one of them through the fault proxy, runs a command on each and stops everything.
func TestFleet(t *testing.T) {
	binDir := os.Getenv("BIN_DIR")
	if binDir == "" {
		t.Skip("BIN_DIR not set: run via `make test` (needs the built binaries)")
	}
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l, err := Prepare(ctx, Config{Dir: t.TempDir(), EdgeBin: filepath.Join(binDir, "mcp-ssh-edge"),
		Edges: []EdgeSpec{{Name: "one", Labels: "role=a"}, {Name: "two", ReportedLabels: "site=x"}}})
	if err != nil {
		t.Fatal(err)
	}
	g, err := StartGateway(ctx, l, filepath.Join(binDir, "mcp-ssh-gateway"), "EXEC_TIMEOUT=10s")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
		if g.Running() || g.Err() != nil {
			t.Errorf("gateway after Close: running %v, %v; want exited 0", g.Running(), g.Err())
		}
	}()
	if g.PID() <= 0 {
		t.Errorf("gateway PID = %d", g.PID())
	}
	if host, port, err := net.SplitHostPort(g.SSHAddr()); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("SSHAddr = %q (%v), want 127.0.0.1 and the port the kernel picked", g.SSHAddr(), err)
	}
	if len(g.Tools()) == 0 {
		t.Error("no tools listed")
	}
	if _, err := l.StartEnrolled(g.SSHAddr(), "three"); err == nil {
		t.Fatal("StartEnrolled of an edge that is not enrolled succeeded")
	}
	px, err := NewProxy(g.SSHAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	if err := px.AddToxic("latency", map[string]any{"latency": 20}); err != nil {
		t.Fatal(err)
	}
	var edges []*Edge
	for name, addr := range map[string]string{"one": g.SSHAddr(), "two": px.Addr()} {
		e, err := l.StartEnrolled(addr, name)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Stop()
		edges = append(edges, e)
	}
	for _, e := range edges {
		if err := g.WaitForEdge(ctx, e); err != nil {
			t.Fatal(err)
		}
		raw, err := g.CallStructured(ctx, "run_command", map[string]any{"edge": e.Name, "argv": []string{"echo", e.Name}})
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Stdout   string `json:"stdout"`
			ExitCode int    `json:"exit_code"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatal(err)
		}
		if out.Stdout != e.Name+"\n" || out.ExitCode != 0 {
			t.Errorf("%s: stdout %q exit %d", e.Name, out.Stdout, out.ExitCode)
		}
	}
	if err := px.RemoveToxic("latency"); err != nil {
		t.Fatal(err)
	}
	if err := px.RemoveToxic("latency"); err == nil {
		t.Error("removing a toxic twice succeeded")
	}
	// A tool error is a result for Call and an error for CallStructured.
	res, err := g.Call(ctx, "run_command", map[string]any{"edge": "nope", "argv": []string{"true"}})
	if err != nil || !res.IsError {
		t.Fatalf("unknown edge: res %+v err %v, want an isError result", res, err)
	}
	if _, err := g.CallStructured(ctx, "run_command", map[string]any{"edge": "nope", "argv": []string{"true"}}); err == nil {
		t.Fatal("CallStructured on an isError result returned no error")
	}
	edges[0].Stop()
	if err := edges[0].Exited(); err == nil {
		t.Fatal("Exited after Stop = nil")
	}
	edges[0].Stop() // twice is fine
}

// TestAuthorize checks the lines Authorize appends, and what it refuses to write.
func TestAuthorize(t *testing.T) {
	dir := t.TempDir()
	l, err := Prepare(context.Background(), Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k := EdgeKey{Public: l.HostKey} // any public key will do
	tests := []struct {
		name, edge, labels string
		want               string // prefix of the appended line; "" for a refusal
	}{
		{"bare key", "", "", "ssh-ed25519 "},
		{"name", "cam", "", `name="cam" ssh-ed25519 `},
		{"name and labels", "cam", "role=x,site=y", `name="cam",labels="role=x,site=y" ssh-ed25519 `},
		{"labels only", "", "role=x", `labels="role=x" ssh-ed25519 `},
		{"bad name", "Cam!", "", ""},
		{"quote in labels", "cam", `x="y"`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := os.ReadFile(l.AuthorizedKeys)
			err := l.Authorize(k, tt.edge, tt.labels)
			after, _ := os.ReadFile(l.AuthorizedKeys)
			added := strings.TrimPrefix(string(after), string(before))
			if tt.want == "" {
				if err == nil || added != "" {
					t.Fatalf("err %v, appended %q; want a refusal and nothing written", err, added)
				}
				return
			}
			if err != nil || !strings.HasPrefix(added, tt.want) || strings.Count(added, "\n") != 1 {
				t.Fatalf("err %v, appended %q; want one line starting %q", err, added, tt.want)
			}
		})
	}
}

// TestNATS starts the in-process NATS server, writes a JetStream KV value, restarts the
// server on the same port and store, reads the value back over the same client (which
// reconnects by itself), and stops it leaving no goroutine behind.
func TestNATS(t *testing.T) {
	defer goleak.VerifyNone(t)
	n, err := StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	url := n.URL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":-1") {
		t.Fatalf("URL = %q", url)
	}
	reconnected := make(chan struct{}, 1)
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "localfleet"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	if n.URL() != url {
		t.Fatalf("URL after Restart = %q, want %q", n.URL(), url)
	}
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("client did not reconnect within 10 s of Restart")
	}
	var e jetstream.KeyValueEntry
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if e, err = kv.Get(ctx, "k"); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || string(e.Value()) != "v" {
		t.Fatalf("value after Restart: %v, %v", e, err)
	}
	nc.Close()
	n.Stop()
	if n.Running() {
		t.Fatal("Running after Stop")
	}
	n.Stop() // twice is fine
}

// TestProxySetUpstream re-points a proxy: a connection made after SetUpstream reaches the new
// upstream on the same proxy address.
func TestProxySetUpstream(t *testing.T) {
	defer goleak.VerifyNone(t)
	serve := func(word string) (net.Listener, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = c.Write([]byte(word))
				_ = c.Close()
			}
		}()
		return ln, nil
	}
	a, err := serve("a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := serve("b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	px, err := NewProxy(a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	read := func() string {
		c, err := net.DialTimeout("tcp", px.Addr(), 5*time.Second)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 8)
		n, _ := c.Read(buf)
		return string(buf[:n])
	}
	addr := px.Addr()
	if got := read(); got != "a" {
		t.Fatalf("before SetUpstream: read %q, want a", got)
	}
	if err := px.SetUpstream(b.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if px.Addr() != addr || px.Upstream() != b.Addr().String() {
		t.Fatalf("after SetUpstream: Addr %s (was %s), Upstream %s", px.Addr(), addr, px.Upstream())
	}
	if got := read(); got != "b" {
		t.Fatalf("after SetUpstream: read %q, want b", got)
	}
}

// TestCluster starts two gateways of one cluster on an in-process NATS server (StartCluster)
// and an edge on the first, and runs a command on it through the second.
func TestCluster(t *testing.T) {
	binDir := os.Getenv("BIN_DIR")
	if binDir == "" {
		t.Skip("BIN_DIR not set: run via `make test` (needs the built binaries)")
	}
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	l, err := Prepare(ctx, Config{Dir: dir, EdgeBin: filepath.Join(binDir, "mcp-ssh-edge"), Edges: []EdgeSpec{{Name: "one"}}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	gws, members, err := StartCluster(ctx, l, filepath.Join(binDir, "mcp-ssh-gateway"), n.URL(), []string{"gw-1", "gw-2"}, "KEEPALIVE_INTERVAL=1s")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, g := range gws {
			if err := g.Close(); err != nil {
				t.Error(err)
			}
		}
	}()
	if len(gws) != 2 || len(members) != 2 || members[1].ID != "gw-2" {
		t.Fatalf("StartCluster: %d gateways, members %+v", len(gws), members)
	}
	for i, m := range members {
		if m.AuthorizedKeys == l.AuthorizedKeys || m.StateDir == l.StateDir || !strings.HasPrefix(m.Dir, dir) {
			t.Errorf("member %s shares the Layout's files: %+v", m.ID, m)
		}
		if b, err := os.ReadFile(m.AuthorizedKeys); err != nil || !strings.Contains(string(b), `name="one"`) {
			t.Errorf("member %s authorized_keys: %q %v", m.ID, b, err)
		}
		if v := lastValue(m.GatewayEnv(), "HOST_KEY_FILE"); v != l.HostKeyFile {
			t.Errorf("member %s HOST_KEY_FILE = %q, want the Layout's %q", m.ID, v, l.HostKeyFile)
		}
		if gws[i].SSHAddr() == "" {
			t.Errorf("member %s has no SSH address", m.ID)
		}
	}
	if _, err := l.NewClusterMember("gw-1", n.URL()); err == nil {
		t.Error("a second member gw-1 was made")
	}
	px, err := NewProxy(gws[0].SSHAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	e, err := l.StartEnrolled(px.Addr(), "one")
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	for _, g := range gws {
		if err := g.WaitForEdge(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := gws[1].CallStructured(ctx, "run_command", map[string]any{"edge": "one", "argv": []string{"echo", "via-2"}})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Stdout string `json:"stdout"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.Stdout != "via-2\n" {
		t.Fatalf("run_command through gw-2: %s %v", raw, err)
	}
}
