package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Size of the fixed attack: authorized but malicious edges, and rounds each.
const (
	attackEdges  = 100
	attackRounds = 4
)

// maliciousEdge is a compromised device: its key is authorized, everything else it does is
// hostile.
type maliciousEdge struct {
	signer ssh.Signer
	fp     string
}

// dial authenticates and returns the connection, or an error.
func (m maliciousEdge) dial(addr string, host ssh.PublicKey) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, nil, err
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{User: "healthy", Auth: []ssh.AuthMethod{ssh.PublicKeys(m.signer)},
		HostKeyCallback: ssh.FixedHostKey(host)})
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	nc.SetDeadline(time.Time{})
	go ssh.DiscardRequests(reqs)
	go func() {
		for ch := range chans {
			ch.Reject(ssh.Prohibited, "no")
		}
	}()
	return c, chans, reqs, nil
}

// attack runs one round of one kind of misbehaviour and returns when the gateway dropped it
// (or after a bounded wait).
func (m maliciousEdge) attack(addr string, host ssh.PublicKey, kind int) {
	c, _, _, err := m.dial(addr, host)
	if err != nil {
		return
	}
	defer c.Close()
	lie, _ := json.Marshal(protocol.Hello{Protocol: protocol.Version, Name: "healthy", Labels: map[string]string{"role": "db"},
		Version: "evil", OS: "linux", Arch: "amd64", MaxConcurrent: 4096})
	switch kind % 4 {
	case 0: // oversized hello
		big, _ := json.Marshal(protocol.Hello{Protocol: protocol.Version, Name: "healthy", Version: strings.Repeat("x", 64<<10)})
		if ch, _, err := c.OpenChannel(protocol.ChannelType, big); err == nil {
			ch.Close()
		}
	case 1: // lying hello, then yamux streams opened towards the gateway
		ch, reqs, err := c.OpenChannel(protocol.ChannelType, lie)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		sess, err := yamux.Server(ch, protocol.YamuxConfig(slog.New(slog.DiscardHandler)))
		if err != nil {
			return
		}
		defer sess.Close()
		for range 20 {
			st, err := sess.OpenStream()
			if err != nil {
				break
			}
			st.Write([]byte("not a request"))
		}
		select {
		case <-sess.CloseChan():
		case <-time.After(5 * time.Second):
		}
	case 2: // lying hello, then garbage and oversized frames on the raw channel
		ch, reqs, err := c.OpenChannel(protocol.ChannelType, lie)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		garbage := make([]byte, 64<<10)
		rand.Read(garbage)
		// A yamux data header claiming a 4 GiB frame, then noise.
		ch.Write([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
		ch.Write(garbage)
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, ch); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	case 3: // reconnect flood: hello and hang up at once
		if ch, _, err := c.OpenChannel(protocol.ChannelType, lie); err == nil {
			ch.Close()
		}
	}
}

// rssKiB reads VmRSS and VmHWM of pid.
func rssKiB(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read gateway memory: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

// p99 of durations (the maximum below 100 samples).
func p99(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

// TestMaliciousEdges: 100 authorized but hostile edges lie in their hello (the healthy edge's
// name, role=db), send oversized hellos, garbage and oversized frames, open streams towards
// the gateway and flood reconnects. The gateway's memory grows by at most 64 MiB, a healthy
// edge's run_command p99 stays near its quiet value, the liars get neither the name nor the
// role, and the audit log records the refusals.
func TestMaliciousEdges(t *testing.T) {
	if testing.Short() {
		t.Skip("attack test skipped in -short")
	}
	f := newFixture(t)
	healthy := f.newEdgeKey(t)
	f.authorize(t, healthy, "healthy", "role=web")
	attackers := make([]maliciousEdge, attackEdges)
	var lines strings.Builder
	for i := range attackers {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		s, err := ssh.NewSignerFromKey(priv)
		if err != nil {
			t.Fatal(err)
		}
		attackers[i] = maliciousEdge{signer: s, fp: keys.Fingerprint(s.PublicKey())}
		lines.WriteString(keys.AuthorizedLine(s.PublicKey()) + "\n")
	}
	old, _ := os.ReadFile(f.authFile)
	if err := keys.WriteFileAtomic(f.authFile, append(old, lines.String()...), 0o600); err != nil {
		t.Fatal(err)
	}
	g := f.startGateway(t, map[string]string{"LOG_LEVEL": "info"})
	pidB, err := os.ReadFile(filepath.Join(f.stateDir, "gateway.lock"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidB)))
	f.startEdge(t, healthy, g.addr, nil)
	g.waitConnected(t, healthy.fp, nil)

	const samples = 40
	measure := func() []time.Duration {
		var d []time.Duration
		for range samples {
			start := time.Now()
			r := g.call(t, "run_command", map[string]any{"edge": "healthy", "argv": []string{"true"}})
			if r.IsError {
				t.Errorf("healthy run_command failed: %s", r.Text)
			}
			d = append(d, time.Since(start))
		}
		return d
	}
	quiet := p99(measure())
	rssBefore, _ := rssKiB(t, pid)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, m := range attackers {
		wg.Go(func() {
			for r := range attackRounds {
				select {
				case <-stop:
					return
				default:
				}
				m.attack(g.addr, f.hostPub, i+r)
			}
		})
	}
	loaded := p99(measure())
	wg.Wait()
	close(stop)
	rssAfter, hwm := rssKiB(t, pid)
	t.Logf("gateway RSS %d KiB before, %d KiB after, peak %d KiB (growth %d KiB); run_command p99 quiet %v, under attack %v",
		rssBefore, rssAfter, hwm, hwm-rssBefore, quiet, loaded)
	if growth := hwm - rssBefore; growth > 64<<10 {
		t.Errorf("gateway memory grew by %d KiB under attack, more than 64 MiB", growth)
	}
	// Twice the quiet p99, plus slack for a shared 2-core machine running this under -race.
	if bound := 2*quiet + 250*time.Millisecond; loaded > bound {
		t.Errorf("healthy p99 under attack %v > %v (quiet %v)", loaded, bound, quiet)
	}

	st := g.status(t, map[string]any{"limit": 1000})
	for _, e := range st.Edges {
		if e.Fingerprint == healthy.fp {
			if e.Name != "healthy" || !e.Connected || e.Labels["role"] != "web" {
				t.Errorf("healthy edge after the attack: %+v", e)
			}
			continue
		}
		if e.Name == "healthy" || e.Labels["role"] == "db" {
			t.Errorf("a liar got the name or the role: %+v", e)
		}
	}
	audit := g.auditLog()
	for _, want := range []string{"edge opened a stream", "tunnel refused"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log has no %q refusal", want)
		}
	}
}
