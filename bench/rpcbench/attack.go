package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// attackChild is the hidden first argument that makes rpcbench the attacking process.
const attackChild = "attack-child"

// attackReport is what the attack row measured.
type attackReport struct {
	attackers int
	quiet     summary       // run_command ["true"] with the attacking process stopped (SIGSTOP)
	loaded    summary       // run_command ["true"] while the attack runs
	onset     summary       // loaded, first block only: the attack's first round
	steady    summary       // loaded, the other blocks
	attackFor time.Duration // time the attack ran while measured (the loaded calls' total)
	rssBefore int64         // gateway VmRSS before the attack
	rssPeak   int64         // highest gateway VmRSS sampled during it
	rounds    int           // attack rounds the child completed while measured
}

// attackSetup derives the attackers' keys and authorizes them in the fleet's
// authorized_keys before the gateway starts; it returns the seed the child rebuilds them from.
func attackSetup(fleet *localfleet.Layout, n int) ([]byte, error) {
	seed := make([]byte, 32)
	rand.Read(seed)
	_, lines, err := localfleet.NewAttackers(seed, n, edgeName)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(fleet.AuthorizedKeys, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, fmt.Errorf("authorize attackers: %w", err)
	}
	_, err = f.WriteString(lines)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("authorize attackers: %w", err)
	}
	return seed, nil
}

// measureAttack starts the attacking child in the idle scheduling class (`chrt --idle 0`: it
// runs only when nothing else wants the processor, since on a real network the attackers'
// own CPU is on other machines; the gateway's share of every handshake still runs at normal
// priority), times run_command while it attacks, and stops it. With `nice -n 19` instead, the
// attackers' key exchanges (client side, 270 ms of CPU in the attack's first second against
// the gateway's 100 ms) still delayed the healthy edge's fork and exec.
func measureAttack(ctx context.Context, o options, r *report, gw *localfleet.Gateway, fleet *localfleet.Layout, seed []byte) error {
	a := &r.attack
	a.attackers = o.attackers
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("attack: find this program: %w", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, "chrt", "--idle", "0", self, attackChild,
		"-addr", gw.SSHAddr(), "-host-key", fleet.HostKeyFile,
		"-seed", hex.EncodeToString(seed), "-n", strconv.Itoa(o.attackers), "-for", (2 * rowBudget).String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if a.rssBefore, err = vmRSS(r.gatewayPID); err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("attack: start the attacking process: %w", err)
	}
	defer func() { // on every path: stop the child, then reap it
		stdin.Close()
		cancel()
		cmd.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "attacking" {
		return fmt.Errorf("attack: the attacking process did not start (%v)", lines.Err())
	}
	slog.Info("measuring run_command under attack, in blocks alternating with the attack stopped", "attackers", o.attackers, "n", o.attackN)
	stopSampling := sampleRSS(r.gatewayPID)
	quiet, loaded, err := alternate(ctx, cmd.Process, o.attackN, func(ctx context.Context) error {
		res, err := gw.Call(ctx, "run_command", map[string]any{"edge": edgeName, "argv": []string{"true"}})
		if err == nil && res.IsError {
			err = fmt.Errorf("run_command returned an error: %s", localfleet.ResultText(res))
		}
		return err
	})
	a.rssPeak, _ = stopSampling()
	if err == nil {
		first := len(loaded) / alternateBlockCount
		a.quiet, a.loaded, a.onset, a.steady = summarize(quiet), summarize(loaded), summarize(loaded[:first]), summarize(loaded[first:])
		for _, d := range loaded {
			a.attackFor += d
		}
	}
	stdin.Close() // the child stops and prints its round count
	if lines.Scan() {
		a.rounds, _ = strconv.Atoi(lines.Text())
	}
	return err
}

// alternate times n calls of f with the attacking process stopped (SIGSTOP: its connections
// stay open, it sends nothing) and n with it running, in alternating blocks (alternateBlocks).
// The attacker is left running.
func alternate(ctx context.Context, attacker *os.Process, n int, f func(context.Context) error) (quiet, loaded []time.Duration, err error) {
	sig := func(s syscall.Signal, what string) func() error {
		return func() error {
			if err := attacker.Signal(s); err != nil {
				return fmt.Errorf("attack: %s the attacking process: %w", what, err)
			}
			return nil
		}
	}
	defer attacker.Signal(syscall.SIGCONT)
	res, err := alternateBlocks(ctx, [2]loop{
		{name: "run_command, attack stopped", enter: sig(syscall.SIGSTOP, "stop"), call: f},
		{name: "run_command under attack", enter: sig(syscall.SIGCONT, "resume"), call: f},
	}, 0, n)
	return res[0], res[1], err
}

// runAttackChild is the attacking process: n authorized attackers, each cycling through the
// kinds of misbehaviour back to back, until stdin closes or the time is up. It prints
// "attacking" once started and the number of rounds done at the end.
func runAttackChild(args []string) error {
	fs := flag.NewFlagSet(attackChild, flag.ContinueOnError)
	addr := fs.String("addr", "", "gateway SSH address")
	hostKey := fs.String("host-key", "", "the gateway's host key file")
	seedHex := fs.String("seed", "", "seed of the attacker keys, hex")
	n := fs.Int("n", 100, "attackers")
	limit := fs.Duration("for", time.Minute, "stop after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	seed, err := hex.DecodeString(*seedHex)
	if err != nil || len(seed) == 0 || *n < 1 || *n > maxAttackers {
		return errors.New("attack-child: bad -seed or -n")
	}
	pem, err := os.ReadFile(*hostKey)
	if err != nil {
		return err
	}
	host, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		return fmt.Errorf("attack-child: host key: %w", err)
	}
	attackers, _, err := localfleet.NewAttackers(seed, *n, edgeName)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	go func() { // stdin closing is the parent's stop
		bufio.NewReader(os.Stdin).ReadByte()
		cancel()
	}()
	var rounds atomic.Int64
	var wg sync.WaitGroup
	for i, a := range attackers {
		wg.Go(func() {
			for r := 0; ctx.Err() == nil; r++ {
				if a.Attack(*addr, host.PublicKey(), i+r) {
					rounds.Add(1)
				} else { // not even connected: the gateway is gone or refusing, do not spin
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	fmt.Println("attacking")
	wg.Wait()
	fmt.Println(rounds.Load())
	return nil
}
