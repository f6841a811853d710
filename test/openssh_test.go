package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestOpenSSHRefused points the OpenSSH client, authenticated with an authorized edge key, at the
// gateway: no command, shell, subsystem or forwarding may work.
func TestOpenSSHRefused(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/bin/ssh"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("/usr/bin/ssh missing in CI: %v", err)
		}
		t.Skip("/usr/bin/ssh not installed")
	}
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "sshuser", "")
	if err := os.Chmod(k.file, 0o600); err != nil {
		t.Fatal(err)
	}
	g := f.startGateway(t, nil)
	host, port, _ := net.SplitHostPort(g.addr)
	canary := filepath.Join(t.TempDir(), fmt.Sprintf("canary-%d", time.Now().UnixNano()))
	sshArgs := func(extra ...string) []string {
		return append([]string{
			"-F", "/dev/null",
			"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
			"-i", k.file, "-p", port, "-l", "edge",
		}, extra...)
	}
	run := func(t *testing.T, timeout time.Duration, args ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/usr/bin/ssh", sshArgs(args...)...)
		cmd.Env = baseEnv(f.dir)
		cmd.WaitDelay = 2 * time.Second
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			return -2, string(out)
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatalf("ssh: %v", err)
		}
		return 0, string(out)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"exec", []string{host, "touch " + canary}},
		{"shell", []string{"-tt", host}},
		{"sftp subsystem", []string{"-s", host, "sftp"}},
		{"remote forward", []string{"-N", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:0:127.0.0.1:9", host}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := run(t, 20*time.Second, tc.args...)
			if code == 0 || code == -2 {
				t.Errorf("ssh %v: exit %d (−2 = still running after 20 s), want refused with a non-zero exit:\n%s", tc.args, code, out)
			}
		})
	}

	t.Run("local forward", func(t *testing.T) {
		target, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer target.Close()
		accepted := make(chan struct{}, 1)
		go func() {
			if c, err := target.Accept(); err == nil {
				accepted <- struct{}{}
				c.Close()
			}
		}()
		lport := freePort(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/usr/bin/ssh", sshArgs("-N", "-o", "ExitOnForwardFailure=yes",
			"-L", fmt.Sprintf("127.0.0.1:%d:%s", lport, target.Addr().String()), host)...)
		cmd.Env = baseEnv(f.dir)
		cmd.WaitDelay = 2 * time.Second
		p := startProc(t, "ssh -L", cmd)
		// Either ssh gives up at once, or the forward it set up must carry nothing.
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && !p.exited() {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(lport), time.Second); err == nil {
				c.SetDeadline(time.Now().Add(time.Second))
				c.Write([]byte("x"))
				c.Read(make([]byte, 1))
				c.Close()
			}
			time.Sleep(200 * time.Millisecond)
		}
		select {
		case <-accepted:
			t.Errorf("a connection went through the gateway to %s", target.Addr())
		case <-time.After(500 * time.Millisecond):
		}
		if p.exited() && p.err == nil {
			t.Errorf("ssh -L exited 0")
		}
	})

	if _, err := os.Stat(canary); err == nil {
		t.Errorf("canary %s was created", canary)
	}
	if st := g.status(t, nil); st.Totals.Connected != 0 {
		t.Errorf("an OpenSSH session counts as a connected edge: %+v", st.Edges)
	}
}
