package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

const (
	// edgeName is the benchmark edge's enrolled name.
	edgeName = "bench-edge"
	// rowBudget bounds one measured row (warm-up included).
	rowBudget = 5 * time.Minute
)

// report is everything one run measured.
type report struct {
	started     time.Time
	machine     string
	sshVersion  string
	mcp         summary          // run_command ["true"] through MCP
	noop        summary          // get_agent_pubkey through MCP: the MCP round trip alone
	ssh         summary          // multiplexed ssh true
	sshSkipped  string           // why the OpenSSH rows are missing, or empty
	floor       summary          // fork+exec of true from Go
	shell       string           // the login shell sshd runs commands with
	shellBare   summary          // `SHELL -c true`
	shellRC     summary          // the same as sshd starts it (SSH_CLIENT set): bash then reads ~/.bashrc
	uploadCPU   [3]time.Duration // gateway, edge, this client: CPU used by the MCP uploads
	uploadBytes int64
	mcpUpload   []float64 // MiB/s per run
	scpUpload   []float64 // MiB/s per run
	transfer    transferReport
	attack      attackReport
	rssIdle     [2]int64 // gateway, edge: idle after connecting
	rssAfter    [2]int64 // gateway, edge: idle after the runs
	gatewayPID  int
	edgePID     int
}

// run starts the fleet and the throw-away sshd under one temporary directory, measures every
// row and stops and removes everything it started, whatever happens.
func run(ctx context.Context, o options) (_ *report, err error) {
	dir, err := os.MkdirTemp("", "rpcbench-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	defer func() {
		if rmErr := os.RemoveAll(dir); rmErr != nil && err == nil {
			err = fmt.Errorf("remove temporary directory: %w", rmErr)
		}
	}()
	r := &report{started: time.Now().UTC(), machine: machine(), uploadBytes: int64(o.uploadMiB) << 20}

	fleetDir := filepath.Join(dir, "fleet")
	if err := os.Mkdir(fleetDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", fleetDir, err)
	}
	fleet, err := localfleet.Prepare(ctx, localfleet.Config{Dir: fleetDir, EdgeBin: o.edgeBin,
		Edges: []localfleet.EdgeSpec{{Name: edgeName}}, Log: os.Stderr, Logger: slog.Default()})
	if err != nil {
		return nil, err
	}
	var seed []byte
	if o.attackers > 0 {
		if seed, err = attackSetup(fleet, o.attackers); err != nil {
			return nil, err
		}
	}
	filesDir := filepath.Join(dir, "files")
	if err := os.Mkdir(filesDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", filesDir, err)
	}
	gw, err := localfleet.StartGateway(ctx, fleet, o.gatewayBin,
		fmt.Sprintf("MAX_UPLOAD_BYTES=%d", 2*r.uploadBytes), "FILES_DIR="+filesDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := gw.Close(); cerr != nil {
			slog.Warn("gateway did not stop cleanly", "err", cerr)
		}
	}()
	edge, err := fleet.StartEnrolled(gw.SSHAddr(), edgeName)
	if err != nil {
		return nil, err
	}
	defer edge.Stop()
	if err := gw.WaitForEdge(ctx, edge); err != nil {
		return nil, err
	}
	r.gatewayPID, r.edgePID = gw.PID(), edge.PID()
	// The edge's first inventory runs its slow probes (tool versions, and `apt-get -s upgrade`
	// at 1.5 s of CPU here) in the background of whatever row comes next; wait for it.
	if _, err := gw.CallStructured(ctx, "get_device_info", map[string]any{"edge": edgeName}); err != nil {
		return nil, fmt.Errorf("wait for the edge's first inventory: %w", err)
	}

	// e, first half: memory with the tunnel up and nothing done yet.
	if r.rssIdle, err = idleRSS(ctx, o.idle, r.gatewayPID, r.edgePID); err != nil {
		return nil, err
	}

	// b's server first, so that a and b can be measured in alternating blocks.
	srv, err := startSSHD(ctx, filepath.Join(dir, "sshd"), o.sshdBin)
	switch {
	case errors.Is(err, errNoSSHD):
		r.sshSkipped = errNoSSHD.Error()
		slog.Warn("no OpenSSH server; the comparison rows are skipped", "sshd", o.sshdBin)
	case err != nil:
		return nil, err
	default:
		defer srv.stop()
		if v, err := srv.run(ctx, "ssh", "-V"); err == nil {
			r.sshVersion = v
		}
	}

	// a: run_command ["true"] through the MCP stdio client, the gateway and the edge; a0: the
	// MCP round trip alone (get_agent_pubkey, answered by the gateway itself, through the same
	// client); c: the floor, one fork+exec of true from Go; and b: OpenSSH, multiplexed over
	// one master connection. All in alternating blocks, so that a − a0 − c, the tunnel and
	// edge overhead, compares figures taken in the same spells of a shared machine.
	args := map[string]any{"edge": edgeName, "argv": []string{"true"}}
	if err := checkTrue(ctx, gw, args); err != nil {
		return nil, err
	}
	loops := []loop{
		{name: "run_command", call: func(ctx context.Context) error {
			res, err := gw.Call(ctx, "run_command", args)
			if err != nil {
				return err
			}
			if res.IsError {
				return fmt.Errorf("run_command returned an error: %s", localfleet.ResultText(res))
			}
			return nil
		}},
		{name: "get_agent_pubkey", call: func(ctx context.Context) error {
			res, err := gw.Call(ctx, "get_agent_pubkey", map[string]any{})
			if err != nil {
				return err
			}
			if res.IsError {
				return fmt.Errorf("get_agent_pubkey returned an error: %s", localfleet.ResultText(res))
			}
			return nil
		}},
		{name: "fork+exec", call: func(context.Context) error { return exec.Command("true").Run() }},
	}
	if srv != nil {
		loops = append(loops, loop{name: "ssh", call: func(ctx context.Context) error {
			_, err := srv.run(ctx, "ssh", srv.mux("true")...)
			return err
		}})
	}
	slog.Info("measuring run_command and get_agent_pubkey through MCP, fork+exec of true and multiplexed ssh true, in alternating blocks",
		"warmup", o.warmup, "n", o.n, "ssh", srv != nil)
	res, err := alternateLoops(ctx, loops, o.warmup, o.n)
	if err != nil {
		return nil, err
	}
	r.mcp, r.noop, r.floor = summarize(res[0]), summarize(res[1]), summarize(res[2])
	if srv != nil {
		r.ssh = summarize(res[3])
	}

	// g: run_command again while hostile edges attack the gateway.
	if o.attackers > 0 {
		if err := measureAttack(ctx, o, r, gw, fleet, seed); err != nil {
			return nil, err
		}
	}

	// b1, b2: the login shell's own startup, which row b skips.
	if srv != nil {
		if err := measureShell(ctx, o, r, srv.port); err != nil {
			return nil, err
		}
	}

	// f: files from the gateway's FILES_DIR (source_path) against scp + sync, and the
	// gateway's memory during a large one; before d, whose base64 content grows the heap.
	if err := measureTransfers(ctx, o, r, gw, fleet, srv, filesDir); err != nil {
		return nil, err
	}

	// d: one file, uploaded through MCP (base64 content) and with scp + sync.
	if err := measureUploads(ctx, o, r, gw, fleet, srv, dir); err != nil {
		return nil, err
	}

	// e, second half: memory once the runs are over.
	if r.rssAfter, err = idleRSS(ctx, o.idle, r.gatewayPID, r.edgePID); err != nil {
		return nil, err
	}
	if err := edge.Exited(); err != nil {
		return nil, err
	}
	return r, nil
}

// checkTrue makes one call and checks it really ran true on the edge, so the timed loop
// measures successful calls.
func checkTrue(ctx context.Context, gw *localfleet.Gateway, args map[string]any) error {
	raw, err := gw.CallStructured(ctx, "run_command", args)
	if err != nil {
		return err
	}
	var out struct {
		ExitCode int `json:"exit_code"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("run_command: decode: %w", err)
	}
	if out.ExitCode != 0 {
		return fmt.Errorf("run_command [true] exited %d, want 0", out.ExitCode)
	}
	return nil
}

// timeLoop calls f warmup times untimed, then n times timed, sequentially, within rowBudget.
func timeLoop(ctx context.Context, name string, warmup, n int, f func(context.Context) error) (summary, error) {
	samples, err := timeCalls(ctx, name, warmup, n, f)
	if err != nil {
		return summary{}, err
	}
	return summarize(samples), nil
}

// alternateBlockCount is how many blocks of each loop alternateBlocks runs.
const alternateBlockCount = 10

// loop is one side of alternateBlocks: enter, if set, runs before each of its blocks.
type loop struct {
	name  string
	enter func() error
	call  func(context.Context) error
}

// alternateBlocks is alternateLoops for two loops.
func alternateBlocks(ctx context.Context, loops [2]loop, warmup, n int) ([2][]time.Duration, error) {
	var samples [2][]time.Duration
	res, err := alternateLoops(ctx, loops[:], warmup, n)
	copy(samples[:], res)
	return samples, err
}

// alternateLoops times n calls of each loop (after warmup untimed calls of each), in
// alternateBlockCount blocks that take turns, a block of the first, then of the second, and
// so on, so that the shared machine's slow and fast spells fall on all alike. It returns
// each loop's samples in the order taken.
func alternateLoops(ctx context.Context, loops []loop, warmup, n int) ([][]time.Duration, error) {
	samples := make([][]time.Duration, len(loops))
	for _, l := range loops {
		if l.enter != nil {
			if err := l.enter(); err != nil {
				return samples, err
			}
		}
		if _, err := timeCalls(ctx, l.name, warmup, 0, l.call); err != nil {
			return samples, err
		}
	}
	per := n / alternateBlockCount
	for b := range alternateBlockCount {
		for i, l := range loops {
			if b == alternateBlockCount-1 {
				per = n - len(samples[i])
			}
			if l.enter != nil {
				if err := l.enter(); err != nil {
					return samples, err
				}
			}
			s, err := timeCalls(ctx, l.name, 0, per, l.call)
			if err != nil {
				return samples, err
			}
			samples[i] = append(samples[i], s...)
		}
	}
	return samples, nil
}

// timeCalls is timeLoop returning the samples.
func timeCalls(ctx context.Context, name string, warmup, n int, f func(context.Context) error) ([]time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, rowBudget)
	defer cancel()
	samples := make([]time.Duration, 0, n)
	for i := range warmup + n {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%s: stopped after %d of %d calls: %w", name, i, warmup+n, err)
		}
		t0 := time.Now()
		if err := f(ctx); err != nil {
			return nil, fmt.Errorf("%s: call %d: %w", name, i+1, err)
		}
		if i >= warmup {
			samples = append(samples, time.Since(t0))
		}
	}
	return samples, nil
}

// measureUploads writes one random file and uploads it uploadRuns times through MCP and, if
// sshd runs, with scp over the master connection followed by sync.
func measureUploads(ctx context.Context, o options, r *report, gw *localfleet.Gateway, fleet *localfleet.Layout, srv *sshd, dir string) error {
	data := make([]byte, r.uploadBytes)
	if _, err := rand.Read(data); err != nil {
		return fmt.Errorf("random upload data: %w", err)
	}
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	src := filepath.Join(dir, "upload.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		return fmt.Errorf("write upload source: %w", err)
	}
	args := map[string]any{
		"edge":      edgeName,
		"path":      filepath.Join(fleet.UploadDir, "upload.bin"),
		"content":   base64.StdEncoding.EncodeToString(data),
		"encoding":  "base64",
		"overwrite": true,
	}
	data = nil // only the base64 copy is needed from here on

	slog.Info("measuring upload_file through MCP", "mib", o.uploadMiB, "runs", o.uploadRuns)
	cpu0, err := cpuTimes(r.gatewayPID, r.edgePID)
	if err != nil {
		return err
	}
	for i := range o.uploadRuns {
		t0 := time.Now()
		raw, err := gw.CallStructured(ctx, "upload_file", args)
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("upload %d: %w", i+1, err)
		}
		var out struct {
			Size   int64  `json:"size"`
			SHA256 string `json:"sha256"`
		}
		if err := json.Unmarshal(raw, &out); err != nil {
			return fmt.Errorf("upload_file: decode: %w", err)
		}
		if out.Size != r.uploadBytes || out.SHA256 != want {
			return fmt.Errorf("upload_file wrote %d bytes with sha256 %s, want %d and %s", out.Size, out.SHA256, r.uploadBytes, want)
		}
		r.mcpUpload = append(r.mcpUpload, mibPerSec(r.uploadBytes, d))
	}
	cpu1, err := cpuTimes(r.gatewayPID, r.edgePID)
	if err != nil {
		return err
	}
	for i := range cpu1 {
		r.uploadCPU[i] = cpu1[i] - cpu0[i]
	}

	if srv == nil {
		return nil
	}
	slog.Info("measuring scp + sync", "mib", o.uploadMiB, "runs", o.uploadRuns)
	dstDir := filepath.Join(dir, "scp")
	if err := os.Mkdir(dstDir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dstDir, err)
	}
	dst := filepath.Join(dstDir, "upload.bin")
	for i := range o.uploadRuns {
		t0 := time.Now()
		if _, err := srv.run(ctx, "scp", srv.scpArgs(src, dst)...); err != nil {
			return fmt.Errorf("scp %d: %w", i+1, err)
		}
		if _, err := srv.run(ctx, "sync"); err != nil {
			return fmt.Errorf("sync after scp %d: %w", i+1, err)
		}
		d := time.Since(t0)
		if st, err := os.Stat(dst); err != nil || st.Size() != r.uploadBytes {
			return fmt.Errorf("scp %d did not write %d bytes to %s (%v)", i+1, r.uploadBytes, dst, err)
		}
		r.scpUpload = append(r.scpUpload, mibPerSec(r.uploadBytes, d))
	}
	return nil
}

// cpuTimes is the CPU time used so far by the gateway, the edge and this process.
func cpuTimes(gatewayPID, edgePID int) ([3]time.Duration, error) {
	var out [3]time.Duration
	for i, pid := range []int{gatewayPID, edgePID} {
		d, err := cpuTime(pid)
		if err != nil {
			return out, err
		}
		out[i] = d
	}
	out[2] = selfCPU()
	return out, nil
}

// measureShell times what sshd adds to every command before it runs: the user's login shell
// `SHELL -c true`, bare and as sshd starts it (SSH_CLIENT set, SHLVL unset), which makes bash
// read ~/.bashrc. The difference is this machine's shell startup files, not OpenSSH.
func measureShell(ctx context.Context, o options, r *report, port int) error {
	r.shell = loginShell(os.Getuid())
	base := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "SHLVL=") || strings.HasPrefix(kv, "SSH_")
	})
	asSSHD := append(slices.Clone(base), fmt.Sprintf("SSH_CLIENT=127.0.0.1 50000 %d", port))
	var err error
	for _, m := range []struct {
		out *summary
		env []string
	}{{&r.shellBare, base}, {&r.shellRC, asSSHD}} {
		slog.Info("measuring the login shell's startup", "shell", r.shell, "n", o.n, "as_sshd", len(m.env) != len(base))
		*m.out, err = timeLoop(ctx, "shell startup", o.warmup, o.n, func(ctx context.Context) error {
			cmd := exec.CommandContext(ctx, r.shell, "-c", "true")
			cmd.Env = m.env
			return cmd.Run()
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// idleRSS lets the fleet idle for d, then reads the resident memory of the gateway and edge.
func idleRSS(ctx context.Context, d time.Duration, gatewayPID, edgePID int) ([2]int64, error) {
	select {
	case <-ctx.Done():
		return [2]int64{}, ctx.Err()
	case <-time.After(d):
	}
	var out [2]int64
	for i, pid := range []int{gatewayPID, edgePID} {
		rss, err := vmRSS(pid)
		if err != nil {
			return out, err
		}
		out[i] = rss
	}
	return out, nil
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
