package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// dialEdgeFrom does an edge's handshake from local address ip and opens its tunnel, all
// within limit. It reports the error, nil once the tunnel channel was accepted.
func dialEdgeFrom(f *fixture, ip string, key ssh.Signer, limit time.Duration) error {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: limit}
	nc, err := d.Dial("tcp", f.addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(limit))
	cfg := &ssh.ClientConfig{User: "edge", Auth: []ssh.AuthMethod{ssh.PublicKeys(key)}, HostKeyCallback: ssh.FixedHostKey(f.host.PublicKey())}
	c, chans, reqs, err := ssh.NewClientConn(nc, f.addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	go ssh.DiscardRequests(reqs)
	go func() {
		for nch := range chans {
			nch.Reject(ssh.Prohibited, "no")
		}
	}()
	hello, _ := json.Marshal(protocol.Hello{Protocol: protocol.Version, Name: "e"})
	ch, creqs, err := c.OpenChannel(protocol.ChannelType, hello)
	if err != nil {
		return err
	}
	go ssh.DiscardRequests(creqs)
	ch.Close()
	return nil
}

// attackSockets opens n connections from each of ips; with version, each sends an SSH
// version line after the gateway's and then nothing, else nothing at all. They are closed at
// the end of the test.
func attackSockets(t *testing.T, addr string, ips []string, n int, version bool) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, ip := range ips {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 2 * time.Second}
		for range n {
			wg.Go(func() {
				nc, err := d.Dial("tcp", addr)
				if err != nil {
					return
				}
				mu.Lock()
				t.Cleanup(func() { nc.Close() })
				mu.Unlock()
				if version {
					nc.SetReadDeadline(time.Now().Add(2 * time.Second))
					bufio.NewReader(nc).ReadString('\n')
					nc.Write([]byte("SSH-2.0-stall\r\n"))
				}
			})
		}
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // the gateway has accepted them all
}

// TestIdleConnectionsDoNotLockEdgesOut repeats the lock-out attack: hundreds of idle TCP
// connections (silent, or stalling after their version line), from one or a few loopback
// addresses, while edges from another address connect. Before, each took a handshake slot
// at accept, before its version line, for the full HandshakeTimeout, with no per-source cap:
// the edges waited 10 s and more. Now silent sockets never hold a slot, those that stall
// after their version line hold one for KexTimeout at most, and no more than
// PerSourceMaxStartups from one source: every edge is admitted within a bounded time.
func TestIdleConnectionsDoNotLockEdgesOut(t *testing.T) {
	const edges, limit = 10, 3 * time.Second
	tests := []struct {
		name    string
		ips     []string
		n       int // sockets per address
		version bool
	}{
		{"200 silent sockets from one address", []string{"127.0.0.1"}, 200, false},
		{"200 silent sockets from four addresses", []string{"127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13"}, 50, false},
		{"100 sockets stalling after their version line, one address", []string{"127.0.0.1"}, 100, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			signers := make([]ssh.Signer, edges)
			lines := ""
			for i := range signers {
				signers[i] = newSigner(t)
				lines += authLine(signers[i], fmt.Sprintf(`name="e%d"`, i))
			}
			f := startGateway(t, lines, nil) // default limits and timeouts
			attackSockets(t, f.addr, tc.ips, tc.n, tc.version)
			start := time.Now()
			errs := make([]error, edges)
			var wg sync.WaitGroup
			for i, s := range signers {
				wg.Go(func() { errs[i] = dialEdgeFrom(f, "127.0.0.2", s, limit) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("edge %d not admitted within %v during the attack: %v", i, limit, err)
				}
			}
			t.Logf("%d edges admitted in %v during the attack", edges, time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestKexDeadline: a peer that sends its version line and then stalls the key exchange is
// closed after KexTimeout, not HandshakeTimeout; one that sends nothing is closed after
// KexTimeout from the accept, without taking a handshake slot.
func TestKexDeadline(t *testing.T) {
	const kex = 300 * time.Millisecond
	tests := []struct {
		name    string
		version bool
	}{
		{"silent after its version line", true},
		{"silent from the start", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startGateway(t, "", func(c *Config) { c.KexTimeout, c.HandshakeTimeout, c.MaxHandshakes = kex, 10*time.Second, 1 })
			nc, err := net.DialTimeout("tcp", f.addr, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			start := time.Now()
			nc.SetDeadline(start.Add(5 * time.Second))
			br := bufio.NewReader(nc)
			if _, err := br.ReadString('\n'); err != nil {
				t.Fatalf("no banner: %v", err)
			}
			if tc.version {
				nc.Write([]byte("SSH-2.0-stall\r\n"))
			} else if len(f.g.handshakes) != 0 {
				t.Fatal("a silent connection holds a handshake slot")
			}
			for {
				if _, err := br.ReadByte(); err != nil {
					break // closed by the gateway (or the test's own deadline, caught below)
				}
			}
			if took := time.Since(start); took > kex+2*time.Second {
				t.Fatalf("closed after %v, want about KexTimeout (%v)", took, kex)
			}
		})
	}
}

// TestStartupGate: the per-source cap (IPv4 by address, IPv6 by /64) and MaxStartups'
// early random drop.
func TestStartupGate(t *testing.T) {
	a, a6, a6same := sourcePrefix(tcpAddr("192.0.2.1")), sourcePrefix(tcpAddr("2001:db8:0:1::1")), sourcePrefix(tcpAddr("2001:db8:0:1::ffff"))
	if a6 != a6same || a6.Bits() != 64 || a.Bits() != 32 {
		t.Fatalf("prefixes %v %v %v", a, a6, a6same)
	}
	tests := []struct {
		name   string
		limits StartupLimits
		roll   int // what the random draw gives (0..99)
		enter  []netip.Prefix
		want   []string
	}{
		{"per source: an address", StartupLimits{100, 30, 200}, 99, []netip.Prefix{a, a, a, a6}, []string{dropNone, dropNone, dropPerSource, dropNone}},
		{"per source: an IPv6 /64", StartupLimits{100, 30, 200}, 99, []netip.Prefix{a6, a6same, a6}, []string{dropNone, dropNone, dropPerSource}},
		{"below start nothing is dropped", StartupLimits{3, 30, 4}, 0, []netip.Prefix{a, a6}, []string{dropNone, dropNone}},
		{"from start, rate percent are dropped", StartupLimits{1, 30, 10}, 29, []netip.Prefix{a, a6}, []string{dropNone, dropRandom}},
		{"a draw above the rate goes on", StartupLimits{1, 30, 10}, 30, []netip.Prefix{a, a6}, []string{dropNone, dropNone}},
		{"at full everything is dropped", StartupLimits{1, 0, 2}, 99, []netip.Prefix{a, a6, a6}, []string{dropNone, dropNone, dropFull}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := newStartupGate(2, tc.limits)
			g.rnd = func(int) int { return tc.roll }
			for i, src := range tc.enter {
				if got := g.enter(src); got != tc.want[i] {
					t.Fatalf("enter %d (%v) = %q, want %q", i, src, got, tc.want[i])
				}
			}
		})
	}
	g := newStartupGate(1, StartupLimits{10, 30, 20})
	if g.enter(a) != dropNone || g.enter(a) != dropPerSource {
		t.Fatal("cap of one not enforced")
	}
	g.leave(a)
	if total, n := g.counts(a); total != 0 || n != 0 || g.enter(a) != dropNone {
		t.Fatalf("after leave: %d in all, %d from a", total, n)
	}
}

func tcpAddr(ip string) net.Addr { return &net.TCPAddr{IP: net.ParseIP(ip), Port: 1} }
