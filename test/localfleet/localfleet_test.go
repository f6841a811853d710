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
