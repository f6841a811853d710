package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

type fakeEdges []gateway.EdgeStatus

func (f fakeEdges) Edges(bool) []gateway.EdgeStatus { return f }

type fakeAudit uint64

func (f fakeAudit) Lines() uint64 { return uint64(f) }

// TestExposition scrapes the handler and checks every metric the gateway promises.
func TestExposition(t *testing.T) {
	m := New()
	m.Observe(fakeEdges{{Connected: true, InFlight: 2}, {Connected: true, InFlight: 1}}, fakeAudit(7))
	m.Handshake(gateway.HandshakeOK)
	m.Handshake(gateway.HandshakeUnknownKey)
	m.Handshake(gateway.HandshakeUnknownKey)
	m.RPC("exec", gateway.OutcomeOK, 30*time.Millisecond, 5, 100)
	m.RPC("exec", gateway.OutcomeEdgeError, time.Millisecond, 0, 0)
	m.RPC("upload", gateway.OutcomeOK, 2*time.Second, 1000, 0)

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		"mcp_ssh_gateway_edges_connected 2",
		"mcp_ssh_gateway_rpcs_in_flight 3",
		"mcp_ssh_gateway_audit_lines_total 7",
		`mcp_ssh_gateway_edge_handshakes_total{outcome="ok"} 1`,
		`mcp_ssh_gateway_edge_handshakes_total{outcome="unknown_key"} 2`,
		`mcp_ssh_gateway_edge_handshakes_total{outcome="timeout"} 0`,
		`mcp_ssh_gateway_rpcs_total{method="exec",outcome="ok"} 1`,
		`mcp_ssh_gateway_rpcs_total{method="exec",outcome="edge_error"} 1`,
		`mcp_ssh_gateway_rpc_duration_seconds_bucket{method="exec",outcome="ok",le="0.05"} 1`,
		`mcp_ssh_gateway_rpc_duration_seconds_bucket{method="upload",outcome="ok",le="1"} 0`,
		`mcp_ssh_gateway_rpc_duration_seconds_count{method="upload",outcome="ok"} 1`,
		`mcp_ssh_gateway_rpc_bytes_total{direction="to_edge"} 1005`,
		`mcp_ssh_gateway_rpc_bytes_total{direction="from_edge"} 100`,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", text)
	}
}

// fakeCluster is a cluster fleet of three gateways.
type fakeCluster struct{ fakeEdges }

func (fakeCluster) Info() gateway.Info {
	return gateway.Info{ID: "gw-a", Cluster: &gateway.ClusterInfo{Connected: true,
		Peers: []gateway.PeerInfo{{ID: "gw-b"}, {ID: "gw-c"}}}}
}

// TestClusterExposition: the cluster gauges count peers and edges by holder, with a zero for
// a gateway that holds none.
func TestClusterExposition(t *testing.T) {
	m := New()
	m.ObserveCluster(fakeCluster{fakeEdges{{Connected: true, Gateway: "gw-a"}, {Connected: true, Gateway: "gw-b"},
		{Connected: true, Gateway: "gw-b"}}})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		"mcp_ssh_gateway_cluster_connected 1",
		"mcp_ssh_gateway_cluster_peers 2",
		`mcp_ssh_gateway_cluster_edges_connected{gateway="gw-a"} 1`,
		`mcp_ssh_gateway_cluster_edges_connected{gateway="gw-b"} 2`,
		`mcp_ssh_gateway_cluster_edges_connected{gateway="gw-c"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}
