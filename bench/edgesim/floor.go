package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// Per-idle-edge targets of the gateway's resident memory (issue 17).
const (
	rssPerEdgeTarget  = 80 << 10
	rssPerEdgeStretch = 64 << 10
)

// runBare is the child process the bench measures the floor with: bareServer (the libraries
// alone) on a loopback port. It prints "ADDR FINGERPRINT", then answers each line read from
// stdin with the number of tunnels up, and exits when stdin closes.
func runBare(ctx context.Context, stdin io.Reader, out io.Writer) error {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	host, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	if _, err := scale.RaiseFDLimit(); err != nil {
		return err
	}
	b, err := newBareServer(host)
	if err != nil {
		return err
	}
	defer b.close()
	fmt.Fprintln(out, b.ln.Addr().String(), keys.Fingerprint(host.PublicKey()))
	sc := bufio.NewScanner(stdin)
	for sc.Scan() && ctx.Err() == nil {
		fmt.Fprintln(out, b.ready.Load())
	}
	return nil
}

// measureFloor runs the fleet against the libraries alone (an `edgesim bare` child) and
// measures that process's resident memory per idle edge the way the gateway's is measured:
// VmRSS after the same idle time, minus VmRSS before any edge.
func measureFloor(ctx context.Context, c benchConfig, dir string, ids []scale.Identity) (int64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "bare")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start floor server: %w", err)
	}
	defer func() { in.Close(); cmd.Wait() }()
	lines := bufio.NewScanner(outPipe)
	if !lines.Scan() {
		return 0, fmt.Errorf("floor server printed no address")
	}
	addr, fp, _ := strings.Cut(lines.Text(), " ")
	ready := func() (int, error) {
		if _, err := io.WriteString(in, "?\n"); err != nil {
			return 0, err
		}
		if !lines.Scan() {
			return 0, fmt.Errorf("floor server gone")
		}
		return strconv.Atoi(lines.Text())
	}
	time.Sleep(time.Second)
	rss0, err := scale.RSS(cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	stop, err := startChildren(ctx, c, dir, addr, fp, split(ids, c.procs))
	if err != nil {
		return 0, err
	}
	defer stop()
	deadline := time.Now().Add(c.connectLimit)
	for {
		n, err := ready()
		if err != nil {
			return 0, err
		}
		if n >= len(ids) {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("floor: %d of %d edges connected after %v", n, len(ids), c.connectLimit)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	time.Sleep(c.settle)
	rss, err := scale.RSS(cmd.Process.Pid)
	if err != nil {
		return 0, err
	}
	return (rss - rss0) / int64(len(ids)), nil
}

// rssVerdict is what the per-edge RSS row says beside the figure: the floor beside it, and whether
// the target and the stretch target are met.
func rssVerdict(perEdge, floor int64) string {
	met := func(limit int64) string {
		if perEdge <= limit {
			return "met"
		}
		return "not met"
	}
	s := fmt.Sprintf("target ≤ %s: %s; stretch ≤ %s: %s", fmtBytes(rssPerEdgeTarget), met(rssPerEdgeTarget),
		fmtBytes(rssPerEdgeStretch), met(rssPerEdgeStretch))
	if floor > 0 {
		s = "floor, libraries alone: " + fmtBytes(floor) + "; " + s
	}
	return s
}
