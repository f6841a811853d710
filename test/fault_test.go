package e2e

// The fault suite: links that break under a running gateway and edges, through an in-process
// toxiproxy between edge and gateway. Keepalive and backoff are short (1 s, 2–3 s) so that
// every fault resolves in seconds; the bounds are the product's own deadlines.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

const (
	faultKeepalive = time.Second // KEEPALIVE_INTERVAL and EDGE_KEEPALIVE_INTERVAL
	// slack absorbs a loaded, shared 2-core machine on top of a protocol deadline.
	slack = 2 * time.Second
)

// logHas reports whether a JSON log line after the first `after` bytes of log has msg and
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
func faultSetup(t *testing.T) (*fixture, *gateway, *edgeProc, *localfleet.Proxy) {
	t.Helper()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "flaky", "")
	g := f.startGateway(t, map[string]string{"KEEPALIVE_INTERVAL": faultKeepalive.String()})
	px := newToxiproxy(t, g.addr)
	e := f.startEdge(t, k, px.Addr(), map[string]string{
		"EDGE_KEEPALIVE_INTERVAL": faultKeepalive.String(),
		"EDGE_BACKOFF_MAX":        "2s",
	})
	g.waitConnected(t, k.Fingerprint, nil)
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
	if !waitFor(10*time.Second, func() bool { return inFlight(t, g, e.Key.Fingerprint) > 0 }) {
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
	g.waitConnected(t, e.Key.Fingerprint, nil)
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
	if !waitFor(3*faultKeepalive+slack, func() bool { e2, _ := g.edgeByFP(t, e.Key.Fingerprint); return !e2.Connected }) {
		t.Fatal("the gateway never noticed the reset")
	}
	removeToxic(t, px, "reset_peer")
	g.waitConnected(t, e.Key.Fingerprint, nil)
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
			e := f.startEdge(t, k, px.Addr(), map[string]string{
				"EDGE_KEEPALIVE_INTERVAL": edgeKA.String(), "EDGE_BACKOFF_MAX": "2s"})
			first := g.waitConnected(t, k.Fingerprint, nil)
			time.Sleep(1500 * time.Millisecond) // a few keepalives answered: the link is healthy

			gwMark, edgeMark := len(g.Stderr()), len(e.Stderr())
			start := time.Now()
			addToxic(t, px, "timeout", map[string]any{"timeout": 0})
			var at time.Duration
			ok := waitFor(3*faultKeepalive+10*time.Second, func() bool {
				if side == "gateway" {
					return logHas(g.Stderr(), gwMark, "edge dropped: keepalives unanswered")
				}
				return logHas(e.Stderr(), edgeMark, "gateway connection ended", "keepalive")
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
			again := g.waitConnected(t, k.Fingerprint, func(s edgeStatus) bool {
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
	env := map[string]string{"KEEPALIVE_INTERVAL": "1s", "LOG_LEVEL": "warn"}
	g := f.startGateway(t, env)
	// The restarted gateway binds the port the kernel gave the first one: that is the address
	// the edges keep dialling.
	_, port, _ := net.SplitHostPort(g.addr)
	env["SSH_PORT"] = port
	started := time.Now()
	for i := range edges {
		k := f.newEdgeKey(t)
		f.authorize(t, k, fmt.Sprintf("kill-%d", i), "")
		f.startEdge(t, k, g.addr, map[string]string{"EDGE_BACKOFF_MAX": backoffMax.String()})
	}
	ctx, cancel := contextTimeout(2 * time.Minute)
	defer cancel()
	if err := waitEdges(ctx, g, edges, 20*time.Second); err != nil {
		t.Fatalf("edges never connected: %v", err)
	}
	t.Logf("%d edges connected %v after they started", edges, time.Since(started).Round(time.Millisecond))
	// Let the connections become stable (backoff reset), as in production.
	time.Sleep(backoffMax)

	killed := time.Now()
	kill(t, g.Proc)
	g2 := f.startGateway(t, env)
	restarted := time.Since(killed)
	err := waitEdges(ctx, g2, edges, 2*backoffMax+15*time.Second)
	back := time.Since(killed)
	t.Logf("gateway restarted %v after SIGKILL; all %d edges back %v after SIGKILL (backoff cap %v)",
		restarted.Round(time.Millisecond), edges, back.Round(time.Millisecond), backoffMax)
	if err != nil {
		t.Fatalf("edges not back: %v", err)
	}
	if back > 2*backoffMax {
		t.Errorf("edges back %v after SIGKILL, want within twice the backoff cap (%v)", back, 2*backoffMax)
	}
}

// waitEdges polls get_status until n edges are connected, for at most limit.
func waitEdges(ctx context.Context, g *gateway, n int, limit time.Duration) error {
	start := time.Now()
	last := -1
	for time.Since(start) < limit {
		st, err := g.Status(ctx, map[string]any{"limit": 1, "connected_only": true})
		if err == nil && st.Totals.Connected >= n {
			return nil
		}
		last = st.Totals.Connected
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%d of %d edges connected after %v", last, n, limit)
}
