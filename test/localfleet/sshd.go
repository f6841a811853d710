package localfleet

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDPath is where Debian's openssh-server installs the server.
const SSHDPath = "/usr/sbin/sshd"

// ErrNoSSHD: the machine has no OpenSSH server (Debian package openssh-server).
var ErrNoSSHD = errors.New("no " + SSHDPath + " (apt-get install -y openssh-server)")

// SSHD is a Debian OpenSSH server on 127.0.0.1 with its own config, host key and
// authorized_keys under Dir, never the system's: the device of forward-mode tests. It lets in
// the current user with the keys it was started with, and serves SFTP. Its sessions start with
// SHLVL=1, so bash skips the user's ~/.bashrc (on this kind of machine it adds about 120-230 ms
// to every command, the same on every SSH path; docs/BENCHMARKS.md rows b1/b2).
type SSHD struct {
	Dir     string
	Addr    string        // host:port it listens on
	User    string        // the user the gateway logs in as
	HostKey ssh.PublicKey // its host key, to pin

	cfg    string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
	log    *syncLog
}

// StartSSHD writes the server's files under dir and starts it, authorizing the given client
// keys. Stop it with Stop.
func StartSSHD(dir string, authorized ...ssh.PublicKey) (*SSHD, error) {
	if _, err := os.Stat(SSHDPath); err != nil {
		return nil, ErrNoSSHD
	}
	if os.Geteuid() == 0 { // sshd wants its privilege separation directory when run as root
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, err
		}
	}
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	host, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "test sshd")
	if err != nil {
		return nil, err
	}
	hk := filepath.Join(dir, "host_ed25519")
	if err := os.WriteFile(hk, pem.EncodeToMemory(blk), 0o600); err != nil {
		return nil, err
	}
	var ak []byte
	for _, k := range authorized {
		ak = append(ak, ssh.MarshalAuthorizedKey(k)...)
	}
	akFile := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(akFile, ak, 0o600); err != nil {
		return nil, err
	}
	s := &SSHD{Dir: dir, User: u.Username, HostKey: host.PublicKey(), cfg: filepath.Join(dir, "sshd_config")}
	// sshd has no "port 0": a port is picked free, then bound by sshd; another process may
	// take it in between, so a failed bind is tried again on another port.
	for attempt := 0; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile %s
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers %s
Subsystem sftp /usr/lib/openssh/sftp-server
MaxStartups 100
LogLevel VERBOSE
SetEnv SHLVL=1
`, port, hk, akFile, filepath.Join(dir, "sshd.pid"), u.Username)
		if err := os.WriteFile(s.cfg, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		err = s.Start()
		if err == nil || attempt == 2 || !strings.Contains(err.Error(), "Address already in use") {
			return s, err
		}
	}
}

// Start runs the server (again, after Stop) and waits until it listens. sshd has no port 0:
// its port was picked free and may have been taken meanwhile by another listener (another
// test package's gateway), which a dial would then reach instead. So readiness is sshd's own
// "Server listening" line, and a failed bind is an error, never a foreign listener taken
// for sshd.
func (s *SSHD) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = &syncLog{}
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", s.cfg)
	cmd.Stderr = s.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start sshd: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	s.cmd, s.exited = cmd, exited
	_, port, _ := net.SplitHostPort(s.Addr)
	ready := "Server listening on 127.0.0.1 port " + port
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.log.String(), ready) {
		select {
		case <-exited:
			return fmt.Errorf("sshd exited before listening on %s:\n%s", s.Addr, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sshd did not listen on %s within 10 s:\n%s", s.Addr, s.log.String())
		}
	}
	return nil
}

// Stop kills sshd and its per-connection processes, which drops every connection. The
// commands those ran are left alone: a shell killed while it runs the login user's start-up
// files could leave their locks behind (pyenv's rehash lock does).
func (s *SSHD) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	for _, d := range Descendants(s.cmd.Process.Pid) {
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(d) + "/cmdline"); err == nil && strings.HasPrefix(string(b), "sshd:") {
			_ = syscall.Kill(d, syscall.SIGKILL)
		}
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart stops and starts the server: every connection drops.
func (s *SSHD) Restart() error {
	s.Stop()
	return s.Start()
}

// Log is what the server wrote to stderr since it last started (bounded).
func (s *SSHD) Log() string {
	s.mu.Lock()
	l := s.log
	s.mu.Unlock()
	return l.String()
}

// ForwardEntry is the server's line of a FORWARD_EDGES_FILE, pinned to its host key.
func (s *SSHD) ForwardEntry(name, labels string) string {
	return fmt.Sprintf("- {name: %s, address: '%s', user: %s, host_key: %q, labels: {%s}}\n",
		name, s.Addr, s.User, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey))), labels)
}

// syncLog keeps the first MiB written to it.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 1<<20 {
		w.b.Write(p)
	}
	return len(p), nil
}

func (w *syncLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// Descendants lists the pids below pid, from /proc.
func Descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b)[i+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], p)
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			out = append(out, c)
			walk(c)
		}
	}
	walk(pid)
	return out
}
