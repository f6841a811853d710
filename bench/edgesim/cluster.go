package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
)

// clusterConfig is the cluster command's flags.
type clusterConfig struct {
	edges, sources                   int
	gatewayBin, scenarios            string
	latN, latBlocks, latWarmup       int
	settle, connectLimit, moveLimit  time.Duration
	keepalive, backoffMax, peersWait time.Duration
	quietLimit                       time.Duration
}

// clusterGW is one gateway of the cluster under test.
type clusterGW struct {
	id   string
	addr string
	env  []string
	gw   *scale.Gateway
	rss0 int64
	dead bool
}

// runCluster starts NATS with JetStream in this process and three real gateways joined
// through it (SPEC §10), then measures: a relayed run_command against a local one, a fleet
// split over the three, and the fleet moving to two gateways when the third is SIGKILLed.
func runCluster(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	var c clusterConfig
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	fs.IntVar(&c.edges, "edges", 30000, "simulated edges, split in thirds over the three gateways")
	fs.IntVar(&c.sources, "sources", 8, "loopback source addresses (127.0.0.2 …)")
	fs.StringVar(&c.gatewayBin, "gateway-bin", "bin/mcp-ssh-gateway", "the gateway binary under test")
	fs.StringVar(&c.scenarios, "scenarios", "latency,fleet,failover", "comma-separated: latency, fleet, failover (needs fleet)")
	fs.IntVar(&c.latN, "lat-n", 200, "calls per block in the latency row")
	fs.IntVar(&c.latBlocks, "lat-blocks", 10, "alternating blocks per gateway in the latency row")
	fs.IntVar(&c.latWarmup, "lat-warmup", 50, "warm-up calls per gateway before the latency blocks")
	fs.DurationVar(&c.settle, "settle", 30*time.Second, "idle time with the fleet up before memory is read")
	fs.DurationVar(&c.connectLimit, "connect-limit", 10*time.Minute, "longest wait for the fleet to be visible on every gateway")
	fs.DurationVar(&c.moveLimit, "move-limit", 5*time.Minute, "longest wait for the fleet to be back on two gateways")
	fs.DurationVar(&c.peersWait, "peers-wait", time.Minute, "longest wait for the gateways to see each other")
	fs.DurationVar(&c.quietLimit, "quiet-limit", 10*time.Minute, "longest wait for the gateways to be idle after start (key sync)")
	fs.DurationVar(&c.keepalive, "keepalive", 15*time.Second, "KEEPALIVE_INTERVAL of gateways and edges (also the cluster's route refresh)")
	fs.DurationVar(&c.backoffMax, "backoff-max", 30*time.Second, "EDGE_BACKOFF_MAX")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.edges < 3 || c.edges > scale.MaxEdges || c.latN < 1 || c.latN > 100000 || c.latBlocks < 1 || c.latBlocks > 1000 ||
		c.latWarmup < 0 || c.latWarmup > 100000 {
		return fmt.Errorf("-edges must be 3-%d, -lat-n 1-100000, -lat-blocks 1-1000", scale.MaxEdges)
	}
	want := map[string]bool{}
	for _, s := range strings.Split(c.scenarios, ",") {
		switch s = strings.TrimSpace(s); s {
		case "latency", "fleet", "failover":
			want[s] = true
		case "":
		default:
			return fmt.Errorf("unknown scenario %q", s)
		}
	}
	if want["failover"] && !want["fleet"] {
		return errors.New("scenario failover needs fleet")
	}
	limit, err := scale.RaiseFDLimit() // inherited by the gateways and the children
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	fmt.Fprintf(out, "# edgesim cluster: 3 gateways + NATS JetStream (in this process) on %s, %d CPUs, descriptor limit %d, %d edges, keepalive %v, backoff cap %v\n",
		host, runtime.NumCPU(), limit, c.edges, c.keepalive, c.backoffMax)

	dir, err := os.MkdirTemp("", "edgesim-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// NATS with JetStream, in this process.
	ns, err := natsserver.NewServer(&natsserver.Options{ServerName: "edgesim", Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: filepath.Join(dir, "nats"), NoLog: true, NoSigs: true})
	if err != nil {
		return fmt.Errorf("nats server: %w", err)
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(15 * time.Second) {
		return errors.New("nats server not ready within 15s")
	}
	natsURL := ns.ClientURL()
	selfRSS0, _ := scale.RSS(os.Getpid())

	t := time.Now()
	ids, err := scale.NewIdentities(c.edges+1, "sim") // the last one is the latency edge
	if err != nil {
		return err
	}
	latID, ids := ids[len(ids)-1], ids[:len(ids)-1]
	auth := scale.AuthorizedKeys(append(slices.Clone(ids), latID))
	log.Info("identities made", "count", c.edges+1, "took", time.Since(t).Round(time.Millisecond))

	// Three gateways: each its own directory, authorized_keys (the same content) and state;
	// one host key, gw-1's, for all three.
	var gws []*clusterGW
	var hostKeyFile, hostFP string
	defer func() {
		for _, g := range gws {
			if !g.dead {
				g.gw.Kill()
			}
		}
	}()
	for i := range 3 {
		gd, err := scale.NewGatewayDir(filepath.Join(dir, fmt.Sprintf("gw-%d", i+1)), auth)
		if err != nil {
			return err
		}
		if i == 0 {
			hostKeyFile, hostFP = gd.HostKeyFile, gd.HostKeyFP
		}
		port, err := scale.FreePort()
		if err != nil {
			return err
		}
		g := &clusterGW{id: fmt.Sprintf("gw-%d", i+1), addr: "127.0.0.1:" + strconv.Itoa(port)}
		g.env = gd.Env(port, "KEEPALIVE_INTERVAL="+c.keepalive.String(), "EXEC_TIMEOUT=60s",
			"GATEWAY_ID="+g.id, "CLUSTER_NATS_URL="+natsURL, "HOST_KEY_FILE="+hostKeyFile)
		t := time.Now()
		if g.gw, err = scale.StartGateway(ctx, c.gatewayBin, g.env); err != nil {
			return fmt.Errorf("%s: %w", g.id, err)
		}
		gws = append(gws, g)
		log.Info("gateway started", "id", g.id, "addr", g.addr, "pid", g.gw.PID(), "took", time.Since(t).Round(time.Millisecond))
	}
	t = time.Now()
	if err := waitPeers(ctx, gws, c.peersWait, log); err != nil {
		return err
	}
	report(out, "three gateways see each other (cluster.peers) after start", time.Since(t).Round(time.Millisecond).String(), "")
	// The key sync (every gateway applies the bucket's copy of each key) keeps them busy for
	// a while after start: wait until all three are idle, and say how long it took.
	t = time.Now()
	quiet, busy := waitQuiet(ctx, gws, c.quietLimit)
	report(out, "gateways idle after start (CPU < 5 % for 3 s each)", fmt.Sprintf("%v (%v, CPU seconds used meanwhile: %s)",
		time.Since(t).Round(100*time.Millisecond), map[bool]string{true: "idle", false: "NOT idle at the limit"}[quiet], busy), "")
	time.Sleep(time.Second)
	for _, g := range gws {
		if g.rss0, err = scale.RSS(g.gw.PID()); err != nil {
			return err
		}
		report(out, g.id+" RSS with no edge ("+strconv.Itoa(c.edges+1)+" keys)", fmtBytes(g.rss0), "")
	}

	if want["latency"] {
		if err := clusterLatency(ctx, c, gws, hostFP, latID, out, log); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	if !want["fleet"] {
		return nil
	}

	// The fleet: thirds, each with its own gateway first; within a third, half fail over to
	// the next gateway first and half to the one after, so a dead gateway's edges spread.
	var parts [][]scale.Identity
	var lists [][]string
	third := split(ids, 3)
	for k, part := range third {
		halves := split(part, 2)
		for h, half := range halves {
			a, b := gws[(k+1)%3].addr, gws[(k+2)%3].addr
			if h == 1 {
				a, b = b, a
			}
			parts = append(parts, half)
			lists = append(lists, []string{gws[k].addr, a, b})
		}
	}
	bc := benchConfig{sources: c.sources, keepalive: c.keepalive, backoffMax: c.backoffMax}
	stopChildren, err := startChildrenTo(ctx, bc, dir, hostFP, parts, func(i int) []string { return lists[i] })
	if err != nil {
		return err
	}
	defer stopChildren()
	took, err := waitAllVisible(ctx, gws, c.edges, c.connectLimit, log)
	if err != nil {
		return fmt.Errorf("fleet never visible on every gateway: %w", err)
	}
	report(out, fmt.Sprintf("%d edges connected on every gateway's get_status (cold)", c.edges), slices.Max(slices.Collect(maps.Values(took))).Round(time.Millisecond).String(), "")
	for _, g := range gws {
		if d, ok := took[g.id]; ok {
			report(out, "  seen all on "+g.id, d.Round(time.Millisecond).String(), "")
		}
	}
	if err := clusterIdle(ctx, c, gws, selfRSS0, out, log); err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	if want["failover"] {
		if err := clusterFailover(ctx, c, gws, out, log); err != nil {
			return fmt.Errorf("failover: %w", err)
		}
	}
	return nil
}

// waitQuiet waits until every gateway used under 5 % of a core in each of three consecutive
// seconds, at most limit; it reports whether they did and the CPU each used meanwhile.
func waitQuiet(ctx context.Context, gws []*clusterGW, limit time.Duration) (bool, string) {
	start := map[string]int64{}
	last := map[string]int64{}
	calm := map[string]int{}
	for _, g := range gws {
		start[g.id] = cpuTicks(g.gw.PID())
		last[g.id] = start[g.id]
	}
	used := func() string {
		var b []string
		for _, g := range gws {
			b = append(b, fmt.Sprintf("%s %.1f", g.id, float64(cpuTicks(g.gw.PID())-start[g.id])/100))
		}
		return strings.Join(b, ", ")
	}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if sleepCtx(ctx, time.Second) != nil {
			return false, used()
		}
		all := true
		for _, g := range gws {
			now := cpuTicks(g.gw.PID())
			if now-last[g.id] < 5 {
				calm[g.id]++
			} else {
				calm[g.id] = 0
			}
			last[g.id] = now
			if calm[g.id] < 3 {
				all = false
			}
		}
		if all {
			return true, used()
		}
	}
	return false, used()
}

// waitPeers waits until every gateway lists the two others in cluster.peers.
func waitPeers(ctx context.Context, gws []*clusterGW, limit time.Duration, log *slog.Logger) error {
	deadline := time.Now().Add(limit)
	for {
		ok := true
		for _, g := range gws {
			st, err := clusterStatus(ctx, g.gw, map[string]any{"limit": 1})
			if err != nil || len(st.Cluster.Peers) < len(gws)-1 || !st.Cluster.Connected {
				ok = false
				if time.Now().After(deadline) {
					return fmt.Errorf("%s does not see its peers after %v: err %v, status %+v; stderr: %.2000s", g.id, limit, err, st.Cluster, g.gw.Stderr())
				}
			}
		}
		if ok {
			return nil
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// clusterLatency: one edge on gw-1; run_command ["true"] through gw-1 (local) and gw-2
// (relayed over NATS) in alternating blocks; the floor is get_agent_pubkey on each gateway.
func clusterLatency(ctx context.Context, c clusterConfig, gws []*clusterGW, hostFP string, id scale.Identity, out io.Writer, log *slog.Logger) error {
	fleet, err := scale.StartFleet(ctx, scale.FleetConfig{Gateway: gws[0].addr, HostKey: hostFP, Sources: loopbackSources(1),
		KeepaliveInterval: c.keepalive, BackoffMax: c.backoffMax, Log: log.With("edge", "latency")}, []scale.Identity{id})
	if err != nil {
		return err
	}
	stopped := false
	defer func() {
		if !stopped {
			fleet.Stop()
		}
	}()
	t := time.Now()
	for _, g := range gws {
		if err := waitVisible(ctx, g, 1, time.Minute); err != nil {
			return err
		}
	}
	report(out, "latency edge on gw-1 visible on all three", time.Since(t).Round(time.Millisecond).String(), "")

	run := map[string]any{"edge": id.Name, "argv": []string{"true"}}
	type series struct {
		label string
		g     *clusterGW
		tool  string
		args  map[string]any
		lat   []time.Duration
		fail  int
		first string
	}
	calls := []*series{
		{label: "run_command [\"true\"] via gw-1 (local)", g: gws[0], tool: "run_command", args: run},
		{label: "run_command [\"true\"] via gw-2 (relayed)", g: gws[1], tool: "run_command", args: run},
	}
	floor := []*series{
		{label: "get_agent_pubkey via gw-1", g: gws[0], tool: "get_agent_pubkey", args: map[string]any{}},
		{label: "get_agent_pubkey via gw-2", g: gws[1], tool: "get_agent_pubkey", args: map[string]any{}},
		{label: "get_agent_pubkey via gw-3", g: gws[2], tool: "get_agent_pubkey", args: map[string]any{}},
	}
	one := func(s *series, keep bool) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		t := time.Now()
		res, err := s.g.gw.Call(cctx, s.tool, s.args)
		d := time.Since(t)
		if err != nil || res.IsError || (s.tool == "run_command" && !exitedZero(res)) {
			if s.fail++; s.first == "" {
				s.first = fmt.Sprintf("%v %.300s", err, resultText(res))
			}
			return
		}
		if keep {
			s.lat = append(s.lat, d)
		}
	}
	for _, group := range [][]*series{calls, floor} {
		for _, s := range group {
			for range c.latWarmup {
				one(s, false)
			}
		}
		for b := range c.latBlocks {
			for i := range group {
				s := group[(i+b)%len(group)] // each block starts with the next one
				for range c.latN {
					one(s, true)
				}
			}
		}
	}
	for _, group := range [][]*series{calls, floor} {
		for _, s := range group {
			p50, p90, p99 := pct(s.lat, 0.50), pct(s.lat, 0.90), pct(s.lat, 0.99)
			report(out, fmt.Sprintf("%s p50 / p90 / p99 of %d", s.label, len(s.lat)),
				fmt.Sprintf("%v / %v / %v", fmtMs(p50), fmtMs(p90), fmtMs(p99)), "")
			if s.fail > 0 {
				report(out, "  failed calls", fmt.Sprintf("%d (first: %s)", s.fail, s.first), "0")
			}
		}
	}
	if len(calls[0].lat) > 0 && len(calls[1].lat) > 0 {
		d := pct(calls[1].lat, 0.5) - pct(calls[0].lat, 0.5)
		verdict := "met"
		if d > 500*time.Microsecond {
			verdict = "NOT met"
		}
		report(out, "forwarded run_command p50 minus local p50", fmt.Sprintf("%s ms, %s", signedMs(d), verdict), "≤ +0.5 ms on loopback")
		report(out, "  p90 difference", signedMs(pct(calls[1].lat, 0.9)-pct(calls[0].lat, 0.9))+" ms", "")
		report(out, "  floor: get_agent_pubkey p50 gw-2 minus gw-1", signedMs(pct(floor[1].lat, 0.5)-pct(floor[0].lat, 0.5))+" ms", "")
	}
	if err := fleet.Stop(); err != nil {
		log.Warn("latency edge", "err", err)
	}
	stopped = true
	t = time.Now()
	for _, g := range gws {
		if err := waitConnectedAtMost(ctx, g, 0, time.Minute); err != nil {
			return fmt.Errorf("latency edge still listed connected after it stopped: %w", err)
		}
	}
	report(out, "latency edge stopped: shown gone on all three after", time.Since(t).Round(time.Millisecond).String(), "")
	return nil
}

// clusterIdle: memory, descriptors and CPU of each gateway with the fleet up, the edges each
// holds (counted from one gateway's full get_status), and get_status latency on one gateway.
func clusterIdle(ctx context.Context, c clusterConfig, gws []*clusterGW, selfRSS0 int64, out io.Writer, log *slog.Logger) error {
	cpu0 := map[string]int64{}
	for _, g := range gws {
		cpu0[g.id] = cpuTicks(g.gw.PID())
	}
	self0 := cpuTicks(os.Getpid())
	t0 := time.Now()
	if err := sleepCtx(ctx, c.settle); err != nil {
		return err
	}
	wall := time.Since(t0).Seconds()
	held, _, err := holdings(ctx, gws[0], c.edges)
	if err != nil {
		return err
	}
	for _, g := range gws {
		rss, err := scale.RSS(g.gw.PID())
		if err != nil {
			return err
		}
		fds, _ := scale.OpenFDs(g.gw.PID())
		n := held[g.id]
		per := "-"
		if n > 0 {
			per = fmtBytes((rss - g.rss0) / int64(n))
		}
		cpu := float64(cpuTicks(g.gw.PID())-cpu0[g.id]) / 100 / wall * 100
		report(out, fmt.Sprintf("%s after %v idle: edges held / RSS / per edge held", g.id, c.settle),
			fmt.Sprintf("%d / %s / %s (%d descriptors, %d threads, CPU %.1f%% of a core idle)", n, fmtBytes(rss), per, fds, scale.Threads(g.gw.PID()), cpu), "")
	}
	selfRSS, _ := scale.RSS(os.Getpid())
	report(out, "edgesim parent (NATS server) RSS / CPU idle", fmt.Sprintf("%s (%s before the gateways) / %.1f%% of a core",
		fmtBytes(selfRSS), fmtBytes(selfRSS0), float64(cpuTicks(os.Getpid())-self0)/100/wall*100), "")
	report(out, "get_status connected edges listed by gateway (full page through gw-1)", fmtHeld(held), "")
	for _, g := range gws[:2] {
		for _, args := range []map[string]any{{"limit": 1}, {"limit": 100}, {"limit": 1000, "connected_only": true}} {
			var lat []time.Duration
			for range 20 {
				t := time.Now()
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				res, err := g.gw.Call(cctx, "get_status", args)
				cancel()
				if err != nil || res.IsError {
					return fmt.Errorf("get_status on %s: %v %.300s", g.id, err, resultText(res))
				}
				lat = append(lat, time.Since(t))
			}
			slices.Sort(lat)
			b, _ := json.Marshal(args)
			report(out, fmt.Sprintf("%s get_status %s median / max of 20", g.id, b), fmt.Sprintf("%v / %v",
				lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond)), "< 100 ms")
		}
	}
	return nil
}

// clusterFailover: SIGKILL gw-3 and time until gw-1 and gw-2 hold the whole fleet; then run a
// command on moved edges through both.
func clusterFailover(ctx context.Context, c clusterConfig, gws []*clusterGW, out io.Writer, log *slog.Logger) error {
	held, names, err := holdings(ctx, gws[0], c.edges)
	if err != nil {
		return err
	}
	victim := gws[2]
	onVictim := held[victim.id]
	killed := time.Now()
	victim.gw.Kill()
	victim.dead = true
	log.Info("gateway SIGKILLed", "id", victim.id, "edges_on_it", onVictim)

	// Each gateway's own count is the other's cluster.peers entry (heartbeats every 2 s).
	deadline := killed.Add(c.moveLimit)
	var backAt, peerGoneAt time.Duration
	var firstTotal [2]int
	lastLog := time.Now()
	var own [2]int
	for backAt == 0 || peerGoneAt == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: gw-1 holds %d, gw-2 holds %d of %d (peer gw-3 gone at %v)", c.moveLimit, own[0], own[1], c.edges, peerGoneAt)
		}
		gone := true
		for i, g := range gws[:2] {
			st, err := clusterStatus(ctx, g.gw, map[string]any{"limit": 1})
			if err != nil {
				log.Warn("get_status", "gateway", g.id, "err", err)
				continue
			}
			if firstTotal[i] == 0 {
				firstTotal[i] = st.Totals.Connected
			}
			for _, p := range st.Cluster.Peers {
				switch p.ID {
				case gws[1-i].id:
					own[1-i] = p.Edges
				case victim.id:
					gone = false
				}
			}
		}
		if gone && peerGoneAt == 0 {
			peerGoneAt = time.Since(killed)
		}
		if backAt == 0 && own[0]+own[1] >= c.edges {
			backAt = time.Since(killed)
		}
		if time.Since(lastLog) >= 5*time.Second {
			log.Info("fail-over", "since_kill", time.Since(killed).Round(time.Second), "gw-1", own[0], "gw-2", own[1])
			lastLog = time.Now()
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	report(out, fmt.Sprintf("get_status totals.connected on gw-1 / gw-2 right after the kill"), fmt.Sprintf("%d / %d", firstTotal[0], firstTotal[1]), "")
	report(out, fmt.Sprintf("%d edges on gw-1 + gw-2 after SIGKILL of gw-3 (%d edges on it)", c.edges, onVictim),
		fmt.Sprintf("%v (counts from heartbeats, up to 2 s late); gw-1 %d, gw-2 %d", backAt.Round(time.Millisecond), own[0], own[1]), "")
	report(out, "gw-3 gone from cluster.peers of gw-1 and gw-2 after", peerGoneAt.Round(time.Millisecond).String(), "")

	// What gw-1 and gw-2 list: no edge should still be shown on gw-3.
	for _, g := range gws[:2] {
		t := time.Now()
		var h map[string]int
		for {
			h, _, err = holdings(ctx, g, c.edges)
			if err != nil {
				return err
			}
			if h[victim.id] == 0 || time.Since(t) > 90*time.Second {
				break
			}
			if err := sleepCtx(ctx, 2*time.Second); err != nil {
				return err
			}
		}
		report(out, g.id+" lists, connected by gateway ("+time.Since(killed).Round(time.Second).String()+" after the kill)", fmtHeld(h), "")
	}

	// A command on moved edges through either gateway.
	moved := names[victim.id]
	if len(moved) == 0 {
		return errors.New("no edge was listed on gw-3")
	}
	okN, tried := 0, 0
	var firstErr string
	for _, name := range moved[:min(3, len(moved))] {
		for _, g := range gws[:2] {
			tried++
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			t := time.Now()
			res, err := g.gw.Call(cctx, "run_command", map[string]any{"edge": name, "argv": []string{"true"}})
			d := time.Since(t)
			cancel()
			if err == nil && !res.IsError && exitedZero(res) {
				okN++
				log.Info("run_command on a moved edge", "edge", name, "via", g.id, "took", d.Round(time.Microsecond))
			} else if firstErr == "" {
				firstErr = fmt.Sprintf("%s via %s: %v %.300s", name, g.id, err, resultText(res))
			}
		}
	}
	v := fmt.Sprintf("%d of %d ok", okN, tried)
	if firstErr != "" {
		v += " (first failure: " + firstErr + ")"
	}
	report(out, "run_command [\"true\"] on moved edges through gw-1 and gw-2", v, "all ok")
	return nil
}

// statusView is the part of get_status the cluster scenarios read.
type statusView struct {
	Gateway struct {
		ID string `json:"id"`
	} `json:"gateway"`
	Cluster struct {
		Enabled   bool `json:"enabled"`
		Connected bool `json:"connected"`
		Peers     []struct {
			ID    string `json:"id"`
			Edges int    `json:"edges"`
		} `json:"peers"`
	} `json:"cluster"`
	Totals struct {
		Known     int `json:"known"`
		Connected int `json:"connected"`
	} `json:"totals"`
	Edges []struct {
		Name      string `json:"name"`
		Connected bool   `json:"connected"`
		Gateway   string `json:"gateway"`
	} `json:"edges"`
	NextCursor string `json:"next_cursor"`
}

// clusterStatus calls get_status with args (bounded to 30 s).
func clusterStatus(ctx context.Context, g *scale.Gateway, args map[string]any) (statusView, error) {
	var st statusView
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := g.Call(cctx, "get_status", args)
	if err != nil {
		return st, err
	}
	if res.IsError {
		return st, fmt.Errorf("get_status: %s", resultText(res))
	}
	b, err := json.Marshal(res.StructuredContent)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	return st, err
}

// holdings pages through g's get_status (connected edges) and counts them by gateway; names
// keeps up to 10 edge names per gateway.
func holdings(ctx context.Context, g *clusterGW, n int) (map[string]int, map[string][]string, error) {
	held, names := map[string]int{}, map[string][]string{}
	args := map[string]any{"limit": 1000, "connected_only": true}
	for page := 0; page < n/1000+20; page++ {
		st, err := clusterStatus(ctx, g.gw, args)
		if err != nil {
			return nil, nil, fmt.Errorf("get_status on %s: %w", g.id, err)
		}
		for _, e := range st.Edges {
			gw := e.Gateway
			if gw == "" {
				gw = "(none)"
			}
			held[gw]++
			if len(names[gw]) < 10 {
				names[gw] = append(names[gw], e.Name)
			}
		}
		if st.NextCursor == "" {
			return held, names, nil
		}
		args["cursor"] = st.NextCursor
	}
	return nil, nil, fmt.Errorf("get_status on %s: more pages than %d edges need", g.id, n)
}

// waitAllVisible waits until every gateway's get_status shows n connected; it returns when each
// first did, from now.
func waitAllVisible(ctx context.Context, gws []*clusterGW, n int, limit time.Duration, log *slog.Logger) (map[string]time.Duration, error) {
	start := time.Now()
	seen := map[string]time.Duration{}
	last := map[string]int{}
	lastLog := time.Now()
	for len(seen) < len(gws) {
		if time.Since(start) > limit {
			return seen, fmt.Errorf("after %v connected per gateway's get_status: %v of %d", limit, last, n)
		}
		for _, g := range gws {
			if _, ok := seen[g.id]; ok {
				continue
			}
			st, err := clusterStatus(ctx, g.gw, map[string]any{"limit": 1, "connected_only": true})
			if err != nil {
				log.Warn("get_status", "gateway", g.id, "err", err)
				continue
			}
			last[g.id] = st.Totals.Connected
			if st.Totals.Connected >= n {
				seen[g.id] = time.Since(start)
			}
		}
		if time.Since(lastLog) >= 5*time.Second {
			log.Info("connecting", "since", time.Since(start).Round(time.Second), "connected_per_get_status", fmt.Sprint(last))
			lastLog = time.Now()
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return seen, err
		}
	}
	return seen, nil
}

// waitVisible waits until g's get_status shows at least n connected.
func waitVisible(ctx context.Context, g *clusterGW, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	got := -1
	for time.Now().Before(deadline) {
		st, err := clusterStatus(ctx, g.gw, map[string]any{"limit": 1, "connected_only": true})
		if err == nil {
			if got = st.Totals.Connected; got >= n {
				return nil
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: %d of %d connected after %v", g.id, got, n, limit)
}

// waitConnectedAtMost waits until g's get_status shows at most n connected.
func waitConnectedAtMost(ctx context.Context, g *clusterGW, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	got := -1
	for time.Now().Before(deadline) {
		st, err := clusterStatus(ctx, g.gw, map[string]any{"limit": 1, "connected_only": true})
		if err == nil {
			if got = st.Totals.Connected; got <= n {
				return nil
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: %d connected after %v, want at most %d", g.id, got, limit, n)
}

// exitedZero reports whether a run_command result says exit code 0.
func exitedZero(res *mcp.CallToolResult) bool {
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		return false
	}
	var out struct {
		ExitCode *int `json:"exit_code"`
	}
	return json.Unmarshal(b, &out) == nil && out.ExitCode != nil && *out.ExitCode == 0
}

// resultText is the first text content of a tool result ("" for none).
func resultText(r *mcp.CallToolResult) string {
	if r == nil {
		return ""
	}
	for _, c := range r.Content {
		if tc, ok := c.(mcp.TextContent); ok {
			return tc.Text
		}
	}
	return ""
}

// pct is the q quantile (nearest rank) of d, which it sorts.
func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(math.Ceil(q*float64(len(d)))) - 1
	return d[max(0, min(i, len(d)-1))]
}

// fmtMs prints a duration in milliseconds with three decimals.
func fmtMs(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/1e6) }

// signedMs prints a difference in milliseconds with its sign.
func signedMs(d time.Duration) string { return fmt.Sprintf("%+.3f", float64(d)/1e6) }

// fmtHeld prints counts by gateway in a stable order.
func fmtHeld(h map[string]int) string {
	var keys []string
	total := 0
	for k, v := range h {
		keys = append(keys, k)
		total += v
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d, ", k, h[k])
	}
	fmt.Fprintf(&b, "total %d", total)
	return b.String()
}

// cpuTicks is the user + system CPU time of pid in clock ticks (1/100 s), 0 if unreadable.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state); utime is field 14, stime 15
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
