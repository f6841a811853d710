package localfleet

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestCleanEnv(t *testing.T) {
	t.Setenv("EDGE_GATEWAY", "example.com:22")
	t.Setenv("SSH_PORT", "22")
	t.Setenv("SSH_PORTAL", "kept")
	t.Setenv("DEMO_KEEP", "1")
	tests := []struct {
		name     string
		prefixes []string
		gone     []string
		kept     []string
	}{
		{"edge", []string{"EDGE_"}, []string{"EDGE_GATEWAY="}, []string{"SSH_PORT=", "DEMO_KEEP="}},
		{"gateway", GatewayVarPrefixes(), []string{"SSH_PORT="}, []string{"SSH_PORTAL=", "EDGE_GATEWAY=", "DEMO_KEEP="}},
		{"none", nil, nil, []string{"EDGE_GATEWAY=", "SSH_PORT=", "DEMO_KEEP="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := CleanEnv(tt.prefixes...)
			has := func(prefix string) bool {
				return slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, prefix) })
			}
			for _, g := range tt.gone {
				if has(g) {
					t.Errorf("%s still in the environment", g)
				}
			}
			for _, k := range tt.kept {
				if !has(k) {
					t.Errorf("%s missing from the environment", k)
				}
			}
		})
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
			_, err := Prepare(context.Background(), dir, "/nonexistent/mcp-ssh-edge", tt.edges...)
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
// runs a command on each and stops everything.
func TestFleet(t *testing.T) {
	binDir := os.Getenv("BIN_DIR")
	if binDir == "" {
		t.Skip("BIN_DIR not set: run via `make test` (needs the built binaries)")
	}
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	l, err := Prepare(ctx, dir, filepath.Join(binDir, "mcp-ssh-edge"),
		EdgeSpec{Name: "one", Labels: "role=a"}, EdgeSpec{Name: "two", ReportedLabels: "site=x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartEdge("three"); err == nil {
		t.Fatal("StartEdge of an edge that is not enrolled succeeded")
	}
	var edges []*Edge
	for _, name := range []string{"one", "two"} {
		e, err := l.StartEdge(name)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Stop()
		edges = append(edges, e)
	}
	g, err := StartGateway(ctx, l, filepath.Join(binDir, "mcp-ssh-gateway"), "EXEC_TIMEOUT=10s")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := g.Close(); err != nil {
			t.Error(err)
		}
	}()
	if g.PID() <= 0 {
		t.Errorf("gateway PID = %d", g.PID())
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
