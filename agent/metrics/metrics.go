// Package metrics exposes what the gateway does in the Prometheus text format: connected
// edges, edge handshakes by outcome, RPCs by method and outcome with their latency, bytes
// moved, calls in flight and audit lines written. It implements gateway.Metrics.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// namespace prefixes every metric name.
const namespace = "mcp_ssh_gateway"

// rpcBuckets spans a quick info call (milliseconds) to an hour-long command (EXEC_TIMEOUT_MAX).
var rpcBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// Edges is what the gauges read at scrape time (a *gateway.Gateway).
type Edges interface {
	Edges(connectedOnly bool) []gateway.EdgeStatus
}

// AuditLines counts the audit lines written (an *audit.Logger).
type AuditLines interface {
	Lines() uint64
}

// Metrics holds the gateway's collectors in a registry of its own (no global state).
type Metrics struct {
	reg        *prometheus.Registry
	handshakes *prometheus.CounterVec
	rpcs       *prometheus.CounterVec
	rpcSeconds *prometheus.HistogramVec
	bytes      *prometheus.CounterVec
}

var _ gateway.Metrics = (*Metrics)(nil)

// New creates the collectors, plus the Go runtime and process ones, in a fresh registry.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "edge_handshakes_total",
			Help: "Edge connection attempts by outcome: ok, or why it failed (unknown_key, timeout, busy, protocol, bad_tunnel, penalized).",
		}, []string{"outcome"}),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rpcs_total",
			Help: "RPCs to edges by method and outcome.",
		}, []string{"method", "outcome"}),
		rpcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "rpc_duration_seconds",
			Help:    "Time from sending an RPC to its result, by method and outcome.",
			Buckets: rpcBuckets,
		}, []string{"method", "outcome"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "rpc_bytes_total",
			Help: "Payload bytes moved by RPCs: to_edge (stdin, uploads) and from_edge (output, downloads).",
		}, []string{"direction"}),
	}
	m.reg.MustRegister(m.handshakes, m.rpcs, m.rpcSeconds, m.bytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range []string{gateway.HandshakeOK, gateway.HandshakeUnknownKey, gateway.HandshakeTimeout} {
		m.handshakes.WithLabelValues(o) // present at 0 from the start, so rate() works at once
	}
	m.bytes.WithLabelValues("to_edge")
	m.bytes.WithLabelValues("from_edge")
	return m
}

// Observe registers the gauges read at scrape time: edges known and connected, RPCs in
// flight, and audit lines written. Call it once, after the gateway and audit log exist.
func (m *Metrics) Observe(edges Edges, audit AuditLines) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "edges_connected",
			Help: "Edges with a live tunnel.",
		}, func() float64 { return float64(len(edges.Edges(true))) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "rpcs_in_flight",
			Help: "RPCs running on edges now.",
		}, func() float64 {
			n := 0
			for _, e := range edges.Edges(true) {
				n += e.InFlight
			}
			return float64(n)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "audit_lines_total",
			Help: "Lines appended to the audit log since the gateway started.",
		}, func() float64 { return float64(audit.Lines()) }),
	)
}

// Handshake implements gateway.Metrics.
func (m *Metrics) Handshake(outcome string) {
	m.handshakes.WithLabelValues(outcome).Inc()
}

// RPC implements gateway.Metrics.
func (m *Metrics) RPC(method, outcome string, d time.Duration, sent, received int64) {
	m.rpcs.WithLabelValues(method, outcome).Inc()
	m.rpcSeconds.WithLabelValues(method, outcome).Observe(d.Seconds())
	if sent > 0 {
		m.bytes.WithLabelValues("to_edge").Add(float64(sent))
	}
	if received > 0 {
		m.bytes.WithLabelValues("from_edge").Add(float64(received))
	}
}

// Handler serves the metrics in the Prometheus text format. It does no authentication: the
// caller wraps it (METRICS_TOKEN).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second})
}

// Cluster is what the cluster gauges read at scrape time (the cluster's fleet).
type Cluster interface {
	Info() gateway.Info
	Edges(connectedOnly bool) []gateway.EdgeStatus
}

// ObserveCluster registers the cluster's gauges: whether the NATS link is up, the peers heard
// from, and the connected edges of the whole fleet by the gateway that holds them.
func (m *Metrics) ObserveCluster(c Cluster) {
	m.reg.MustRegister(&clusterCollector{c: c,
		connected: prometheus.NewDesc(namespace+"_cluster_connected", "1 while the gateway's NATS connection is up.", nil, nil),
		peers:     prometheus.NewDesc(namespace+"_cluster_peers", "Other gateways of the cluster heard from recently.", nil, nil),
		edges: prometheus.NewDesc(namespace+"_cluster_edges_connected", "Connected edges of the whole fleet, by the gateway they are connected to.",
			[]string{"gateway"}, nil),
	})
}

// clusterCollector reads the cluster at each scrape.
type clusterCollector struct {
	c                       Cluster
	connected, peers, edges *prometheus.Desc
}

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.connected
	ch <- cc.peers
	ch <- cc.edges
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	info := cc.c.Info()
	if info.Cluster == nil {
		return
	}
	up := 0.0
	if info.Cluster.Connected {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(cc.connected, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(cc.peers, prometheus.GaugeValue, float64(len(info.Cluster.Peers)))
	by := map[string]int{info.ID: 0}
	for _, p := range info.Cluster.Peers {
		by[p.ID] = 0
	}
	for _, e := range cc.c.Edges(true) {
		if e.Gateway != "" {
			by[e.Gateway]++
		}
	}
	for id, n := range by {
		ch <- prometheus.MustNewConstMetric(cc.edges, prometheus.GaugeValue, float64(n), id)
	}
}
