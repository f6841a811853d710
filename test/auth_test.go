package e2e

import (
	"strings"
	"testing"
	"time"
)

// neverConnected watches get_status for d and fails if fp ever shows up connected.
func (g *gateway) neverConnected(t *testing.T, fp string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if e, all := g.edgeByFP(t, fp); len(all) > 0 && e.Connected {
			t.Fatalf("edge %s shows up connected: %+v", fp, e)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestUnknownKeyRejected: an edge whose key is not authorized never connects, and the gateway
// says so in its log or audit.
func TestUnknownKeyRejected(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	known := f.newEdgeKey(t)
	f.authorize(t, known, "known", "")
	stranger := f.newEdgeKey(t)
	g := f.startGateway(t, nil)
	f.startEdge(t, stranger, g.addr, map[string]string{"EDGE_NAME": "stranger"})
	mentions := func() bool {
		for _, line := range strings.Split(g.Stderr()+"\n"+g.auditLog(), "\n") {
			if strings.Contains(line, stranger.Fingerprint) && strings.Contains(strings.ToLower(line), "auth") {
				return true
			}
		}
		return false
	}
	if !waitFor(10*time.Second, mentions) {
		t.Errorf("neither gateway stderr nor audit log has a line naming %s and an auth failure", stranger.Fingerprint)
	}
	g.neverConnected(t, stranger.Fingerprint, 3*time.Second)
	st := g.status(t, nil)
	if st.Totals.Connected != 0 || st.Totals.Known != 1 {
		t.Errorf("totals = %+v, want known 1, connected 0", st.Totals)
	}
	for _, e := range st.Edges {
		if e.Name == "stranger" {
			t.Errorf("the unknown edge is listed: %+v", e)
		}
	}
}

// TestHostKeyPinMismatch: an edge pinned to another host key refuses the gateway before
// authenticating, says so, and never shows up.
func TestHostKeyPinMismatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "pinned", "")
	other := f.newEdgeKey(t) // any other key will do as the wrong pin
	g := f.startGateway(t, nil)
	e := f.startEdge(t, k, g.addr, map[string]string{"EDGE_GATEWAY_HOST_KEY": other.Fingerprint})
	if !waitFor(10*time.Second, func() bool { return strings.Contains(strings.ToLower(e.Stderr()), "host key") }) {
		t.Errorf("edge stderr does not mention the host key mismatch:\n%s", tail(e.Stderr(), 3000))
	}
	g.neverConnected(t, k.Fingerprint, 3*time.Second)
}

// TestSameKeyReplaces: a second edge process with the same key replaces the first: one entry,
// connected, from a new remote address.
func TestSameKeyReplaces(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "twin", "")
	g := f.startGateway(t, nil)
	first := f.startEdge(t, k, g.addr, nil)
	e1 := g.waitConnected(t, k.Fingerprint, nil)
	f.startEdge(t, k, g.addr, nil)
	e2 := g.waitConnected(t, k.Fingerprint, func(e edgeStatus) bool { return e.RemoteAddr != e1.RemoteAddr })
	if e2.Name != "twin" {
		t.Errorf("replacement named %q, want twin", e2.Name)
	}
	kill(t, first.Proc)
	e3 := g.waitConnected(t, k.Fingerprint, nil)
	if _, all := g.edgeByFP(t, k.Fingerprint); len(all) != 1 {
		t.Errorf("%d entries with fingerprint %s, want 1", len(all), k.Fingerprint)
	}
	if st := g.status(t, nil); st.Totals.Connected != 1 || st.Totals.Known != 1 {
		t.Errorf("totals = %+v, want known 1, connected 1 (remaining edge %+v)", st.Totals, e3)
	}
}

// TestNameCollision: an edge that asks for a name bound to another key, or in use by another
// connected edge, gets `<name>-<first 8 characters of its fingerprint>`.
func TestNameCollision(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	owner := f.newEdgeKey(t)
	f.authorize(t, owner, "alpha", "")
	first := f.newEdgeKey(t)
	f.authorize(t, first, "", "")
	squatterA := f.newEdgeKey(t)
	f.authorize(t, squatterA, "", "")
	squatterB := f.newEdgeKey(t)
	f.authorize(t, squatterB, "", "")
	g := f.startGateway(t, nil)

	f.startEdge(t, first, g.addr, map[string]string{"EDGE_NAME": "beta"})
	if e := g.waitConnected(t, first.Fingerprint, nil); e.Name != "beta" {
		t.Fatalf("first edge asking for beta got %q", e.Name)
	}
	for _, tc := range []struct {
		name string
		key  edgeKey
		ask  string
	}{
		{"name bound to an offline key", squatterA, "alpha"},
		{"name used by a connected edge", squatterB, "beta"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.startEdge(t, tc.key, g.addr, map[string]string{"EDGE_NAME": tc.ask})
			e := g.waitConnected(t, tc.key.Fingerprint, nil)
			suffix, ok := strings.CutPrefix(e.Name, tc.ask+"-")
			if !ok || len(suffix) != 8 || !nameRE.MatchString(e.Name) {
				t.Errorf("edge asking for taken %q got %q, want %s-<8 characters of %s>", tc.ask, e.Name, tc.ask, tc.key.Fingerprint)
			}
			if want := strings.ToLower(tc.key.Fingerprint[len("SHA256:") : len("SHA256:")+8]); suffix != want {
				t.Logf("note: suffix %q, fingerprint starts %q", suffix, want)
			}
		})
	}
	if e, _ := g.edgeByFP(t, owner.Fingerprint); e.Name != "alpha" || e.Connected {
		t.Errorf("owner of alpha = %+v, want alpha, offline", e)
	}
	if e, _ := g.edgeByFP(t, first.Fingerprint); e.Name != "beta" {
		t.Errorf("first beta renamed to %q", e.Name)
	}
}

// TestAuthorizedKeysReload: a key appended to authorized_keys while the gateway runs is accepted
// without a restart (README.md, Settings: AUTHORIZED_KEYS_FILE is reloaded on change).
func TestAuthorizedKeysReload(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	g := f.startGateway(t, nil)
	k := f.newEdgeKey(t)
	f.startEdge(t, k, g.addr, map[string]string{"EDGE_NAME": "late"})
	time.Sleep(500 * time.Millisecond)
	f.authorize(t, k, "late", "role=x")
	e := g.waitConnected(t, k.Fingerprint, nil)
	if e.Name != "late" || e.Labels["role"] != "x" {
		t.Errorf("edge after reload = %+v", e)
	}
}
