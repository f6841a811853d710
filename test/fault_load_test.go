package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
)

// TestFaultConcurrentCalls: 1,000 run_command calls at once over 50 edges (simulated edges:
// the edge's own tunnel and RPC code, in this process) through the real gateway. Every call
// returns its own output exactly once, each edge ran each command once, and the audit log
// has exactly one intent and one matching outcome per call.
func TestFaultConcurrentCalls(t *testing.T) {
	t.Parallel()
	const edges, calls = 50, 1000
	f := newFixture(t)
	ids, err := scale.NewIdentities(edges, "load")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AuthorizeLines(string(scale.AuthorizedKeys(ids))); err != nil {
		t.Fatal(err)
	}
	// Keepalives far above the test's length: this test is about 1,000 calls each answered
	// once, and under -race beside the parallel tests a 1 s keepalive (dead after 3 s without
	// an answer) can drop a starved but healthy edge mid-test.
	g := f.startGateway(t, map[string]string{"LOG_LEVEL": "info", "KEEPALIVE_INTERVAL": "30s"})
	edgeState := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fleet, err := scale.StartFleet(ctx, scale.FleetConfig{
		Gateway: g.addr, HostKey: f.HostKeyFP, StateDir: edgeState,
		KeepaliveInterval: 30 * time.Second, BackoffMax: 2 * time.Second,
	}, ids)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fleet.Stop(); err != nil {
			t.Errorf("fleet: %v", err)
		}
	})
	if !waitFor(30*time.Second, func() bool { return g.status(t, map[string]any{"limit": 1}).Totals.Connected == edges }) {
		t.Fatalf("%d edges not all connected", edges)
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]string, calls)
	for i := range calls {
		wg.Go(func() {
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
			defer ccancel()
			res, err := g.c.CallTool(cctx, callReq("run_command", map[string]any{
				"edge": ids[i%edges].Name, "argv": []string{"echo", callID(i)}}))
			switch {
			case err != nil:
				errs[i] = "JSON-RPC error: " + err.Error()
			case res.IsError:
				errs[i] = fmt.Sprintf("isError: %+v", res.Content)
			default:
				var out execOut
				b, _ := json.Marshal(res.StructuredContent)
				if err := json.Unmarshal(b, &out); err != nil {
					errs[i] = err.Error()
				} else if out.Stdout != callID(i)+"\n" {
					errs[i] = fmt.Sprintf("stdout %q, want %q (result %+v)", out.Stdout, callID(i)+"\n", out)
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d concurrent run_command calls over %d edges in %v", calls, edges, time.Since(start).Round(time.Millisecond))
	failed := 0
	for i := range calls {
		if errs[i] != "" {
			if failed++; failed <= 5 {
				t.Errorf("call %d: %s", i, errs[i])
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d calls failed", failed, calls)
	}

	// Audit: one intent per call (found by its argv) and one outcome with its request_id.
	type line struct {
		Event     string   `json:"event"`
		RequestID string   `json:"request_id"`
		Tool      string   `json:"tool"`
		Edge      string   `json:"edge"`
		Argv      []string `json:"argv"`
		Outcome   string   `json:"outcome"`
		ExitCode  *int     `json:"exit_code"`
	}
	intents := map[string][]line{} // call id → intents
	outcomes := map[string][]line{}
	sc := bufio.NewScanner(strings.NewReader(g.auditLog()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		switch {
		case l.Event == "intent" && l.Tool == "run_command" && len(l.Argv) == 2:
			intents[l.Argv[1]] = append(intents[l.Argv[1]], l)
		case l.Event == "outcome" && l.Tool == "run_command":
			outcomes[l.RequestID] = append(outcomes[l.RequestID], l)
		}
	}
	ran := edgeRuns(t, edgeState)
	for i := range calls {
		id := callID(i)
		in := intents[id]
		if len(in) != 1 {
			t.Errorf("call %d: %d audit intent lines, want 1", i, len(in))
			continue
		}
		if in[0].Edge != ids[i%edges].Name || in[0].RequestID == "" {
			t.Errorf("call %d: intent %+v, want edge %s and a request_id", i, in[0], ids[i%edges].Name)
		}
		out := outcomes[in[0].RequestID]
		if len(out) != 1 || out[0].Outcome != "ok" || out[0].ExitCode == nil || *out[0].ExitCode != 0 || out[0].Edge != in[0].Edge {
			t.Errorf("call %d: outcome lines %+v, want one ok with exit_code 0 on %s", i, out, in[0].Edge)
		}
		if ran[id] != 1 {
			t.Errorf("call %d ran %d times on the edges, want once", i, ran[id])
		}
	}
}

func callID(i int) string { return fmt.Sprintf("call-%04d", i) }

// edgeRuns counts, per call id, the exec lines of the simulated edges' rpc.log.
func edgeRuns(t *testing.T, stateDir string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "rpc.log"))
	if err != nil {
		t.Fatalf("edges' rpc.log: %v", err)
	}
	n := map[string]int{}
	for l := range strings.Lines(string(b)) {
		var e struct {
			Method  string   `json:"method"`
			Argv    []string `json:"argv"`
			Outcome string   `json:"outcome"`
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Method == "exec" && len(e.Argv) == 2 && e.Outcome == "ok" {
			n[e.Argv[1]]++
		}
	}
	return n
}
