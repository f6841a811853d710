package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

const (
	// privsepDir is the directory sshd insists on when it runs as root; the Debian service
	// creates it at boot, a container without init may lack it.
	privsepDir = "/run/sshd"
	// sshTimeout bounds one ssh, scp or sync invocation.
	sshTimeout = 30 * time.Second
	// sshdReadyWait bounds how long sshd may take to listen.
	sshdReadyWait = 10 * time.Second
	// maxCapture bounds what is kept of a child's stderr.
	maxCapture = 16 << 10
)

// errNoSSHD is a machine without an OpenSSH server (Debian package openssh-server).
var errNoSSHD = errors.New("skipped: no sshd")

// sshd is a throw-away OpenSSH server on 127.0.0.1 and a multiplexing master connection to
// it, all configured from files under one directory.
type sshd struct {
	dir       string
	port      int
	user      string
	clientKey string
	known     string
	ctl       string // ControlPath of the master
	cmd       *exec.Cmd
	done      chan struct{}
	stderr    *capture
	masterPID int
	madePriv  bool // privsepDir was created by us and is removed on stop
}

// capture keeps the first maxCapture bytes written to it; safe for concurrent use.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer, dropping what exceeds maxCapture.
func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := maxCapture - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// String is what was captured, trimmed.
func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.TrimSpace(c.buf.String())
}

// startSSHD writes a host key, a client key, authorized_keys, known_hosts and a config under
// dir, starts `sshd -D -e -f CONFIG` and opens the master connection. It returns errNoSSHD
// when bin does not exist.
func startSSHD(ctx context.Context, dir, bin string) (_ *sshd, err error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, errNoSSHD
	}
	s := &sshd{dir: dir, ctl: filepath.Join(dir, "ctl"), done: make(chan struct{}), stderr: &capture{}}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	u, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("current user: %w", err)
	}
	s.user = u.Username
	if os.Geteuid() == 0 {
		if _, err := os.Stat(privsepDir); errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(privsepDir, 0o755); err != nil {
				return nil, fmt.Errorf("create sshd's privilege separation directory: %w", err)
			}
			s.madePriv = true
		}
	}

	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	host, _, err := keys.LoadOrGenerate(hostKeyFile, "rpcbench sshd")
	if err != nil {
		return nil, fmt.Errorf("sshd host key: %w", err)
	}
	s.clientKey = filepath.Join(dir, "id_ed25519")
	client, _, err := keys.LoadOrGenerate(s.clientKey, "rpcbench client")
	if err != nil {
		return nil, fmt.Errorf("ssh client key: %w", err)
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := keys.WriteFileAtomic(authorized, []byte(keys.AuthorizedLine(client.PublicKey())+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("sshd authorized_keys: %w", err)
	}
	if s.port, err = localfleet.FreePort(); err != nil {
		return nil, err
	}
	s.known = filepath.Join(dir, "known_hosts")
	knownLine := fmt.Sprintf("[127.0.0.1]:%d %s\n", s.port, keys.AuthorizedLine(host.PublicKey()))
	if err := keys.WriteFileAtomic(s.known, []byte(knownLine), 0o600); err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	config := filepath.Join(dir, "sshd_config")
	conf := strings.Join([]string{
		"Port " + strconv.Itoa(s.port),
		"ListenAddress 127.0.0.1",
		"HostKey " + hostKeyFile,
		"AuthorizedKeysFile " + authorized,
		"PidFile none",
		"UsePAM no",
		"StrictModes no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"Subsystem sftp internal-sftp",
		"LogLevel ERROR",
		// SHLVL=1 makes bash skip ~/.bashrc, which it otherwise reads for every command sshd runs:
		// the row then measures OpenSSH, not this machine's shell startup files (rows b1, b2).
		"SetEnv SHLVL=1",
		"",
	}, "\n")
	if err := keys.WriteFileAtomic(config, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("sshd_config: %w", err)
	}

	s.cmd = exec.Command(bin, "-D", "-e", "-f", config)
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	if err := s.waitListening(ctx); err != nil {
		return nil, err
	}

	// The master: authenticates once, then backgrounds itself (-f) and serves the clients
	// that name its ControlPath.
	if _, err := s.run(ctx, "ssh", s.sshArgs("-M", "-S", s.ctl, "-fN", "127.0.0.1")...); err != nil {
		return nil, fmt.Errorf("start the ssh master connection: %w (sshd said: %s)", err, s.stderr)
	}
	out, err := s.run(ctx, "ssh", s.sshArgs("-S", s.ctl, "-O", "check", "127.0.0.1")...)
	if err != nil {
		return nil, fmt.Errorf("check the ssh master connection: %w", err)
	}
	if m := regexp.MustCompile(`pid=(\d+)`).FindStringSubmatch(out); m != nil {
		s.masterPID, _ = strconv.Atoi(m[1])
	}
	slog.Info("started throw-away sshd", "pid", s.cmd.Process.Pid, "port", s.port, "master_pid", s.masterPID)
	return s, nil
}

// waitListening polls the port until sshd accepts, it exits, or sshdReadyWait passes.
func (s *sshd) waitListening(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sshdReadyWait)
	defer cancel()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-s.done:
			return fmt.Errorf("sshd exited at start: %s", s.stderr)
		case <-ctx.Done():
			return fmt.Errorf("sshd did not listen on %s within %s: %s", addr, sshdReadyWait, s.stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// sshArgs are the client options that make ssh use only this benchmark's key, known_hosts
// and user, never the caller's configuration or agent, followed by extra.
func (s *sshd) sshArgs(extra ...string) []string {
	return append([]string{
		"-F", "/dev/null",
		"-p", strconv.Itoa(s.port),
		"-l", s.user,
		"-i", s.clientKey,
		"-o", "IdentitiesOnly=yes",
		"-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile=" + s.known,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "LogLevel=ERROR",
	}, extra...)
}

// mux are the arguments of one multiplexed `ssh -S ctl -p PORT 127.0.0.1 true`.
func (s *sshd) mux(command ...string) []string {
	return append([]string{"-S", s.ctl, "-p", strconv.Itoa(s.port), "-F", "/dev/null", "-o", "BatchMode=yes", "127.0.0.1"}, command...)
}

// scpArgs copy src to dst on the server through the master connection.
func (s *sshd) scpArgs(src, dst string) []string {
	return []string{
		"-q", "-F", "/dev/null", "-P", strconv.Itoa(s.port), "-i", s.clientKey,
		"-o", "ControlPath=" + s.ctl, "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=" + s.known,
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
		src, s.user + "@127.0.0.1:" + dst,
	}
}

// run runs name with args, bounded by sshTimeout, and returns its combined output.
func (s *sshd) run(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, sshTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = nil
	out := &capture{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return out.String(), nil
}

// stop closes the master connection, stops sshd (SIGTERM, then SIGKILL after 5 s) and
// removes the privilege separation directory if this run created it.
func (s *sshd) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := os.Stat(s.ctl); err == nil {
			if _, err := s.run(ctx, "ssh", s.sshArgs("-S", s.ctl, "-O", "exit", "127.0.0.1")...); err != nil {
				slog.Warn("closing the ssh master failed", "err", err)
			}
		}
		cancel()
		s.reapMaster()
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	if s.madePriv {
		_ = os.Remove(privsepDir)
	}
}

// reapMaster waits up to 3 s for the backgrounded master to exit after `-O exit`, then kills
// it by the pid it reported.
func (s *sshd) reapMaster() {
	if s.masterPID <= 0 {
		return
	}
	for range 30 {
		if syscall.Kill(s.masterPID, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	slog.Warn("ssh master still running after -O exit; killing it", "pid", s.masterPID)
	_ = syscall.Kill(s.masterPID, syscall.SIGKILL)
}
