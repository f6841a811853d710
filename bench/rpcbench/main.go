// Command rpcbench measures, in one run on this machine, what a call through mcp-ssh-gateway
// costs next to OpenSSH: `run_command` latency through the real gateway and a local edge
// against multiplexed `ssh -S ctl host true` on a throw-away sshd, the MCP no-op round trip
// and fork+exec floors (and the tunnel and edge overhead they leave: a − a0 − c), a
// 256 MiB upload_file with source_path and a 32 MiB one with base64 content against scp +
// sync, the gateway's memory during a 1 GiB upload, run_command while 100 authorized edges
// attack the gateway, and the resident memory of both binaries. It prints a markdown
// report to stdout; progress and warnings go to stderr. Everything listens on 127.0.0.1 and
// everything it starts is stopped and removed at the end.
//
// Usage (what `make bench` runs, after `make build`):
//
//	go run ./bench/rpcbench [-n 200] [-warmup 20] [-upload-mib 32] [-upload-runs 3]
//	    [-transfer-mib 256] [-big-mib 1024] [-attackers 100] [-attack-n 1000] [-timeout 10m]
//
// The binary paths default to $GATEWAY_BIN and $EDGE_BIN, else to $BIN_DIR (or bin/) joined
// with the binary's name. The OpenSSH rows need /usr/sbin/sshd (Debian: openssh-server) and
// root; without sshd they print "skipped: no sshd".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// options are the benchmark's command-line settings.
type options struct {
	gatewayBin  string
	edgeBin     string
	sshdBin     string
	n           int
	warmup      int
	uploadMiB   int
	uploadRuns  int
	transferMiB int // upload_file with source_path
	bigMiB      int // one large source_path upload under memory sampling; 0 skips it
	attackers   int // authorized but hostile edges attacking during the attack row; 0 skips it
	attackN     int // timed calls in the attack row, attack running and stopped alike
	idle        time.Duration
	timeout     time.Duration
}

// Bounds on the flags, so one run stays short on a shared machine.
const (
	maxN          = 100000
	maxUploadMiB  = 1024
	maxUploadRuns = 20
	maxBigMiB     = 4096
	maxAttackers  = 1000
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == attackChild {
		if err := runAttackChild(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "rpcbench %s: %v\n", attackChild, err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "rpcbench: %v\n", err)
		os.Exit(2)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	cmdline := "rpcbench " + strings.Join(os.Args[1:], " ")
	r, err := run(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "rpcbench: FAILED: %v\n", err)
		os.Exit(1)
	}
	r.print(os.Stdout, strings.TrimSpace(cmdline), o)
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("rpcbench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.gatewayBin, "gateway", localfleet.DefaultBin("GATEWAY_BIN", "mcp-ssh-gateway"), "path of the mcp-ssh-gateway binary (env GATEWAY_BIN)")
	fs.StringVar(&o.edgeBin, "edge", localfleet.DefaultBin("EDGE_BIN", "mcp-ssh-edge"), "path of the mcp-ssh-edge binary (env EDGE_BIN)")
	fs.StringVar(&o.sshdBin, "sshd", "/usr/sbin/sshd", "path of the OpenSSH server for the comparison rows")
	fs.IntVar(&o.n, "n", 200, "timed calls per latency row")
	fs.IntVar(&o.warmup, "warmup", 20, "untimed calls before each latency row")
	fs.IntVar(&o.uploadMiB, "upload-mib", 32, "size of the uploaded file in MiB")
	fs.IntVar(&o.uploadRuns, "upload-runs", 3, "uploads per transfer row (the median is reported)")
	fs.IntVar(&o.transferMiB, "transfer-mib", 256, "size in MiB of the file uploaded with source_path (and scp)")
	fs.IntVar(&o.bigMiB, "big-mib", 1024, "size in MiB of the upload during which the gateway's memory is sampled; 0 skips it")
	fs.IntVar(&o.attackers, "attackers", 100, "hostile authorized edges during the attack row (a child process in the idle scheduling class); 0 skips it")
	fs.IntVar(&o.attackN, "attack-n", 1000, "timed calls of the attack row with the attack running, and as many with it stopped, in alternating blocks")
	fs.DurationVar(&o.idle, "idle", 2*time.Second, "how long the fleet idles before its memory is read")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q (see -help)", fs.Args())
	}
	switch {
	case o.n < 1 || o.n > maxN:
		return o, fmt.Errorf("-n %d: want 1..%d", o.n, maxN)
	case o.warmup < 0 || o.warmup > maxN:
		return o, fmt.Errorf("-warmup %d: want 0..%d", o.warmup, maxN)
	case o.uploadMiB < 1 || o.uploadMiB > maxUploadMiB:
		return o, fmt.Errorf("-upload-mib %d: want 1..%d", o.uploadMiB, maxUploadMiB)
	case o.transferMiB < 1 || o.transferMiB > maxUploadMiB:
		return o, fmt.Errorf("-transfer-mib %d: want 1..%d", o.transferMiB, maxUploadMiB)
	case o.bigMiB < 0 || o.bigMiB > maxBigMiB:
		return o, fmt.Errorf("-big-mib %d: want 0..%d", o.bigMiB, maxBigMiB)
	case o.attackers < 0 || o.attackers > maxAttackers:
		return o, fmt.Errorf("-attackers %d: want 0..%d", o.attackers, maxAttackers)
	case o.attackN < alternateBlockCount || o.attackN > maxN:
		return o, fmt.Errorf("-attack-n %d: want %d..%d", o.attackN, alternateBlockCount, maxN)
	case o.uploadRuns < 1 || o.uploadRuns > maxUploadRuns:
		return o, fmt.Errorf("-upload-runs %d: want 1..%d", o.uploadRuns, maxUploadRuns)
	case o.idle < 0 || o.idle > time.Minute:
		return o, fmt.Errorf("-idle %s: want 0..1m", o.idle)
	case o.timeout <= 0:
		return o, errors.New("-timeout must be positive")
	}
	return o, localfleet.ResolveBinaries(&o.gatewayBin, &o.edgeBin)
}
