package tools_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
)

func testInfo() gateway.Info {
	return gateway.Info{
		Version: "gw", Mode: "reverse", SSHAddr: "127.0.0.1:2222", PublicAddr: "gw.example:2222",
		HostKeyFingerprint: "SHA256:abc", HostKeyLine: "ssh-ed25519 AAAA", Started: time.Now().Add(-90 * time.Second),
	}
}

func fleetOf(n int) []gateway.EdgeStatus {
	var out []gateway.EdgeStatus
	for i := range n {
		e := gateway.EdgeStatus{Name: fmt.Sprintf("edge-%04d", i), Fingerprint: fmt.Sprintf("SHA256:fp%d", i), Connected: i%2 == 0}
		if i%3 == 0 {
			e.Labels = map[string]string{"role": "cam"}
			e.ConnectedSince = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
		}
		out = append(out, e)
	}
	return out
}

func TestGetStatusPagination(t *testing.T) {
	f := &fakeFleet{info: testInfo(), edges: fleetOf(250)}
	h := newHarness(t, f, baseConfig())
	seen := map[string]bool{}
	cursor := ""
	var sizes []int
	for page := 0; page < 5; page++ {
		args := map[string]any{"limit": 100}
		if cursor != "" {
			args["cursor"] = cursor
		}
		res := h.call("get_status", args)
		if res.IsError {
			t.Fatalf("page %d: %s", page, text(res))
		}
		var out tools.StatusOutput
		structured(t, res, &out)
		if out.Totals.Known != 250 || out.Totals.Connected != 125 {
			t.Fatalf("totals = %+v", out.Totals)
		}
		sizes = append(sizes, len(out.Edges))
		for _, e := range out.Edges {
			if seen[e.Name] {
				t.Fatalf("duplicate %s", e.Name)
			}
			seen[e.Name] = true
		}
		cursor = out.NextCursor
		if cursor == "" {
			break
		}
	}
	if fmt.Sprint(sizes) != "[100 100 50]" || len(seen) != 250 {
		t.Fatalf("page sizes %v, %d distinct", sizes, len(seen))
	}
}

func TestGetStatusFields(t *testing.T) {
	f := &fakeFleet{info: testInfo(), edges: fleetOf(7)}
	cfg := baseConfig()
	cfg.ProvisionToken = "tok"
	h := newHarness(t, f, cfg)
	res := h.call("get_status", map[string]any{"connected_only": true})
	var out tools.StatusOutput
	structured(t, res, &out)
	if len(out.Edges) != 4 || out.NextCursor != "" {
		t.Fatalf("connected_only: %d edges, cursor %q", len(out.Edges), out.NextCursor)
	}
	g := out.Gateway
	if g.Version != "test" || g.Mode != "reverse" || g.PublicAddr != "gw.example:2222" || !g.ProvisioningEnabled ||
		g.UptimeSeconds < 89 || g.UptimeSeconds > 3600 {
		t.Errorf("gateway = %+v", g)
	}
	e0 := out.Edges[0]
	if e0.ConnectedSince != "2026-01-02T02:04:05Z" || e0.LastSeen != "" || e0.Labels["role"] != "cam" {
		t.Errorf("edge 0 = %+v", e0)
	}
	if e1 := out.Edges[1]; e1.Labels == nil || e1.ReportedLabels == nil || e1.ConnectedSince != "" {
		t.Errorf("edge without labels = %+v", e1)
	}
}

func TestGetStatusEdgeCases(t *testing.T) {
	tests := []struct {
		name    string
		edges   int
		args    map[string]any
		wantErr string
		want    int
	}{
		{"empty fleet", 0, nil, "", 0},
		{"limit too big", 3, map[string]any{"limit": 1001}, "out of range", 0},
		{"negative limit", 3, map[string]any{"limit": -1}, "out of range", 0},
		{"bad cursor", 3, map[string]any{"cursor": "!!"}, "next_cursor", 0},
		{"exact page", 3, map[string]any{"limit": 3}, "", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, &fakeFleet{info: testInfo(), edges: fleetOf(tc.edges)}, baseConfig())
			res := h.call("get_status", tc.args)
			if tc.wantErr != "" {
				if !res.IsError || !strings.Contains(text(res), tc.wantErr) {
					t.Fatalf("got isError=%v %q", res.IsError, text(res))
				}
				return
			}
			var out tools.StatusOutput
			structured(t, res, &out)
			if res.IsError || len(out.Edges) != tc.want || out.NextCursor != "" {
				t.Fatalf("got %d edges, cursor %q", len(out.Edges), out.NextCursor)
			}
		})
	}
}

func TestGetAgentPubkey(t *testing.T) {
	h := newHarness(t, &fakeFleet{info: testInfo()}, baseConfig())
	res := h.call("get_agent_pubkey", nil)
	var out tools.PubkeyOutput
	structured(t, res, &out)
	if out.PublicKey != "ssh-ed25519 AAAA" || out.Fingerprint != "SHA256:abc" ||
		out.EdgeConfig != "EDGE_GATEWAY=gw.example:2222\nEDGE_GATEWAY_HOST_KEY=SHA256:abc" {
		t.Fatalf("got %+v", out)
	}
}
