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

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// requireOpenSSH skips the test without the OpenSSH client, except in CI, which installs it.
func requireOpenSSH(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/ssh"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("/usr/bin/ssh missing in CI: %v", err)
		}
		t.Skip("/usr/bin/ssh not installed")
	}
}

// TestOpenSSHRefused points the OpenSSH client, authenticated with an authorized edge key, at the
// gateway: no command, shell, subsystem or forwarding may work.
func TestOpenSSHRefused(t *testing.T) {
	t.Parallel()
	requireOpenSSH(t)
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "sshuser", "")
	if err := os.Chmod(k.KeyFile, 0o600); err != nil {
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
			"-i", k.KeyFile, "-p", port, "-l", "edge",
		}, extra...)
	}
	run := func(t *testing.T, timeout time.Duration, args ...string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/usr/bin/ssh", sshArgs(args...)...)
		cmd.Env = localfleet.BaseEnv(f.Dir)
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
		{"stdio forward -W", []string{"-W", "127.0.0.1:9", host}},
		{"agent forwarding -A", []string{"-A", "-o", "ForwardAgent=yes", host, "touch " + canary}},
		{"x11 forwarding -X", []string{"-X", host, "touch " + canary}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := run(t, 20*time.Second, tc.args...)
			if code == 0 || code == -2 {
				t.Errorf("ssh %v: exit %d (−2 = still running after 20 s), want refused with a non-zero exit:\n%s", tc.args, code, out)
			}
		})
	}

	// -L and -D: either ssh gives up at once, or the forward it set up must carry nothing.
	for _, fw := range []struct {
		name  string
		flag  func(lport int, target string) []string
		hello func(target *net.TCPAddr) []byte
	}{
		{"local forward -L", func(lport int, target string) []string {
			return []string{"-L", fmt.Sprintf("127.0.0.1:%d:%s", lport, target)}
		}, func(*net.TCPAddr) []byte { return []byte("x") }},
		{"dynamic forward -D", func(lport int, _ string) []string {
			return []string{"-D", fmt.Sprintf("127.0.0.1:%d", lport)}
		}, func(a *net.TCPAddr) []byte { // SOCKS4 CONNECT to the target
			return []byte{4, 1, byte(a.Port >> 8), byte(a.Port), 127, 0, 0, 1, 0}
		}},
	} {
		t.Run(fw.name, func(t *testing.T) {
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
			args := append([]string{"-N", "-o", "ExitOnForwardFailure=yes"}, fw.flag(lport, target.Addr().String())...)
			cmd := exec.CommandContext(ctx, "/usr/bin/ssh", sshArgs(append(args, host)...)...)
			cmd.Env = localfleet.BaseEnv(f.Dir)
			cmd.WaitDelay = 2 * time.Second
			p := startProc(t, "ssh "+fw.name, cmd)
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) && p.Running() {
				if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(lport), time.Second); err == nil {
					c.SetDeadline(time.Now().Add(time.Second))
					c.Write(fw.hello(target.Addr().(*net.TCPAddr)))
					c.Read(make([]byte, 8))
					c.Close()
				}
				time.Sleep(200 * time.Millisecond)
			}
			select {
			case <-accepted:
				t.Errorf("a connection went through the gateway to %s", target.Addr())
			case <-time.After(500 * time.Millisecond):
			}
			if !p.Running() && p.Err() == nil {
				t.Errorf("ssh %s exited 0", fw.name)
			}
		})
	}

	if _, err := os.Stat(canary); err == nil {
		t.Errorf("canary %s was created", canary)
	}
	if st := g.status(t, nil); st.Totals.Connected != 0 {
		t.Errorf("an OpenSSH session counts as a connected edge: %+v", st.Edges)
	}
}
