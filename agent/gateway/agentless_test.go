package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

const testHostFP = "SHA256:qfu0CQZ3Guw9N1Gh7yrrh6WUAzxvGPSmkYC4F2CHqsU"

func TestAgentlessOptions(t *testing.T) {
	host := newSigner(t)
	hostLine := keys.AuthorizedLine(host.PublicKey())
	tests := []struct {
		opts    string
		ok      bool   // the key is authorized
		user    string // with agentless
		hostFP  string
		warning string // a warning contains this ("" none)
	}{
		{`agentless,user="admin",host_key="` + testHostFP + `"`, true, "admin", testHostFP, ""},
		{`agentless,user="admin",host_key="` + hostLine + `",name="r1",labels="role=router"`, true, "admin",
			ssh.FingerprintSHA256(host.PublicKey()), ""},
		{`AGENTLESS,User="_svc.1",Host_Key="` + testHostFP + `"`, true, "_svc.1", testHostFP, ""},
		{`agentless`, false, "", "", `agentless line without user="…"`},
		{`agentless,user="admin"`, false, "", "", `without host_key=`},
		{`agentless,host_key="` + testHostFP + `"`, false, "", "", `without user=`},
		{`agentless,user="-rf",host_key="` + testHostFP + `"`, false, "", "", "not a POSIX user name"},
		{`agentless,user="a b",host_key="` + testHostFP + `"`, false, "", "", "not a POSIX user name"},
		{`agentless,user="` + strings.Repeat("a", 33) + `",host_key="` + testHostFP + `"`, false, "", "", "not a POSIX user name"},
		{`agentless,user="admin",host_key="SHA256:short"`, false, "", "", "not a SHA256 fingerprint"},
		{`agentless,user="admin",host_key="MD5:aa:bb"`, false, "", "", "neither a SHA256"},
		{`agentless="yes",user="admin",host_key="` + testHostFP + `"`, false, "", "", "agentless takes no value"},
		{`user="admin",host_key="` + testHostFP + `"`, true, "", "", "apply only to a line marked agentless"},
		{`agentless,user="admin",host_key="` + testHostFP + `",name="BAD NAME"`, true, "admin", testHostFP, "name"},
	}
	for _, tc := range tests {
		k := newSigner(t)
		set, err := parseAuthKeys([]byte("# x\n"+authLine(k, tc.opts)), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := set.byFP[keys.Fingerprint(k.PublicKey())]
		if (got != nil) != tc.ok {
			t.Errorf("%s: authorized %v, want %v (warnings %v)", tc.opts, got != nil, tc.ok, set.warnings)
			continue
		}
		if tc.warning == "" && len(set.warnings) > 0 || tc.warning != "" && (len(set.warnings) != 1 ||
			!strings.Contains(set.warnings[0].Reason, tc.warning) || set.warnings[0].Line != 2) {
			t.Errorf("%s: warnings %v, want one on line 2 with %q", tc.opts, set.warnings, tc.warning)
		}
		if got == nil {
			continue
		}
		if tc.user == "" {
			if got.agentless != nil || len(set.agentless) != 0 {
				t.Errorf("%s: marked agentless", tc.opts)
			}
			continue
		}
		if a := got.agentless; a == nil || a.user != tc.user || a.hostFP != tc.hostFP || len(set.agentless) != 1 {
			t.Errorf("%s: agentless %+v, want user %s host %s", tc.opts, got.agentless, tc.user, tc.hostFP)
		}
	}
}

func TestAuthorizedKeysLineWarnings(t *testing.T) {
	k1, k2, k3 := newSigner(t), newSigner(t), newSigner(t)
	data := authLine(k1, `name="e1"`) +
		`name="e5" labels="a=b" ` + keys.AuthorizedLine(k2.PublicKey()) + "\n" + // issue 21: no comma
		"\n# comment\n" +
		"garbage\n" +
		authLine(k1, "") + // duplicate
		"ssh-ed25519 AAAAnotbase64!\n" +
		"-----BEGIN OPENSSH PRIVATE KEY-----\n" +
		authLine(k3, `name="e1"`) // name taken
	w, err := CheckAuthorizedKeys([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		line   int
		reason string
	}{
		{2, "separated by a space"},
		{5, "no public key type"},
		{6, "duplicate key"},
		{7, "base64 does not decode"},
		{8, "private key"},
		{9, "already bound"},
	}
	if len(w) != len(want) {
		t.Fatalf("warnings %v, want %d", w, len(want))
	}
	for i, x := range want {
		if w[i].Line != x.line || !strings.Contains(w[i].Reason, x.reason) {
			t.Errorf("warning %d = %v, want line %d with %q", i, w[i], x.line, x.reason)
		}
		if strings.Contains(w[i].String(), "AAAA") {
			t.Errorf("warning quotes the line: %v", w[i])
		}
	}

	// Bounded: a file of garbage yields maxLineWarnings warnings and one counting the rest.
	w, err = CheckAuthorizedKeys([]byte(strings.Repeat("garbage\n", 1000)))
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != maxLineWarnings+1 || !strings.Contains(w[maxLineWarnings].Reason, "900 more") || w[maxLineWarnings].Line != 101 {
		t.Errorf("%d warnings, last %v", len(w), w[len(w)-1])
	}
	if _, err := CheckAuthorizedKeys(make([]byte, maxAuthKeysFile+1)); err == nil {
		t.Error("oversized content accepted")
	}

	// The gateway exposes and logs the warnings of the file in force.
	f := startGateway(t, data, nil)
	if fw, err := CheckAuthorizedKeysFile(f.akPath); err != nil || len(fw) != len(want) {
		t.Errorf("CheckAuthorizedKeysFile: %v %v", fw, err)
	}
	if got := f.g.AuthorizedKeysWarnings(); len(got) != len(want) || got[0].Line != 2 {
		t.Errorf("AuthorizedKeysWarnings = %v", got)
	}
	if !strings.Contains(f.logs.String(), "line=2") {
		t.Errorf("the mistyped line was not logged with its number:\n%s", f.logs.String())
	}
}

// fakeAgentless is an AgentlessEdge that only records what the gateway did with it.
type fakeAgentless struct {
	Edge
	t      *AgentlessTunnel
	mu     sync.Mutex
	closed bool
}

func (f *fakeAgentless) Status() EdgeStatus {
	return EdgeStatus{Connected: true, Fingerprint: "ignored", Kind: "ignored", RemoteAddr: f.t.RemoteAddr}
}
func (f *fakeAgentless) Inventory() *InventorySummary { return nil }
func (f *fakeAgentless) Close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
}

// TestAgentlessTunnel drives the gateway with x/crypto's client as the device's ssh: one
// tcpip-forward accepted (port 0 answered with a dummy), nothing listening, a forwarded-tcpip
// channel opened back with the address asked for, everything else refused and audited, and
// the edge gone when the connection ends.
func TestAgentlessTunnel(t *testing.T) {
	dev := newSigner(t)
	f := startGateway(t, authLine(dev, `agentless,user="admin",host_key="`+testHostFP+`",name="rtr",labels="role=router"`), nil)
	served := make(chan *fakeAgentless, 1)
	f.g.SetAgentlessServer(func(ctx context.Context, tun *AgentlessTunnel) AgentlessEdge {
		fa := &fakeAgentless{t: tun}
		served <- fa
		return fa
	})
	fp := keys.Fingerprint(dev.PublicKey())
	if st := f.g.Edges(false); len(st) != 1 || st[0].Kind != KindAgentless || st[0].Connected || st[0].Name != "rtr" {
		t.Fatalf("before the tunnel: %+v", st)
	}
	conn, chans, reqs, err := sshDial(f.addr, dev, f.host.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go ssh.DiscardRequests(reqs)

	// Refused before the forward too: a session.
	if _, _, err := conn.OpenChannel("session", nil); !isProhibited(err) {
		t.Errorf("session channel: %v, want prohibited", err)
	}
	ok, reply, err := conn.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"localhost", 0}))
	var port struct{ Port uint32 }
	if err != nil || !ok || ssh.Unmarshal(reply, &port) != nil || port.Port != agentlessPort {
		t.Fatalf("tcpip-forward: ok %v reply %x err %v", ok, reply, err)
	}
	var fa *fakeAgentless
	select {
	case fa = <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("the agentless server was not called")
	}
	if fa.t.User != "admin" || fa.t.HostKeyFingerprint != testHostFP || fa.t.Name != "rtr" || fa.t.Fingerprint != fp || fa.t.Labels["role"] != "router" {
		t.Errorf("tunnel = %+v", fa.t)
	}
	if ok, _, _ := conn.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"localhost", 2222})); ok {
		t.Error("a second tcpip-forward was accepted")
	}
	if _, _, err := conn.OpenChannel("direct-tcpip", ssh.Marshal(struct {
		Host  string
		Port  uint32
		OHost string
		OPort uint32
	}{"127.0.0.1", 22, "127.0.0.1", 1})); !isProhibited(err) {
		t.Errorf("direct-tcpip: %v, want prohibited", err)
	}

	// The gateway dials the device through the forward: the channel echoes.
	go func() {
		for nch := range chans {
			var p struct {
				Addr       string
				Port       uint32
				OriginAddr string
				OriginPort uint32
			}
			if nch.ChannelType() != "forwarded-tcpip" || ssh.Unmarshal(nch.ExtraData(), &p) != nil || p.Addr != "localhost" || p.Port != agentlessPort {
				nch.Reject(ssh.ConnectionFailed, "unexpected")
				continue
			}
			ch, creqs, err := nch.Accept()
			if err != nil {
				continue
			}
			go ssh.DiscardRequests(creqs)
			go func() { io.Copy(ch, ch); ch.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := fa.t.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(nc, buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo through forwarded-tcpip: %q %v", buf, err)
	}
	if nc.RemoteAddr().String() != fa.t.RemoteAddr {
		t.Errorf("RemoteAddr %v, want %s", nc.RemoteAddr(), fa.t.RemoteAddr)
	}
	nc.SetDeadline(time.Now().Add(50 * time.Millisecond)) // a deadline closes the channel
	if _, err := nc.Read(buf); err == nil {
		t.Error("read after the deadline succeeded")
	}
	nc.Close()

	st := f.g.Edges(true)
	if len(st) != 1 || st[0].Kind != KindAgentless || st[0].Fingerprint != fp || st[0].Name != "rtr" || !st[0].Connected {
		t.Errorf("connected: %+v", st)
	}
	if e, err := f.g.Edge("RTR"); err != nil || e.Name() != "rtr" || e.Labels()["role"] != "router" {
		t.Errorf("Edge(RTR) = %v, %v", e, err)
	}
	// A new user= on the key's line ends the connection (the device reconnects with it).
	relabel := authLine(dev, `agentless,user="other",host_key="`+testHostFP+`",name="rtr",labels="role=router"`)
	if err := os.WriteFile(f.akPath, []byte(relabel), 0o600); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- conn.Wait() }()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Error("the connection outlived the change of its key's user=")
		conn.Close()
	}
	waitFor(t, 5*time.Second, "the edge to go offline", func() bool { return len(f.g.Edges(true)) == 0 })
	fa.mu.Lock()
	closed := fa.closed
	fa.mu.Unlock()
	if !closed {
		t.Error("the agentless edge was not closed with its connection")
	}
	var refusals []string
	for _, e := range f.auditLines(t) {
		if e.Event == "edge_refused" && e.Fingerprint == fp {
			refusals = append(refusals, e.Error)
		}
	}
	for _, want := range []string{"session", "second tcpip-forward", "direct-tcpip"} {
		if !strings.Contains(strings.Join(refusals, "\n"), want) {
			t.Errorf("no edge_refused audit for %s: %q", want, refusals)
		}
	}
}

// TestAgentlessWithoutServer: without an AgentlessServer (GATEWAY_MODE=reverse) the tunnel
// is kept and the edge is offline, saying why; a forward never asked for times out.
func TestAgentlessWithoutServer(t *testing.T) {
	dev := newSigner(t)
	f := startGateway(t, authLine(dev, `agentless,user="admin",host_key="`+testHostFP+`"`), func(c *Config) {
		c.HandshakeTimeout = 500 * time.Millisecond
	})
	conn, _, reqs, err := sshDial(f.addr, dev, f.host.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go ssh.DiscardRequests(reqs)
	if ok, _, err := conn.SendRequest("tcpip-forward", true, ssh.Marshal(struct {
		Addr string
		Port uint32
	}{"", 22})); !ok || err != nil {
		t.Fatalf("tcpip-forward: %v %v", ok, err)
	}
	waitFor(t, 5*time.Second, "the problem to show", func() bool {
		st := f.g.Edges(false)
		return len(st) == 1 && !st[0].Connected && strings.Contains(st[0].Problem, "GATEWAY_MODE=both")
	})
	if st := f.g.Edges(false); !strings.HasPrefix(st[0].Name, "agentless-") {
		t.Errorf("unnamed agentless edge named %q", st[0].Name)
	}
	conn.Close()

	// No forward at all: dropped after the handshake timeout.
	conn2, _, reqs2, err := sshDial(f.addr, dev, f.host.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	go ssh.DiscardRequests(reqs2)
	done := make(chan error, 1)
	go func() { done <- conn2.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Error("a connection without tcpip-forward was not dropped")
	}
	conn2.Close()
}

func isProhibited(err error) bool {
	var oce *ssh.OpenChannelError
	return errors.As(err, &oce) && oce.Reason == ssh.Prohibited
}

var _ net.Conn = (*tunnelConn)(nil)
