package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
)

// benchConfig is the bench command's flags.
type benchConfig struct {
	edges, procs, sources, fanout int
	gatewayBin, scenarios         string
	settle, connectLimit          time.Duration
	keepalive, backoffMax         time.Duration
	uploadBytes                   int64
	floor                         bool
}

// runBench starts the real gateway, the simulated fleet in child processes, and runs the
// scenarios, printing one result line per figure.
func runBench(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	var c benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&c.edges, "edges", 1000, "simulated edges")
	fs.IntVar(&c.procs, "procs", 1, "simulator processes the edges are split over")
	fs.IntVar(&c.sources, "sources", 8, "loopback source addresses (127.0.0.2 …)")
	fs.IntVar(&c.fanout, "fanout", 1000, "edges the fan-out scenario runs [\"true\"] on at once")
	fs.StringVar(&c.gatewayBin, "gateway-bin", "bin/mcp-ssh-gateway", "the gateway binary under test")
	fs.StringVar(&c.scenarios, "scenarios", "idle,fanout,restart,upload", "comma-separated: idle, fanout, restart, upload")
	fs.DurationVar(&c.settle, "settle", 30*time.Second, "idle time before memory is read")
	fs.DurationVar(&c.connectLimit, "connect-limit", 5*time.Minute, "longest wait for the fleet to connect")
	fs.DurationVar(&c.keepalive, "keepalive", 15*time.Second, "KEEPALIVE_INTERVAL of gateway and edges")
	fs.DurationVar(&c.backoffMax, "backoff-max", 30*time.Second, "EDGE_BACKOFF_MAX")
	fs.Int64Var(&c.uploadBytes, "upload-bytes", 8<<20, "size of the upload through the slow link")
	fs.BoolVar(&c.floor, "floor", true, "with the idle scenario, first measure the floor: the same fleet served by the libraries alone (edgesim bare), same idle time")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.edges < 1 || c.edges > scale.MaxEdges || c.procs < 1 || c.procs > 16 {
		return fmt.Errorf("-edges must be 1-%d and -procs 1-16", scale.MaxEdges)
	}
	limit, err := scale.RaiseFDLimit() // inherited by the gateway and the children
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "# edgesim bench: %d edges in %d process(es), descriptor limit %d, keepalive %v, backoff cap %v\n",
		c.edges, c.procs, limit, c.keepalive, c.backoffMax)

	dir, err := os.MkdirTemp("", "edgesim-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ids, err := scale.NewIdentities(c.edges+1, "sim") // the last one is the upload edge
	if err != nil {
		return err
	}
	upID, ids := ids[len(ids)-1], ids[:len(ids)-1]
	var floor int64
	if c.floor && slices.Contains(strings.Split(c.scenarios, ","), "idle") {
		if floor, err = measureFloor(ctx, c, dir, ids); err != nil {
			return fmt.Errorf("floor: %w", err)
		}
		report(out, fmt.Sprintf("libraries alone (floor): RSS per idle edge after %v idle", c.settle), fmtBytes(floor), "")
	}
	gd, err := scale.NewGatewayDir(dir, scale.AuthorizedKeys(append(slices.Clone(ids), upID)))
	if err != nil {
		return err
	}
	port, err := scale.FreePort()
	if err != nil {
		return err
	}
	env := gd.Env(port, "KEEPALIVE_INTERVAL="+c.keepalive.String(), "EXEC_TIMEOUT=60s")
	gw, err := scale.StartGateway(ctx, c.gatewayBin, env)
	if err != nil {
		return err
	}
	defer func() { gw.Kill() }()
	time.Sleep(time.Second)
	rss0, err := scale.RSS(gw.PID())
	if err != nil {
		return err
	}
	report(out, "gateway RSS with no edge", fmtBytes(rss0), "")

	addr := "127.0.0.1:" + strconv.Itoa(port)
	stopChildren, err := startChildren(ctx, c, dir, addr, gd.HostKeyFP, split(ids, c.procs))
	if err != nil {
		return err
	}
	defer stopChildren()

	start := time.Now()
	if err := waitConnected(ctx, gw, c.edges, c.connectLimit); err != nil {
		return fmt.Errorf("fleet never fully connected: %w", err)
	}
	report(out, fmt.Sprintf("%d edges connected from cold start", c.edges), time.Since(start).Round(time.Millisecond).String(), "")

	for _, sc := range strings.Split(c.scenarios, ",") {
		var err error
		switch strings.TrimSpace(sc) {
		case "idle":
			err = scenarioIdle(ctx, c, gw, rss0, floor, out)
		case "fanout":
			err = scenarioFanout(ctx, c, gw, ids, out)
		case "restart":
			gw, err = scenarioRestart(ctx, c, gw, env, out)
		case "upload":
			err = scenarioUpload(ctx, c, gw, addr, gd.HostKeyFP, upID, dir, out, log)
		case "":
		default:
			err = fmt.Errorf("unknown scenario %q", sc)
		}
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc, err)
		}
	}
	return nil
}

// report prints one figure: what, the measured value and the target it is held against.
func report(out io.Writer, what, value, target string) {
	if target != "" {
		target = " (target " + target + ")"
	}
	fmt.Fprintf(out, "%-58s %s%s\n", what+":", value, target)
}

// startChildren runs one `edgesim edges` process per part; the returned func stops them.
func startChildren(ctx context.Context, c benchConfig, dir, addr, hostFP string, parts [][]scale.Identity) (func(), error) {
	return startChildrenTo(ctx, c, dir, hostFP, parts, func(int) []string { return []string{addr} })
}

// startChildrenTo is startChildren with a gateway list per part (gateways(i) for part i: the
// first, then the fail-over ones in turn).
func startChildrenTo(ctx context.Context, c benchConfig, dir, hostFP string, parts [][]scale.Identity, gateways func(i int) []string) (func(), error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var cmds []*exec.Cmd
	var stdins []io.Closer
	stop := func() {
		for _, in := range stdins {
			in.Close()
		}
		for _, cmd := range cmds {
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
	}
	for i, part := range parts {
		file := filepath.Join(dir, fmt.Sprintf("ids-%d", i))
		if err := scale.WriteIdentities(file, part); err != nil {
			stop()
			return nil, err
		}
		cmd := exec.CommandContext(ctx, self, "edges", "-gateway", strings.Join(gateways(i), ","), "-host-key", hostFP, "-ids", file,
			"-sources", strconv.Itoa(c.sources), "-keepalive", c.keepalive.String(), "-backoff-max", c.backoffMax.String())
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			stop()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			stop()
			return nil, fmt.Errorf("start simulator process: %w", err)
		}
		cmds, stdins = append(cmds, cmd), append(stdins, in)
	}
	return stop, nil
}

// waitConnected polls get_status until n edges are connected.
func waitConnected(ctx context.Context, gw *scale.Gateway, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := 0
	for time.Now().Before(deadline) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		got, err := scale.ConnectedEdges(cctx, gw)
		cancel()
		if err == nil {
			if got >= n {
				return nil
			}
			last = got
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%d of %d connected after %v", last, n, limit)
}

// scenarioIdle: resident memory per idle edge, and get_status latency with the fleet up;
// floor is the same figure for the libraries alone (0: not measured).
func scenarioIdle(ctx context.Context, c benchConfig, gw *scale.Gateway, rss0, floor int64, out io.Writer) error {
	rss1, err := scale.RSS(gw.PID())
	if err != nil {
		return err
	}
	report(out, "gateway RSS right after connecting", fmtBytes(rss1), "")
	cpu0 := cpuTicks(gw.PID())
	time.Sleep(c.settle)
	cpu1 := cpuTicks(gw.PID())
	rss2, err := scale.RSS(gw.PID())
	if err != nil {
		return err
	}
	report(out, fmt.Sprintf("gateway RSS after %v idle", c.settle), fmtBytes(rss2), "")
	// What the idle fleet costs the gateway's processors (keepalives, inventory pulls, GC).
	idleCPU := time.Duration(cpu1-cpu0) * 10 * time.Millisecond
	report(out, fmt.Sprintf("gateway CPU during those %v", c.settle),
		fmt.Sprintf("%.1f s (%.1f %% of one core)", idleCPU.Seconds(), 100*idleCPU.Seconds()/c.settle.Seconds()), "")
	perEdge := (rss2 - rss0) / int64(c.edges)
	report(out, "gateway RSS per idle edge", fmtBytes(perEdge)+" ("+rssVerdict(perEdge, floor)+")", "")
	report(out, "gateway threads", strconv.Itoa(scale.Threads(gw.PID())), "")
	fds, _ := scale.OpenFDs(gw.PID())
	report(out, "gateway open descriptors", strconv.Itoa(fds), "")
	for _, args := range []map[string]any{{"limit": 1}, {"limit": 100}, {"limit": 1000, "connected_only": true}} {
		var lat []time.Duration
		for range 20 {
			t := time.Now()
			res, err := gw.Call(ctx, "get_status", args)
			if err != nil || res.IsError {
				return fmt.Errorf("get_status: %v", err)
			}
			lat = append(lat, time.Since(t))
		}
		slices.Sort(lat)
		b, _ := json.Marshal(args)
		report(out, "get_status "+string(b)+" median / max of 20", fmt.Sprintf("%v / %v",
			lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond)), "< 100 ms")
	}
	return nil
}

// scenarioFanout: ["true"] on min(fanout, edges) edges at once, one run_command per edge (this
// gateway has no run_on_edges yet; the calls go concurrently over the one MCP session).
func scenarioFanout(ctx context.Context, c benchConfig, gw *scale.Gateway, ids []scale.Identity, out io.Writer) error {
	n := min(c.fanout, len(ids))
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	var firstErr string
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			res, err := gw.Call(cctx, "run_command", map[string]any{"edge": ids[i].Name, "argv": []string{"true"}})
			if err != nil || res.IsError {
				mu.Lock()
				if failed++; firstErr == "" {
					firstErr = fmt.Sprintf("%v %+v", err, res)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	report(out, fmt.Sprintf("fan-out [\"true\"] to %d edges (concurrent run_command)", n), took.Round(time.Millisecond).String(), "< 3 s")
	if failed > 0 {
		report(out, "fan-out calls failed", fmt.Sprintf("%d (first: %.200s)", failed, firstErr), "0")
	}
	return nil
}

// scenarioRestart: SIGKILL the gateway, start it again on the same port and time how long the
// whole fleet takes to be back.
func scenarioRestart(ctx context.Context, c benchConfig, gw *scale.Gateway, env []string, out io.Writer) (*scale.Gateway, error) {
	killed := time.Now()
	gw.Kill()
	gw2, err := scale.StartGateway(ctx, c.gatewayBin, env)
	if err != nil {
		return gw, err
	}
	if err := waitConnected(ctx, gw2, c.edges, c.connectLimit); err != nil {
		return gw2, err
	}
	report(out, fmt.Sprintf("%d edges back after SIGKILL + restart", c.edges), time.Since(killed).Round(time.Millisecond).String(), "< 15 s")
	rss, _ := scale.RSS(gw2.PID())
	report(out, "restarted gateway RSS right after the storm", fmtBytes(rss), "")
	return gw2, nil
}

// scenarioUpload: one more edge reaches the gateway through toxiproxy with 100 ms latency each
// way and 10 Mbit/s each way; an upload_file of c.uploadBytes is timed end to end.
func scenarioUpload(ctx context.Context, c benchConfig, gw *scale.Gateway, gwAddr, hostFP string, id scale.Identity,
	dir string, out io.Writer, log *slog.Logger) error {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	px := toxiproxy.NewProxy(srv, "wan", "127.0.0.1:0", gwAddr)
	if err := px.Start(); err != nil {
		return err
	}
	defer px.Stop()
	const rateKBps = 1250 // 10 Mbit/s
	for _, stream := range []string{"upstream", "downstream"} {
		for _, tx := range []string{
			fmt.Sprintf(`{"name":"lat_%s","type":"latency","stream":%q,"attributes":{"latency":100}}`, stream, stream),
			fmt.Sprintf(`{"name":"bw_%s","type":"bandwidth","stream":%q,"attributes":{"rate":%d}}`, stream, stream, rateKBps),
		} {
			if _, err := px.Toxics.AddToxicJson(strings.NewReader(tx)); err != nil {
				return fmt.Errorf("toxic: %w", err)
			}
		}
	}
	fleet, err := scale.StartFleet(ctx, scale.FleetConfig{Gateway: px.Listen, HostKey: hostFP,
		KeepaliveInterval: c.keepalive, BackoffMax: c.backoffMax, Log: log.With("edge", "upload")}, []scale.Identity{id})
	if err != nil {
		return err
	}
	defer fleet.Stop()
	if err := waitConnected(ctx, gw, c.edges+1, time.Minute); err != nil {
		return err
	}
	body := make([]byte, c.uploadBytes)
	rand.Read(body)
	dest := filepath.Join(dir, "upload.bin")
	start := time.Now()
	res, err := gw.Call(ctx, "upload_file", map[string]any{"edge": id.Name, "path": dest,
		"content": base64.StdEncoding.EncodeToString(body), "encoding": "base64", "overwrite": true})
	took := time.Since(start)
	if err != nil {
		return err
	}
	if res.IsError {
		return errors.New("upload_file failed")
	}
	rate := float64(c.uploadBytes) / took.Seconds()
	link := float64(rateKBps * 1000)
	report(out, fmt.Sprintf("upload %s over 100 ms each way, 10 Mbit/s", fmtBytes(c.uploadBytes)),
		fmt.Sprintf("%v, %.2f Mbit/s = %.0f%% of the link", took.Round(time.Millisecond), rate*8/1e6, 100*rate/link), "≥ 80%")
	return nil
}
