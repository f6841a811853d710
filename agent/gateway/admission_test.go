package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
)

// newIdleGateway is a gateway that does not serve, with exact penalties (no jitter) and its
// handshake metric recorded: what the admission phases need.
func newIdleGateway(t *testing.T, mut func(*Config)) (*fixture, *recorder) {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{host: newSigner(t), akPath: filepath.Join(dir, "authorized_keys"),
		auditPath: filepath.Join(dir, "audit.jsonl"), logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	al, err := audit.Open(f.auditPath, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	rec := newRecorder()
	cfg := Config{HostKey: f.host, Bind: "127.0.0.1:0", AuthorizedKeysFile: f.akPath, Audit: al, Log: log, Metrics: rec}
	if mut != nil {
		mut(&cfg)
	}
	if f.g, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	f.g.penalties.jitter = nil
	return f, rec
}

// peerConn is the gateway's end of a pipe, seen as coming from remote; it records the last
// deadline set on it.
type peerConn struct {
	net.Conn
	remote   net.Addr
	mu       sync.Mutex
	deadline time.Time
}

func (c *peerConn) RemoteAddr() net.Addr { return c.remote }

func (c *peerConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *peerConn) lastDeadline() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline
}

// pipeFrom returns the gateway's end of a connection from ip (port 40000), and the peer's.
func pipeFrom(t *testing.T, ip string) (*peerConn, net.Conn) {
	t.Helper()
	gw, peer := net.Pipe()
	t.Cleanup(func() { gw.Close(); peer.Close() })
	return &peerConn{Conn: gw, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}}, peer
}

// penalizeSource makes sourceKeys keys from ip draw penalties, which penalizes the address.
func penalizeSource(g *Gateway, ip string) {
	addr := &net.TCPAddr{IP: net.ParseIP(ip), Port: 1}
	for i := range sourceKeys {
		g.penalties.offend(fmt.Sprintf("source-key-%d", i), addr, offenceViolation, time.Now())
	}
}

// penalizeKey puts fp under a penalty of d from now.
func penalizeKey(g *Gateway, fp string, d time.Duration) {
	b := g.penalties
	b.mu.Lock()
	defer b.mu.Unlock()
	b.m[fp] = &penalty{until: time.Now().Add(d), last: time.Now()}
}

// countEvents counts the audit lines of event.
func countEvents(t *testing.T, f *fixture, event string) int {
	t.Helper()
	n := 0
	for _, e := range f.auditLines(t) {
		if e.Event == event {
			n++
		}
	}
	return n
}

func TestAdmissionAccept(t *testing.T) {
	tests := []struct {
		name      string
		penalized bool
		want      bool
	}{
		{"a clean source goes on", false, true},
		{"a penalized source is closed at accept", true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, rec := newIdleGateway(t, nil)
			if tc.penalized {
				penalizeSource(f.g, "192.0.2.7")
			}
			nc, _ := pipeFrom(t, "192.0.2.7")
			if got := f.g.newAdmission(nc).accept(); got != tc.want {
				t.Fatalf("accept() = %v, want %v", got, tc.want)
			}
			if n, want := rec.handshake(HandshakePenalized), btoi(!tc.want); n != want {
				t.Fatalf("%d handshakes counted as penalized, want %d", n, want)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestAdmissionWaitSlot(t *testing.T) {
	tests := []struct {
		name    string
		free    bool          // a slot is free
		cancel  bool          // the gateway stops while the connection waits
		want    bool          // a slot was taken
		minWait time.Duration // the connection waited at least this long
	}{
		{"a free slot is taken at once", true, false, true, 0},
		{"no slot within AdmissionWait: dropped as busy", false, false, false, 200 * time.Millisecond},
		{"a stopping gateway drops the waiting connection", false, true, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, rec := newIdleGateway(t, func(c *Config) { c.MaxHandshakes, c.AdmissionWait = 1, 200*time.Millisecond })
			if !tc.free {
				f.g.handshakes <- struct{}{}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancel {
				cancel()
			}
			nc, _ := pipeFrom(t, "192.0.2.7")
			a := f.g.newAdmission(nc)
			start := time.Now()
			if got := a.waitSlot(ctx); got != tc.want {
				t.Fatalf("waitSlot() = %v, want %v", got, tc.want)
			}
			if took := time.Since(start); took < tc.minWait {
				t.Fatalf("gave up after %v, want after AdmissionWait (%v)", took, tc.minWait)
			}
			if n := rec.handshake(HandshakeBusy); n != btoi(!tc.want) {
				t.Fatalf("%d handshakes counted as busy, want %d", n, btoi(!tc.want))
			}
			a.endHandshake()
			if n := len(f.g.handshakes); n != btoi(!tc.free) {
				t.Fatalf("%d slots taken after the handshake ended, want only the test's %d", n, btoi(!tc.free))
			}
		})
	}
}

// TestAdmissionAfterSlot: a connection whose source address is penalized while it waits for
// a handshake slot is refused once it has the slot, and gives the slot back.
func TestAdmissionAfterSlot(t *testing.T) {
	tests := []struct {
		name      string
		penalized bool // the source draws a penalty during the wait
	}{
		{"a source penalized during the wait is refused after it", true},
		{"a clean source keeps its slot", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, rec := newIdleGateway(t, func(c *Config) { c.MaxHandshakes, c.AdmissionWait = 1, 5*time.Second })
			f.g.handshakes <- struct{}{} // another handshake holds the only slot
			nc, _ := pipeFrom(t, "192.0.2.7")
			a := f.g.newAdmission(nc)
			if !a.accept() {
				t.Fatal("refused at accept, before any penalty")
			}
			took := make(chan bool, 1)
			go func() { took <- a.waitSlot(context.Background()) }()
			if tc.penalized {
				penalizeSource(f.g, "192.0.2.7")
			}
			<-f.g.handshakes // the other handshake ends
			if !<-took {
				t.Fatal("no slot")
			}
			if got, want := a.afterSlot(), !tc.penalized; got != want {
				t.Fatalf("afterSlot() = %v, want %v (source penalized during the wait: %v)", got, want, tc.penalized)
			}
			if n, want := len(f.g.handshakes), btoi(!tc.penalized); n != want {
				t.Fatalf("%d handshake slots taken after afterSlot, want %d", n, want)
			}
			if n := rec.handshake(HandshakePenalized); n != btoi(tc.penalized) {
				t.Fatalf("%d handshakes counted as penalized, want %d", n, btoi(tc.penalized))
			}
		})
	}
}

// TestAdmissionDuringHandshake: what the handshake reads is refused while the source is
// penalized and the handshake not over, and such a handshake is counted as penalized; an
// ended handshake (an established tunnel) is never cut.
func TestAdmissionDuringHandshake(t *testing.T) {
	tests := []struct {
		name      string
		penalized bool
		ended     bool // endHandshake was called before the read
		wantErr   error
		outcome   string // judgeHandshake's count for a failed handshake
	}{
		{"a clean source reads", false, false, nil, HandshakeProtocol},
		{"a penalized source is refused mid-handshake", true, false, errSourcePenalized, HandshakePenalized},
		{"an ended handshake is never cut", true, true, nil, HandshakeProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, rec := newIdleGateway(t, nil)
			nc, peer := pipeFrom(t, "192.0.2.7")
			a := f.g.newAdmission(nc)
			hc := a.duringHandshake()
			if tc.penalized {
				penalizeSource(f.g, "192.0.2.7")
			}
			if tc.ended {
				a.endHandshake()
			}
			go peer.Write([]byte("SSH-2.0-peer\r\n"))
			n, err := hc.Read(make([]byte, 64))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (n > 0) {
				t.Fatalf("Read = %d bytes, %v; want err %v", n, err, tc.wantErr)
			}
			a.judgeHandshake(io.ErrUnexpectedEOF)
			if got := rec.handshake(tc.outcome); got != 1 {
				t.Fatalf("failed handshake counted as %v, want %s", rec.handshakes, tc.outcome)
			}
		})
	}
}

// fakeNewChannel is a tunnel open waiting for an answer.
type fakeNewChannel struct {
	ssh.NewChannel
	reason  ssh.RejectionReason
	message string
}

func (c *fakeNewChannel) Reject(r ssh.RejectionReason, msg string) error {
	c.reason, c.message = r, msg
	return nil
}

// TestAdmissionAfterAuth: an authenticated key under penalty is held for up to half the
// handshake timeout, then let on (with a fresh deadline for its tunnel) or refused with the
// reason; only one connection of a key is held; a stopping gateway refuses without counting.
func TestAdmissionAfterAuth(t *testing.T) {
	const hold = 500 * time.Millisecond // half the handshake timeout below
	tests := []struct {
		name     string
		penalty  time.Duration
		heldElse bool // another connection of the key is held
		stop     bool // the gateway stops during the hold
		want     bool
		minTook  time.Duration
		maxTook  time.Duration
		counted  int // handshakes counted as penalized
	}{
		{"no penalty: on at once", 0, false, false, true, 0, hold / 2, 0},
		{"a penalty shorter than the hold: held, then on", 200 * time.Millisecond, false, false, true, 150 * time.Millisecond, hold, 0},
		{"a penalty beyond the hold: refused after it", 5 * time.Second, false, false, false, hold, 3 * hold, 1},
		{"another connection held: refused at once", 5 * time.Second, true, false, false, 0, hold / 2, 1},
		{"a stopping gateway: refused uncounted", 5 * time.Second, false, true, false, 0, hold, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, rec := newIdleGateway(t, func(c *Config) { c.HandshakeTimeout = 2 * hold })
			if tc.penalty > 0 {
				penalizeKey(f.g, "fp", tc.penalty)
			}
			if tc.heldElse && !f.g.penalties.hold("fp") {
				t.Fatal("cannot hold the key")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.stop {
				time.AfterFunc(50*time.Millisecond, cancel)
			}
			nc, _ := pipeFrom(t, "192.0.2.7")
			open := &fakeNewChannel{}
			chans := make(chan ssh.NewChannel, 1)
			chans <- open
			c := &sshConn{chans: chans}
			start := time.Now()
			got := f.g.newAdmission(nc).afterAuth(ctx, c, "fp", f.g.log)
			took := time.Since(start)
			if got != tc.want || took < tc.minTook || took > tc.maxTook {
				t.Fatalf("afterAuth() = %v after %v, want %v after %v to %v", got, took, tc.want, tc.minTook, tc.maxTook)
			}
			if n := rec.handshake(HandshakePenalized); n != tc.counted {
				t.Fatalf("%d handshakes counted as penalized, want %d", n, tc.counted)
			}
			if refused := tc.counted > 0; refused != (open.reason == ssh.Prohibited && strings.Contains(open.message, "key penalized")) {
				t.Fatalf("tunnel open rejected with %v %q; want a refusal naming the penalty: %v", open.reason, open.message, refused)
			}
			if tc.want && tc.penalty > 0 && time.Until(nc.lastDeadline()) < hold {
				t.Fatalf("a connection let on after its hold has %v left to open its tunnel, want a fresh handshake timeout", time.Until(nc.lastDeadline()))
			}
			if !tc.heldElse && !f.g.penalties.hold("fp") && tc.penalty > 0 {
				t.Fatal("the key is still held after afterAuth returned")
			}
		})
	}
}

// TestAdmissionJudgeTunnel: how opening the tunnel ended is counted; a refused tunnel is a
// protocol violation (penalized, refusal and penalty audited), an authenticated connection
// without a tunnel a reconnect, a stopping gateway nobody's fault.
func TestAdmissionJudgeTunnel(t *testing.T) {
	tests := []struct {
		name    string
		outcome string
		want    bool
		penalty time.Duration // in force after two such outcomes in a row
		refused int           // edge_refused audit lines
	}{
		{"open", HandshakeOK, true, 0, 0},
		{"stopping", "", false, 0, 0},
		{"bad tunnel", HandshakeBadTunnel, false, 2 * violationFirst, 1},
		{"no tunnel in time", HandshakeTimeout, false, reconnectFirst, 0},
		{"connection ended without a tunnel", HandshakeProtocol, false, reconnectFirst, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, rec := newIdleGateway(t, nil)
			nc, _ := pipeFrom(t, "192.0.2.7")
			a := f.g.newAdmission(nc)
			for range 2 {
				if got := a.judgeTunnel("fp", tc.outcome, errors.New("hello is not valid JSON"), f.g.log); got != tc.want {
					t.Fatalf("judgeTunnel(%q) = %v, want %v", tc.outcome, got, tc.want)
				}
			}
			if left := f.g.penalties.left("fp", time.Now()); left.Round(time.Second) != tc.penalty {
				t.Fatalf("penalty %v after two outcomes %q, want %v", left, tc.outcome, tc.penalty)
			}
			if tc.outcome != "" && rec.handshake(tc.outcome) != 2 {
				t.Fatalf("outcomes counted: %v, want %q twice", rec.handshakes, tc.outcome)
			}
			if n := countEvents(t, f, "edge_refused"); n != tc.refused {
				t.Fatalf("%d edge_refused audit lines, want %d (the second refusal within a minute is not repeated)", n, tc.refused)
			}
			if n, want := countEvents(t, f, "edge_penalized"), btoi(tc.penalty > 0); n != want {
				t.Fatalf("%d edge_penalized audit lines, want %d", n, want)
			}
		})
	}
}

// TestAdmissionJudgeStream: a stream opened by the edge is a protocol violation.
func TestAdmissionJudgeStream(t *testing.T) {
	f, _ := newIdleGateway(t, nil)
	nc, _ := pipeFrom(t, "192.0.2.7")
	f.g.newAdmission(nc).judgeStream("fp", f.g.log)
	if left := f.g.penalties.left("fp", time.Now()); left.Round(time.Second) != violationFirst {
		t.Fatalf("penalty %v after a stream opened by the edge, want %v", left, violationFirst)
	}
	if n := countEvents(t, f, "edge_refused"); n != 1 {
		t.Fatalf("%d edge_refused audit lines, want 1", n)
	}
}

// TestAdmissionJudgeSession: a tunnel shorter than shortSession is a reconnect (the second in
// a row draws a penalty), one that lasted ends the streak, and a stopping gateway's tunnels
// count for nothing.
func TestAdmissionJudgeSession(t *testing.T) {
	const short, long = shortSession / 4, shortSession
	tests := []struct {
		name     string
		sessions []session
		want     time.Duration // penalty in force after them
	}{
		{"two short tunnels in a row draw a penalty", []session{{short, false}, {short, false}}, reconnectFirst},
		{"a tunnel that lasted ends the streak", []session{{short, false}, {long, false}, {short, false}}, 0},
		{"tunnels closed by a stopping gateway do not count", []session{{short, true}, {short, true}, {short, false}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := newIdleGateway(t, nil)
			nc, _ := pipeFrom(t, "192.0.2.7")
			a := f.g.newAdmission(nc)
			for _, s := range tc.sessions {
				a.judgeSession("fp", s.lasted, s.stopping, f.g.log)
			}
			if left := f.g.penalties.left("fp", time.Now()); left.Round(100*time.Millisecond) != tc.want {
				t.Fatalf("penalty %v after tunnels %v, want %v", left, tc.sessions, tc.want)
			}
		})
	}
}

// session is a tunnel judged by judgeSession.
type session struct {
	lasted   time.Duration
	stopping bool // closed by a stopping gateway
}

func (s session) String() string {
	if s.stopping {
		return s.lasted.String() + " (gateway stopping)"
	}
	return s.lasted.String()
}

// TestAdmissionAuthFailure: an unknown key is counted as such each time, and audited once
// per source address an interval (IPv6 by /64), the rest summed up when the interval ends.
func TestAdmissionAuthFailure(t *testing.T) {
	f, rec := newIdleGateway(t, nil)
	attempts := []struct{ ip, fp string }{
		{"192.0.2.7", "SHA256:a"}, {"192.0.2.7", "SHA256:a"}, {"192.0.2.7", "SHA256:b"}, // one source: once
		{"192.0.2.8", "SHA256:a"},
		{"2001:db8:1:2::1", "SHA256:c"}, {"2001:db8:1:2::2", "SHA256:d"}, // one /64: once
		{"2001:db8:1:3::1", "SHA256:e"},
	}
	for _, at := range attempts {
		nc, _ := pipeFrom(t, at.ip)
		a := f.g.newAdmission(nc)
		a.authFailure(at.fp)
		a.judgeHandshake(errors.New("no auth passed yet"))
	}
	if n := countEvents(t, f, "auth_failure"); n != 4 {
		t.Fatalf("%d auth_failure audit lines, want 4", n)
	}
	if n := rec.handshake(HandshakeUnknownKey); n != len(attempts) {
		t.Fatalf("%d handshakes counted as unknown_key, want %d", n, len(attempts))
	}
	f.g.writeRefusalSummary(f.g.refusals.flush(time.Now(), true))
	var sums []audit.Event
	for _, e := range f.auditLines(t) {
		if e.Event == "auth_failure_summary" {
			sums = append(sums, e)
		}
	}
	if len(sums) != 1 || !strings.HasPrefix(sums[0].Error, "3 refused authentication attempts") ||
		!strings.Contains(sums[0].Error, "192.0.2.7/32: 2") || !strings.Contains(sums[0].Error, "2001:db8:1:2::/64: 1") {
		t.Fatalf("summary lines %+v", sums)
	}
}

// TestEventKindsDedupSeparately: each kind of event has a bounded de-duplication of its own,
// so that a flood of one kind (many unknown keys, many refusals) cannot make an event of
// another kind repeat.
func TestEventKindsDedupSeparately(t *testing.T) {
	const size = 2 // of each kind's de-duplication; every flood goes beyond it
	const liar, stranger = "SHA256:liar", "SHA256:stranger"
	tests := []struct {
		name  string
		event string             // audited once, before and after the flood
		again func(a *admission) // what makes the event
		flood func(a *admission, i int)
	}{
		{"a refusal survives a flood of auth failures", "edge_refused",
			func(a *admission) { a.refused(liar, "bad hello") },
			func(a *admission, i int) { refuseUnknown(a, fmt.Sprintf("SHA256:flood-%d", i)) }},
		{"a penalty survives a flood of auth failures", "edge_penalized",
			func(a *admission) { a.offend(liar, offenceViolation, a.g.log) },
			func(a *admission, i int) { refuseUnknown(a, fmt.Sprintf("SHA256:flood-%d", i)) }},
		{"a penalty survives a flood of refusals", "edge_penalized",
			func(a *admission) { a.offend(liar, offenceViolation, a.g.log) },
			func(a *admission, i int) { a.refused(fmt.Sprintf("SHA256:flood-%d", i), "bad hello") }},
		{"an auth failure survives floods of refusals and penalties", "auth_failure",
			func(a *admission) { refuseUnknown(a, stranger) },
			func(a *admission, i int) {
				a.refused(fmt.Sprintf("SHA256:flood-%d", i), "bad hello")
				a.offend(fmt.Sprintf("SHA256:flood-%d", i), offenceViolation, a.g.log)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := newIdleGateway(t, nil)
			f.g.penalties.refusedEvents = newFailLimiterSize(time.Minute, size)
			f.g.penalties.penalizedEvents = newFailLimiterSize(time.Minute, size)
			nc, _ := pipeFrom(t, "192.0.2.7")
			a := f.g.newAdmission(nc)
			tc.again(a)
			for i := range size + 1 {
				tc.flood(a, i)
			}
			tc.again(a)
			if n := countEvents(t, f, tc.event); n != 1 {
				t.Fatalf("%d %s audit lines, want 1: a flood of another kind made it repeat", n, tc.event)
			}
		})
	}
}

func TestFailLimiter(t *testing.T) {
	type step struct {
		key  string
		at   time.Duration // since the start
		want bool
	}
	tests := []struct {
		name  string
		size  int
		steps []step
	}{
		{"a repeat within the window is suppressed", 10, []step{
			{"a", 0, true}, {"a", 30 * time.Second, false}, {"a", time.Minute, true}, {"a", time.Minute + time.Second, false},
		}},
		{"distinct keys are each let through", 10, []step{{"a", 0, true}, {"b", 0, true}, {"c", 0, true}, {"b", time.Second, false}}},
		{"beyond its size the oldest is forgotten first", 2, []step{
			{"a", 0, true}, {"b", 1, true}, {"c", 2, true}, {"b", 3, false}, {"a", 4, true}, {"c", 5, false}, {"b", 6, true},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newFailLimiterSize(time.Minute, tc.size)
			start := time.Unix(1e9, 0)
			for i, st := range tc.steps {
				if got := l.allow(st.key, start.Add(st.at)); got != st.want {
					t.Fatalf("step %d: allow(%q) = %v, want %v", i, st.key, got, st.want)
				}
				if n := l.order.Len(); n > tc.size || len(l.byKey) != n {
					t.Fatalf("step %d: %d keys in order, %d in the map; size %d", i, n, len(l.byKey), tc.size)
				}
			}
		})
	}
}

// refuseUnknown is an unknown key's signature verifying in a connection that then fails.
func refuseUnknown(a *admission, fp string) {
	a.authFailure(fp)
	a.refuseUnknownKey("")
}
