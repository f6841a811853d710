package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

const sshClient = "/usr/bin/ssh"

// TestAgentless runs the gateway binary (GATEWAY_MODE=both) with Debian's sshd as a device
// that runs no companion, only the real OpenSSH client keeping `ssh -N -R 0:127.0.0.1:<sshd>`
// to the gateway with a key marked agentless: run_command reaches the device through that
// tunnel, the gateway opens no listening socket for it, the key is refused for exec, -L and a
// second -R, and the edge goes offline when ssh dies and comes back when it reconnects.
func TestAgentless(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(sshClient); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip("no OpenSSH client:", err)
	}
	f := newFixture(t)
	clientKeyFile, client := f.clientKey(t)
	dev := startSSHD(t, client.PublicKey())

	dir := t.TempDir()
	devKey := filepath.Join(dir, "device_ed25519") // the device's key for its tunnel
	devSigner, _, err := keys.LoadOrGenerate(devKey, "agentless device")
	if err != nil {
		t.Fatal(err)
	}
	impKey := filepath.Join(dir, "imp_ed25519") // pinned to a host key the device does not have
	impSigner, _, err := keys.LoadOrGenerate(impKey, "agentless, wrong pin")
	if err != nil {
		t.Fatal(err)
	}
	wrongPin := newSignerFile(t, dir)
	probeKey := filepath.Join(dir, "probe_ed25519") // a second agentless key, for the refusals
	probeSigner, _, err := keys.LoadOrGenerate(probeKey, "agentless probe")
	if err != nil {
		t.Fatal(err)
	}
	hostFP := keys.Fingerprint(dev.HostKey)
	lines := fmt.Sprintf("agentless,user=%q,host_key=%q,name=\"rtr\",labels=\"role=router\" %s\n", dev.User, hostFP,
		keys.AuthorizedLine(devSigner.PublicKey())) +
		fmt.Sprintf("agentless,user=%q,host_key=%q,name=\"probe\" %s\n", dev.User, hostFP, keys.AuthorizedLine(probeSigner.PublicKey())) +
		"agentless,name=\"broken\" " + keys.AuthorizedLine(client.PublicKey()) + "\n" + // missing options: refused
		fmt.Sprintf("agentless,user=%q,host_key=%q,name=\"imp\" %s\n", dev.User, keys.AuthorizedLine(wrongPin),
			keys.AuthorizedLine(impSigner.PublicKey()))
	if err := f.AuthorizeLines(lines); err != nil {
		t.Fatal(err)
	}
	g := f.startGateway(t, map[string]string{"GATEWAY_MODE": "both", "CLIENT_KEY_FILE": clientKeyFile,
		"FORWARD_EDGES_FILE": filepath.Join(f.KeysDir, "forward_edges.yaml")})
	knownHosts := filepath.Join(dir, "known_hosts")
	host, port, _ := net.SplitHostPort(g.addr)
	if err := os.WriteFile(knownHosts, []byte(fmt.Sprintf("[%s]:%s %s\n", host, port, keys.AuthorizedLine(f.HostKey))), 0o600); err != nil {
		t.Fatal(err)
	}
	devFP := keys.Fingerprint(devSigner.PublicKey())
	if e, _ := g.edgeByFP(t, devFP); e.Kind != "agentless" || e.Connected || e.Name != "rtr" || e.Problem == "" {
		t.Errorf("agentless edge before its tunnel = %+v, want kind agentless, offline with a problem", e)
	}
	if e, _ := g.edgeByFP(t, keys.Fingerprint(client.PublicKey())); e.Fingerprint != "" {
		t.Errorf("the agentless line without user=/host_key= was authorized: %+v", e)
	}
	if !strings.Contains(g.Stderr(), `"line":3,`) || !strings.Contains(g.Stderr(), "agentless line without user=") {
		t.Errorf("no warning naming line 3 (agentless without options) in the gateway's log:\n%s", tail(g.Stderr(), 3000))
	}

	before := listeners(t, g.PID())
	sshArgs := func(key string, extra ...string) []string {
		return append([]string{"-F", "/dev/null", "-p", port, "-i", key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + knownHosts, "-o", "ServerAliveInterval=5",
			"-o", "ExitOnForwardFailure=yes", "-o", "ConnectTimeout=10"}, append(extra, "device@"+host)...)
	}
	tunnel := func() *exec.Cmd {
		cmd := exec.Command(sshClient, sshArgs(devKey, "-N", "-R", "0:"+dev.Addr)...)
		cmd.Stderr = &syncBuf{}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	ssh1 := tunnel()
	e := g.waitConnected(t, devFP, nil)
	if e.Kind != "agentless" || e.Name != "rtr" || e.Labels["role"] != "router" {
		t.Errorf("agentless edge = %+v, want kind agentless, name rtr, role=router", e)
	}
	awkward := []any{"printf", "%s|", "two words", "it's", "$HOME", "a\nb"}
	r := g.call(t, "run_command", map[string]any{"edge": "rtr", "argv": awkward})
	if out := decode[execOut](t, r.Structured); r.IsError || out.ExitCode != 0 || out.Stdout != "two words|it's|$HOME|a\nb|" {
		t.Errorf("run_command through the reverse tunnel: isError=%v %+v %s", r.IsError, out, r.Text)
	}
	if r := g.call(t, "find_edges", map[string]any{"selector": "role=router"}); r.IsError || !strings.Contains(r.Text, "rtr") {
		t.Errorf("find_edges role=router: %s", r.Text)
	}
	target := filepath.Join(t.TempDir(), "up.txt")
	if up := g.call(t, "upload_file", map[string]any{"edge": "rtr", "path": target, "content": "hello\nagentless\n"}); up.IsError {
		t.Errorf("upload_file: %s", up.Text)
	} else if b, err := os.ReadFile(target); err != nil || string(b) != "hello\nagentless\n" {
		t.Errorf("uploaded file: %q %v", b, err)
	}
	if down := g.call(t, "download_file", map[string]any{"edge": "rtr", "path": target}); down.IsError || down.Structured["content"] != "hello\nagentless\n" {
		t.Errorf("download_file: %s", down.Text)
	}
	if r := g.call(t, "get_device_info", map[string]any{"edge": "rtr", "refresh": true}); r.IsError || r.Structured["os"] == nil {
		t.Errorf("get_device_info: %s", r.Text)
	}
	if r := g.call(t, "run_on_edges", map[string]any{"target": "role=router", "argv": []any{"echo", "fleet"}}); r.IsError || !strings.Contains(r.Text, "fleet") {
		t.Errorf("run_on_edges role=router: %s", r.Text)
	}
	if after := listeners(t, g.PID()); !slices.Equal(before, after) {
		t.Errorf("the gateway's listening sockets changed with the tunnel: before %v, after %v", before, after)
	}
	if !strings.Contains(dev.Log(), "Accepted publickey") {
		t.Errorf("the device's sshd saw no login")
	}

	// The device's ssh dies: offline; then the other key's refusals; then it reconnects.
	_ = ssh1.Process.Kill()
	_ = ssh1.Wait()
	if !waitFor(connectTimeout, func() bool { e, _ := g.edgeByFP(t, devFP); return !e.Connected }) {
		t.Fatalf("agentless edge still connected after its ssh was killed")
	}
	if r := g.call(t, "run_command", map[string]any{"edge": "rtr", "argv": []any{"true"}}); !r.IsError {
		t.Errorf("run_command on the offline agentless edge succeeded")
	}

	// exec with an agentless key.
	t.Log("agentless edge offline; refusals next")
	out, err := run(sshClient, append(sshArgs(probeKey), "true")...)
	if err == nil || !strings.Contains(string(out), "prohibited") {
		t.Errorf("ssh … true with the agentless key: err %v, output %q; want refused (administratively prohibited)", err, out)
	}
	t.Log("-L next")
	// -L: the channel is refused when something connects to the local port.
	lport, err := localfleet.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	lcmd := exec.Command(sshClient, sshArgs(probeKey, "-N", "-L", fmt.Sprintf("127.0.0.1:%d:%s", lport, dev.Addr))...)
	lerr := &syncBuf{}
	lcmd.Stderr = lerr
	if err := lcmd.Start(); err != nil {
		t.Fatal(err)
	}
	var got string
	waitFor(10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", lport), time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, _ := bufio.NewReader(c).ReadString('\n')
		got = b
		return true
	})
	if strings.HasPrefix(got, "SSH-") {
		t.Errorf("-L with the agentless key reached the device's sshd: %q", got)
	}
	if !waitFor(5*time.Second, func() bool { return strings.Contains(lerr.String(), "prohibited") }) {
		t.Errorf("-L: no refusal in ssh's output: %q", lerr.String())
	}
	_ = lcmd.Process.Kill()
	_ = lcmd.Wait()
	// A second -R on one connection.
	t.Log("second -R next")
	out, err = run(sshClient, sshArgs(probeKey, "-N", "-R", "0:"+dev.Addr, "-R", "0:127.0.0.1:9")...)
	if err == nil || !strings.Contains(string(out), "forwarding failed") {
		t.Errorf("second -R with the agentless key: err %v, output %q; want the second forward refused", err, out)
	}
	audit := g.auditLog()
	for _, want := range []string{"session (exec, shell, subsystem) refused", "direct-tcpip (-L, -D) refused", "second tcpip-forward (-R) refused"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log has no %q", want)
		}
	}

	// A device whose sshd offers another host key than the pinned one: never logged in to.
	logins := strings.Count(dev.Log(), "Accepted publickey")
	icmd := exec.Command(sshClient, sshArgs(impKey, "-N", "-R", "0:"+dev.Addr)...)
	if err := icmd.Start(); err != nil {
		t.Fatal(err)
	}
	impFP := keys.Fingerprint(impSigner.PublicKey())
	var imp edgeStatus
	if !waitFor(connectTimeout, func() bool { imp, _ = g.edgeByFP(t, impFP); return strings.Contains(imp.Problem, "host key") }) {
		t.Errorf("agentless edge with the wrong pin: %+v, want offline with the host key as the problem", imp)
	}
	if imp.Connected || strings.Count(dev.Log(), "Accepted publickey") != logins {
		t.Errorf("the gateway logged in to a device whose host key is not the pinned one")
	}
	_ = icmd.Process.Kill()
	_ = icmd.Wait()

	tunnel()
	g.waitConnected(t, devFP, nil)
	r = g.call(t, "run_command", map[string]any{"edge": "rtr", "command": "echo back; exit 3"})
	if out := decode[execOut](t, r.Structured); out.ExitCode != 3 || out.Stdout != "back\n" {
		t.Errorf("run_command after the tunnel came back: %+v %s", out, r.Text)
	}
	if after := listeners(t, g.PID()); !slices.Equal(before, after) {
		t.Errorf("the gateway's listening sockets changed: before %v, after %v", before, after)
	}
}

// newSignerFile makes a throwaway ed25519 public key.
func newSignerFile(t *testing.T, dir string) ssh.PublicKey {
	t.Helper()
	s, _, err := keys.LoadOrGenerate(filepath.Join(dir, "throwaway"), "throwaway")
	if err != nil {
		t.Fatal(err)
	}
	return s.PublicKey()
}

// run runs a command for at most 20 s and returns its combined output.
func run(name string, args ...string) ([]byte, error) {
	ctx, cancel := contextTimeout(20 * time.Second)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// listeners lists the listening TCP sockets (local address) the process pid holds, from
// /proc/<pid>/fd and /proc/net/tcp{,6}.
func listeners(t *testing.T, pid int) []string {
	t.Helper()
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 9 && fs[3] == "0A" && inodes[fs[9]] {
				out = append(out, fs[1])
			}
		}
	}
	slices.Sort(out)
	if len(out) == 0 {
		t.Fatalf("process %d holds no listening socket: is it the gateway?", pid)
	}
	return out
}

// syncBuf is an io.Writer safe for a process's output and the test reading it.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 1<<20 {
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
