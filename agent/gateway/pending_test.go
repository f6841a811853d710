package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// TestPendingKnowsRevokedAndAuthorized: a revoked key that tries again is listed as revoked
// (with its old name), not as a new device; a key authorized by other means than approval
// (an editor, keys add) leaves the list; approving it again forgets the revocation.
func TestPendingKnowsRevokedAndAuthorized(t *testing.T) {
	revoked, added := newSigner(t), newSigner(t)
	f := startGateway(t, authLine(revoked, `name="cam-old"`), withState(t))
	state := f.g.cfg.StateDir
	r, err := RevokeKey(f.akPath, "cam-old", nil) // the admin CLI, beside the running gateway
	if err != nil {
		t.Fatal(err)
	}
	if err := RememberRevoked(state, r); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool { return f.g.keys.lookup(r.Fingerprint) == nil }, "the gateway reloads the revocation")
	for _, k := range []ssh.Signer{revoked, added} {
		if err := dialAuth(f.addr, "cam-new", f.host.PublicKey(), ssh.PublicKeys(k)); err == nil {
			t.Fatal("unknown key admitted")
		}
	}
	byFP := func() map[string]PendingEdge {
		ps, err := ListPending(state, f.akPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]PendingEdge{}
		for _, p := range ps {
			m[p.Fingerprint] = p
		}
		return m
	}
	addedFP := keys.Fingerprint(added.PublicKey())
	ps := byFP()
	for _, tc := range []struct {
		fp, wasName string
		revoked     bool
	}{
		{r.Fingerprint, "cam-old", true},
		{addedFP, "", false},
	} {
		p, ok := ps[tc.fp]
		switch {
		case !ok:
			t.Errorf("%s not pending: %+v", tc.fp, ps)
		case (p.Revoked != nil) != tc.revoked || (tc.revoked && (p.Revoked.Name != tc.wasName || time.Since(p.Revoked.RevokedAt) > time.Minute)):
			t.Errorf("%s pending as %+v (revoked %+v), want revoked=%v as %q", tc.fp, p, p.Revoked, tc.revoked, tc.wasName)
		}
	}
	// Authorized behind the gateway's back: not pending any more.
	ak, _ := os.ReadFile(f.akPath)
	if err := os.WriteFile(f.akPath, append(ak, []byte(authLine(added, `name="b"`))...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, still := byFP()[addedFP]; still {
		t.Error("a key authorized in the file is still listed as pending")
	}
	// Approving the revoked key again forgets its revocation.
	if _, err := ApprovePending(state, f.akPath, r.Fingerprint, "cam-back", nil, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(state, pendingFile))
	if strings.Contains(string(b), r.Fingerprint) {
		t.Errorf("pending.json still names the approved key:\n%s", b)
	}
}

// TestRememberRevokedBounded: only the newest maxRevoked revocations are kept.
func TestRememberRevokedBounded(t *testing.T) {
	state := t.TempDir()
	var many []KeyRevoked
	for i := range maxRevoked + 5 {
		many = append(many, KeyRevoked{Fingerprint: fmt.Sprintf("SHA256:k%d", i)})
	}
	for _, batch := range [][]KeyRevoked{many, {{Fingerprint: "SHA256:last"}}} {
		if err := RememberRevoked(state, batch...); err != nil {
			t.Fatal(err)
		}
	}
	var d pendingDoc
	if err := readStateFile(filepath.Join(state, pendingFile), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Revoked) != maxRevoked || d.Revoked[0].Fingerprint != "SHA256:k6" || d.Revoked[maxRevoked-1].Fingerprint != "SHA256:last" {
		t.Errorf("%d revoked keys remembered, from %s; want the newest %d", len(d.Revoked), d.Revoked[0].Fingerprint, maxRevoked)
	}
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
