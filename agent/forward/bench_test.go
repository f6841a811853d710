package forward

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// BenchmarkRunCommand is the docs/BENCHMARKS.md row: `true` run on a forward edge through
// Edge.Exec (what run_command calls) next to OpenSSH's own client multiplexed over a
// ControlMaster connection to the same sshd. Both pay the login shell's start-up (a heavy
// ~/.bashrc dominates both). Reports p50 and p90 in ms.
//
//	go test -run '^$' -bench RunCommand -benchtime 50x ./agent/forward/
func BenchmarkRunCommand(b *testing.B) {
	key, pemBytes := newSigner(b)
	s := startSSHD(b, key.PublicKey())

	b.Run("forward", func(b *testing.B) {
		file := filepath.Join(b.TempDir(), "forward_edges.yaml")
		entry := fmt.Sprintf("- {name: bench, address: '%s', user: %s, host_key: %q}\n", s.addr, s.user,
			strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.hostKey))))
		if err := os.WriteFile(file, []byte(entry), 0o600); err != nil {
			b.Fatal(err)
		}
		f, err := New(file, Options{ClientKey: key})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx) }()
		defer func() { cancel(); <-done }()
		var e *Edge
		for deadline := time.Now().Add(10 * time.Second); ; {
			ge, err := f.Edge("bench")
			if err == nil && ge.Connected() {
				e = ge.(*Edge)
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("not connected")
			}
			time.Sleep(10 * time.Millisecond)
		}
		runTimed(b, func() error {
			res, err := e.Exec(context.Background(), "bench", execP("true"), nil, nil)
			if err == nil && res.ExitCode != 0 {
				err = fmt.Errorf("exit %d", res.ExitCode)
			}
			return err
		})
	})

	b.Run("openssh-controlmaster", func(b *testing.B) {
		if _, err := exec.LookPath("ssh"); err != nil {
			b.Skip("no ssh client")
		}
		dir, err := os.MkdirTemp("", "fwdbench")
		if err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(dir)
		keyFile, kh, ctl := filepath.Join(dir, "id"), filepath.Join(dir, "known_hosts"), filepath.Join(dir, "ctl")
		_, port, _ := strings.Cut(s.addr, ":")
		_ = os.WriteFile(keyFile, pemBytes, 0o600)
		_ = os.WriteFile(kh, []byte(fmt.Sprintf("[127.0.0.1]:%s %s", port, ssh.MarshalAuthorizedKey(s.hostKey))), 0o600)
		base := []string{"-F", "/dev/null", "-i", keyFile, "-o", "UserKnownHostsFile=" + kh, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "ControlPath=" + ctl, "-p", port, s.user + "@127.0.0.1"}
		master := exec.Command("ssh", append([]string{"-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-N"}, base...)...)
		if err := master.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() { _ = master.Process.Kill(); _ = master.Wait() }()
		for deadline := time.Now().Add(10 * time.Second); ; {
			if _, err := os.Stat(ctl); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatal("ControlMaster did not start")
			}
			time.Sleep(10 * time.Millisecond)
		}
		runTimed(b, func() error {
			return exec.Command("ssh", append(base, "true")...).Run()
		})
	})
}

// runTimed runs fn b.N times and reports the p50 and p90 latency.
func runTimed(b *testing.B, fn func() error) {
	b.Helper()
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := fn(); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(times)
	ms := func(q float64) float64 {
		return float64(times[min(int(q*float64(len(times))), len(times)-1)].Microseconds()) / 1000
	}
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.9), "p90-ms")
}
