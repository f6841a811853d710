package e2e

// The fault suite: links that break under a running gateway and edges, through an in-process
// toxiproxy between edge and gateway. Keepalive and backoff are short (1 s, 2–3 s) so that
// every fault resolves in seconds; the bounds are the product's own deadlines.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
)

const (
	faultKeepalive = time.Second // KEEPALIVE_INTERVAL and EDGE_KEEPALIVE_INTERVAL
	// slack absorbs a loaded, shared 2-core machine on top of a protocol deadline.
	slack = 2 * time.Second
)

// newToxiproxy starts an in-process toxiproxy on 127.0.0.1 forwarding to upstream.
func newToxiproxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "edge-gateway", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start toxiproxy: %v", err)
	}
	t.Cleanup(p.Stop)
	return p
}

// addToxic adds a toxic of type typ with attrs to both directions of p.
func addToxic(t *testing.T, p *toxiproxy.Proxy, typ string, attrs map[string]any) {
	t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		b, _ := json.Marshal(map[string]any{"name": typ + "_" + stream, "type": typ, "stream": stream, "attributes": attrs})
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
			t.Fatalf("add toxic %s %s: %v", typ, stream, err)
		}
	}
}

func removeToxic(t *testing.T, p *toxiproxy.Proxy, typ string) {
	t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		if err := p.Toxics.RemoveToxic(context.Background(), typ+"_"+stream); err != nil {
			t.Fatalf("remove toxic %s %s: %v", typ, stream, err)
		}
	}
}

// logSince reports whether a JSON log line after the first `after` bytes of log has msg and
// contains every one of parts.
func logHas(log string, after int, msg string, parts ...string) bool {
	if after > len(log) {
		return false
	}
	sc := bufio.NewScanner(strings.NewReader(log[after:]))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `"msg":"`+msg+`"`) {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// faultSetup is a real gateway and one real edge that reaches it through toxiproxy.
func faultSetup(t *testing.T) (*fixture, *gateway, *edgeProc, *toxiproxy.Proxy) {
	t.Helper()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "flaky", "")
	g := f.startGateway(t, map[string]string{"KEEPALIVE_INTERVAL": faultKeepalive.String()})
	px := newToxiproxy(t, g.addr)
	e := f.startEdge(t, k, px.Listen, map[string]string{
		"EDGE_KEEPALIVE_INTERVAL": faultKeepalive.String(),
		"EDGE_BACKOFF_MAX":        "2s",
	})
	g.waitConnected(t, k.fp, nil)
	return f, g, e, px
}

// TestFaultResetDuringRunCommand: the link is reset while run_command runs; the caller gets a
// clear "disconnected" result within the keepalive deadline, never a hang.
func TestFaultResetDuringRunCommand(t *testing.T) {
	t.Parallel()
	_, g, e, px := faultSetup(t)
	type outcome struct {
		r   result
		err error
		at  time.Time
	}
	done := make(chan outcome, 1)
	go func() {
		ctx, cancel := contextTimeout(callTimeout)
		defer cancel()
		req := callReq("run_command", map[string]any{"edge": "flaky", "argv": []string{"sleep", "30"}, "timeout_seconds": 60})
		res, err := g.c.CallTool(ctx, req)
		o := outcome{err: err, at: time.Now()}
		if err == nil {
			o.r = g.check(t, "run_command", res)
		}
		done <- o
	}()
	// The call is running once the edge has started the process.
	if !waitFor(10*time.Second, func() bool { return inFlight(t, g, e.key.fp) > 0 }) {
		t.Fatal("run_command never reached the edge")
	}
	time.Sleep(200 * time.Millisecond)
	reset := time.Now()
	addToxic(t, px, "reset_peer", map[string]any{"timeout": 0})
	select {
	case o := <-done:
		took := o.at.Sub(reset)
		t.Logf("run_command returned %v after the reset", took.Round(time.Millisecond))
		if o.err != nil {
			t.Fatalf("run_command: JSON-RPC error %v, want an isError result", o.err)
		}
		if !o.r.IsError || !strings.Contains(o.r.Text, "disconnected during the call") {
			t.Errorf("run_command after a reset: isError=%v %q, want the edge-disconnected error", o.r.IsError, o.r.Text)
		}
		if limit := 3 * faultKeepalive; took > limit+slack {
			t.Errorf("disconnect reported after %v, want within the keepalive deadline %v (+%v slack)", took, limit, slack)
		}
	case <-time.After(3*faultKeepalive + 15*time.Second):
		t.Fatal("run_command still hangs 18 s after the link was reset")
	}
	removeToxic(t, px, "reset_peer")
	// The edge comes back by itself.
	g.waitConnected(t, e.key.fp, nil)
}

// TestFaultResetDuringJob: the link is reset while a start_command job runs; the job keeps
// running on the edge, and once the edge has reconnected by itself its whole output and exit
// code are readable.
func TestFaultResetDuringJob(t *testing.T) {
	t.Parallel()
	_, g, e, px := faultSetup(t)
	r := g.call(t, "start_command", map[string]any{"edge": "flaky",
		"command": "for i in $(seq 1 10); do echo tick$i; sleep 0.3; done; exit 4"})
	if r.IsError {
		t.Fatalf("start_command: %s", r.Text)
	}
	j := decode[jobOut](t, r.Structured)
	time.Sleep(500 * time.Millisecond)
	addToxic(t, px, "reset_peer", map[string]any{"timeout": 0})
	// The gateway notices the reset (the edge is no longer listed as connected) before the
	// link is given back.
	if !waitFor(3*faultKeepalive+slack, func() bool { e2, _ := g.edgeByFP(t, e.key.fp); return !e2.Connected }) {
		t.Fatal("the gateway never noticed the reset")
	}
	removeToxic(t, px, "reset_peer")
	g.waitConnected(t, e.key.fp, nil)
	final, output := g.pollJob(t, j.JobID, 30*time.Second)
	var want strings.Builder
	for i := 1; i <= 10; i++ {
		fmt.Fprintf(&want, "tick%d\n", i)
	}
	if final.Status != "exited" || final.ExitCode == nil || *final.ExitCode != 4 || output != want.String() {
		t.Fatalf("job after the reset: %+v output %q, want exited 4 with %q", final, output, want.String())
	}
}

// inFlight is the edge's in_flight count in get_status, or -1 when not listed.
func inFlight(t *testing.T, g *gateway, fp string) int {
	e, all := g.edgeByFP(t, fp)
	if len(all) != 1 || e.InFlight == nil {
		return -1
	}
	return *e.InFlight
}

func callReq(name string, args map[string]any) (req mcp.CallToolRequest) {
	req.Params.Name = name
	req.Params.Arguments = args
	return req
}

// TestFaultBlackHole: the link silently drops every packet (no RST, no FIN). Each side must
// notice by itself within three keepalive intervals, so each is tested with the other's
// keepalive too slow to matter (toxiproxy passes on the close of whichever side notices
// first). The edge then reconnects on its own once packets flow again.
func TestFaultBlackHole(t *testing.T) {
	t.Parallel()
	for _, side := range []string{"gateway", "edge"} {
		t.Run(side, func(t *testing.T) {
			t.Parallel()
			gwKA, edgeKA := faultKeepalive, time.Minute
			if side == "edge" {
				gwKA, edgeKA = time.Minute, faultKeepalive
			}
			f := newFixture(t)
			k := f.newEdgeKey(t)
			f.authorize(t, k, "dark", "")
			g := f.startGateway(t, map[string]string{"KEEPALIVE_INTERVAL": gwKA.String()})
			px := newToxiproxy(t, g.addr)
			e := f.startEdge(t, k, px.Listen, map[string]string{
				"EDGE_KEEPALIVE_INTERVAL": edgeKA.String(), "EDGE_BACKOFF_MAX": "2s"})
			first := g.waitConnected(t, k.fp, nil)
			time.Sleep(1500 * time.Millisecond) // a few keepalives answered: the link is healthy

			gwMark, edgeMark := len(g.stderr.String()), len(e.stderr.String())
			start := time.Now()
			addToxic(t, px, "timeout", map[string]any{"timeout": 0})
			var at time.Duration
			ok := waitFor(3*faultKeepalive+10*time.Second, func() bool {
				if side == "gateway" {
					return logHas(g.stderr.String(), gwMark, "edge dropped: keepalives unanswered")
				}
				return logHas(e.stderr.String(), edgeMark, "gateway connection ended", "keepalive")
			})
			at = time.Since(start)
			t.Logf("black hole noticed by the %s after %v (keepalive %v)", side, at.Round(time.Millisecond), faultKeepalive)
			if !ok {
				t.Fatalf("the %s did not notice the dead link within %v", side, at)
			}
			if limit := 3 * faultKeepalive; at > limit+slack {
				t.Errorf("the %s noticed the dead link after %v, want within %v (+%v slack)", side, at, limit, slack)
			}
			removeToxic(t, px, "timeout")
			again := g.waitConnected(t, k.fp, func(s edgeStatus) bool {
				return s.ConnectedSince != first.ConnectedSince || s.RemoteAddr != first.RemoteAddr
			})
			t.Logf("edge reconnected by itself from %s", again.RemoteAddr)
			if !strings.Contains(g.auditLog(), `"edge_disconnect"`) {
				t.Error("no edge_disconnect line in the audit log")
			}
		})
	}
}

// TestFaultGatewaySIGKILL: the gateway dies with SIGKILL and comes back on the same port; every
// edge is connected again within twice the backoff cap.
func TestFaultGatewaySIGKILL(t *testing.T) {
	t.Parallel()
	const edges, backoffMax = 3, 3 * time.Second
	f := newFixture(t)
	port := freePort(t)
	env := f.gatewayEnv(map[string]string{"SSH_PORT": strconv.Itoa(port), "KEEPALIVE_INTERVAL": "1s", "LOG_LEVEL": "warn"})
	for i := range edges {
		k := f.newEdgeKey(t)
		f.authorize(t, k, fmt.Sprintf("kill-%d", i), "")
		f.startEdge(t, k, "127.0.0.1:"+strconv.Itoa(port), map[string]string{"EDGE_BACKOFF_MAX": backoffMax.String()})
	}
	ctx, cancel := contextTimeout(2 * time.Minute)
	defer cancel()
	gw, err := scale.StartGateway(ctx, gatewayBin, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Kill)
	if d, err := waitEdges(ctx, gw, edges, 20*time.Second); err != nil {
		t.Fatalf("edges never connected: %v\n%s", err, tail(gw.Stderr(), 3000))
	} else {
		t.Logf("%d edges connected %v after the gateway started", edges, d.Round(time.Millisecond))
	}
	// Let the connections become stable (backoff reset), as in production.
	time.Sleep(backoffMax)

	killed := time.Now()
	gw.Kill()
	gw2, err := scale.StartGateway(ctx, gatewayBin, env)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(gw2.Kill)
	restarted := time.Since(killed)
	_, err = waitEdges(ctx, gw2, edges, 2*backoffMax+15*time.Second)
	back := time.Since(killed)
	t.Logf("gateway restarted %v after SIGKILL; all %d edges back %v after SIGKILL (backoff cap %v)",
		restarted.Round(time.Millisecond), edges, back.Round(time.Millisecond), backoffMax)
	if err != nil {
		t.Fatalf("edges not back: %v\n%s", err, tail(gw2.Stderr(), 3000))
	}
	if back > 2*backoffMax {
		t.Errorf("edges back %v after SIGKILL, want within twice the backoff cap (%v)", back, 2*backoffMax)
	}
}

// waitEdges polls get_status until n edges are connected; it returns how long that took.
func waitEdges(ctx context.Context, gw *scale.Gateway, n int, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	last := -1
	for time.Since(start) < limit {
		c, err := scale.ConnectedEdges(ctx, gw)
		if err == nil && c >= n {
			return time.Since(start), nil
		}
		last = c
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("%d of %d edges connected after %v", last, n, limit)
}
