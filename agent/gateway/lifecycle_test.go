package gateway

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// dialAuth does an SSH handshake with user and auth methods, and closes it when it succeeds.
func dialAuth(addr, user string, host ssh.PublicKey, auth ...ssh.AuthMethod) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	c, _, _, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{User: user, Auth: auth, HostKeyCallback: ssh.FixedHostKey(host)})
	if err != nil {
		return err
	}
	return c.Close()
}

func answer(s string) ssh.AuthMethod {
	return ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
		out := make([]string, len(qs))
		for i := range out {
			out[i] = s
		}
		return out, nil
	})
}

func withState(t *testing.T) func(*Config) {
	dir := t.TempDir()
	return func(c *Config) { c.StateDir = dir }
}

func TestRevokeClosesLiveTunnel(t *testing.T) {
	a, b := newSigner(t), newSigner(t)
	const comment = "# operator note: keep me\n"
	f := startGateway(t, comment+authLine(a, `name="cam-a"`)+authLine(b, `name="cam-b",labels="role=db"`), nil)
	for _, tc := range []struct {
		name   string
		key    ssh.Signer
		revoke func() (KeyRevoked, error)
	}{
		{"tool by name", a, func() (KeyRevoked, error) { return f.g.RevokeKey("cam-a") }},
		{"admin CLI by fingerprint", b, func() (KeyRevoked, error) {
			return RevokeKey(f.akPath, keys.Fingerprint(b.PublicKey()), nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := dialEdge(t, f, tc.key, edgeOpts{hello: protocol.Hello{Name: "x", MaxConcurrent: 1}})
			waitFor(t, 5*time.Second, "connected", func() bool { return f.g.reg.get(keys.Fingerprint(tc.key.PublicKey())) != nil })
			r, err := tc.revoke()
			if err != nil || r.Fingerprint != keys.Fingerprint(tc.key.PublicKey()) {
				t.Fatalf("revoke = %+v, %v", r, err)
			}
			select {
			case <-e.closed():
			case <-time.After(5 * time.Second):
				t.Fatal("the revoked key's tunnel is still open after 5 s")
			}
			if _, _, _, err := sshDial(f.addr, tc.key, f.host.PublicKey()); err == nil {
				t.Fatal("revoked key authenticated again")
			}
		})
	}
	b2, _ := os.ReadFile(f.akPath)
	if string(b2) != comment {
		t.Fatalf("authorized_keys after revoking both = %q, want only the comment kept", b2)
	}
	var revoked int
	for _, ev := range f.auditLines(t) {
		if ev.Event == "key_revoked" {
			revoked++
		}
	}
	if revoked != 2 {
		t.Fatalf("%d key_revoked audit events, want 2", revoked)
	}
	if _, err := f.g.RevokeKey("nobody"); err == nil || !strings.Contains(err.Error(), "no authorized key") {
		t.Fatalf("revoking an unknown name: %v", err)
	}
}

func TestPendingRecordedThenApproved(t *testing.T) {
	f := startGateway(t, "", withState(t))
	k := newSigner(t)
	fp := keys.Fingerprint(k.PublicKey())
	if err := dialAuth(f.addr, "cam7", f.host.PublicKey(), ssh.PublicKeys(k)); err == nil {
		t.Fatal("unknown key admitted")
	}
	p, err := f.g.PendingEdges()
	if err != nil || len(p) != 1 {
		t.Fatalf("pending = %+v, %v", p, err)
	}
	if p[0].Fingerprint != fp || p[0].RequestedName != "cam7" || p[0].Attempts != 1 || !strings.HasPrefix(p[0].RemoteAddr, "127.0.0.1:") || p[0].FirstAttempt.IsZero() {
		t.Fatalf("pending entry = %+v", p[0])
	}
	if _, err := f.g.ApproveEdge("SHA256:nope", "x", nil); err == nil {
		t.Fatal("approving an unknown fingerprint worked")
	}
	res, err := f.g.ApproveEdge(fp, "", map[string]string{"role": "cam"})
	if err != nil || res.Name != "cam7" || res.Labels["role"] != "cam" || !res.Added {
		t.Fatalf("approve = %+v, %v", res, err)
	}
	if err := dialAuth(f.addr, "cam7", f.host.PublicKey(), ssh.PublicKeys(k)); err != nil {
		t.Fatalf("approved key refused: %v", err)
	}
	if p, _ := f.g.PendingEdges(); len(p) != 0 {
		t.Fatalf("still pending after approval: %+v", p)
	}
}

func TestPendingBounded(t *testing.T) {
	f := startGateway(t, "", withState(t))
	f.g.pendingNew = &rateWindow{max: 1000}
	var first string
	for i := range maxPending + 5 {
		k := newSigner(t)
		if i == 0 {
			first = keys.Fingerprint(k.PublicKey())
		}
		f.g.recordPending(PendingEdge{Fingerprint: keys.Fingerprint(k.PublicKey()), PublicKey: keys.AuthorizedLine(k.PublicKey()), RemoteAddr: "127.0.0.1:1"})
	}
	p, err := f.g.PendingEdges()
	if err != nil || len(p) != maxPending {
		t.Fatalf("%d pending (err %v), want %d", len(p), err, maxPending)
	}
	for _, e := range p {
		if e.Fingerprint == first {
			t.Fatal("the oldest entry was kept")
		}
	}
	// The per-minute rate bound: with the default window, new keys beyond it are not recorded.
	g := startGateway(t, "", withState(t))
	for range maxNewPendingMin + 5 {
		k := newSigner(t)
		g.g.recordPending(PendingEdge{Fingerprint: keys.Fingerprint(k.PublicKey()), PublicKey: keys.AuthorizedLine(k.PublicKey())})
	}
	if p, _ := g.g.PendingEdges(); len(p) > maxNewPendingMin {
		t.Fatalf("%d new pending keys recorded in one minute, max %d", len(p), maxNewPendingMin)
	}
}

func TestEnrollment(t *testing.T) {
	f := startGateway(t, "", withState(t))
	f.g.SetPublicAddr(f.addr)
	secretOf := func(t *testing.T, name string, ttl time.Duration) string {
		t.Helper()
		en, err := f.g.CreateEnrollment(name, map[string]string{"role": "sensor"}, ttl)
		if err != nil {
			t.Fatal(err)
		}
		pe, err := protocol.ParseEnrollment(en.String)
		if err != nil || pe.Gateway != f.addr || pe.HostKey != keys.Fingerprint(f.host.PublicKey()) || pe.Name != name {
			t.Fatalf("enrolment string decodes to %+v, %v", pe, err)
		}
		return pe.Secret
	}
	good := secretOf(t, "enrolled1", time.Minute)
	expired := secretOf(t, "enrolled2", 50*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	for _, tc := range []struct {
		name   string
		auth   func(k ssh.Signer) []ssh.AuthMethod
		wantOK bool
	}{
		{"no secret", func(k ssh.Signer) []ssh.AuthMethod { return []ssh.AuthMethod{ssh.PublicKeys(k)} }, false},
		{"wrong secret", func(k ssh.Signer) []ssh.AuthMethod { return []ssh.AuthMethod{ssh.PublicKeys(k), answer("wrong")} }, false},
		{"expired secret", func(k ssh.Signer) []ssh.AuthMethod { return []ssh.AuthMethod{ssh.PublicKeys(k), answer(expired)} }, false},
		{"secret without key", func(ssh.Signer) []ssh.AuthMethod { return []ssh.AuthMethod{answer(good)} }, false},
		{"good secret", func(k ssh.Signer) []ssh.AuthMethod { return []ssh.AuthMethod{ssh.PublicKeys(k), answer(good)} }, true},
		{"used secret", func(k ssh.Signer) []ssh.AuthMethod { return []ssh.AuthMethod{ssh.PublicKeys(k), answer(good)} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := newSigner(t)
			err := dialAuth(f.addr, "edge", f.host.PublicKey(), tc.auth(k)...)
			if (err == nil) != tc.wantOK {
				t.Fatalf("auth err = %v, want ok=%v", err, tc.wantOK)
			}
			key := f.g.keys.lookup(keys.Fingerprint(k.PublicKey()))
			if !tc.wantOK {
				if key != nil {
					t.Fatal("key was bound")
				}
				return
			}
			if key == nil || key.name != "enrolled1" || key.labels["role"] != "sensor" {
				t.Fatalf("bound key = %+v", key)
			}
			if err := dialAuth(f.addr, "edge", f.host.PublicKey(), ssh.PublicKeys(k)); err != nil {
				t.Fatalf("enrolled key refused afterwards: %v", err)
			}
		})
	}
	b, _ := os.ReadFile(f.g.cfg.StateDir + "/" + enrollFile)
	if strings.Contains(string(b), good) || strings.Contains(f.logs.String(), good) {
		t.Fatal("a secret is stored or logged in clear")
	}
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want string
	}{
		{"Bad Name!", time.Minute, "invalid"},
		{"ok", 25 * time.Hour, "out of range"},
		{"ok", 0, "out of range"},
		{"enrolled1", time.Minute, "already bound"},
	} {
		if _, err := f.g.CreateEnrollment(tc.name, nil, tc.ttl); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateEnrollment(%q, %s) = %v, want %q", tc.name, tc.ttl, err, tc.want)
		}
	}
}

func TestConcurrentAddAndRevokeKeepEveryLine(t *testing.T) {
	f := startGateway(t, "", nil)
	const n = 20
	signers := make([]ssh.Signer, n)
	for i := range signers {
		signers[i] = newSigner(t)
	}
	errs := make(chan error, n)
	for i, s := range signers {
		go func() {
			var err error
			if i%2 == 0 { // half through the gateway, half as the admin CLI would
				_, err = f.g.RegisterKey(keys.AuthorizedLine(s.PublicKey()), fmt.Sprintf("k%d", i), nil)
			} else {
				_, err = AddKey(f.akPath, keys.AuthorizedLine(s.PublicKey()), fmt.Sprintf("k%d", i), nil, nil)
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	l, err := ListKeys(f.akPath, nil)
	if err != nil || len(l) != n {
		t.Fatalf("%d keys listed (err %v), want %d", len(l), err, n)
	}
}

// TestEnrollmentFailedBindKeepsSecret: when binding the key fails (here the name was bound to
// another key meanwhile), the secret is not burnt: once the operator frees the name, the same
// device enrols with the same secret.
func TestEnrollmentFailedBindKeepsSecret(t *testing.T) {
	other := newSigner(t)
	f := startGateway(t, "", withState(t))
	f.g.SetPublicAddr(f.addr)
	en, err := f.g.CreateEnrollment("cam1", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pe, err := protocol.ParseEnrollment(en.String)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.g.RegisterKey(authLine(other, ""), "cam1", nil); err != nil { // the name is taken meanwhile
		t.Fatal(err)
	}
	k := newSigner(t)
	if err := dialAuth(f.addr, "edge", f.host.PublicKey(), ssh.PublicKeys(k), answer(pe.Secret)); err == nil {
		t.Fatal("enrolled under a name bound to another key")
	}
	if _, err := f.g.RevokeKey("cam1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the revoke applied", func() bool { return f.g.keys.lookup(keys.Fingerprint(other.PublicKey())) == nil })
	if err := dialAuth(f.addr, "edge", f.host.PublicKey(), ssh.PublicKeys(k), answer(pe.Secret)); err != nil {
		t.Fatalf("the secret was burnt by the failed bind: %v", err)
	}
	if key := f.g.keys.lookup(keys.Fingerprint(k.PublicKey())); key == nil || key.name != "cam1" {
		t.Fatalf("bound key = %+v", key)
	}
}
