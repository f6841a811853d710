package gateway

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestPickName(t *testing.T) {
	const fpA = "SHA256:Ab+/cdEFghijklmnopqrstuvwxyz0123456789ABCDE"
	const fpB = "SHA256:Zz9yxwvutsrqponmlkjihgfedcba9876543210ZYXWV"
	bound := map[string]string{"taken": fpB, "mine": fpA}
	boundTo := func(n string) string { return bound[n] }
	long := strings.Repeat("a", 63)
	tests := []struct {
		name, requested, want string
		connected             []string // names already used by other connected edges
	}{
		{"free name, lower-cased", "Pi-Kitchen", "pi-kitchen", nil},
		{"own bound name is free for it", "mine", "mine", nil},
		{"bound to another key", "taken", "taken-ab-_cdef", nil},
		{"used by a connected edge", "pi", "pi-ab-_cdef", []string{"pi"}},
		{"invalid name", "no spaces!", "edge-ab-_cdef", nil},
		{"empty name", "", "edge-ab-_cdef", nil},
		{"63-character name kept", long, long, nil},
		{"long name with suffix stays valid", long, long[:54] + "-ab-_cdef", []string{long}},
		{"suffix taken too", "pi", "pi-ab-_cdefghij", []string{"pi", "pi-ab-_cdef"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRegistry()
			for i, n := range tc.connected {
				r.byName[n] = &edge{fp: "SHA256:other" + string(rune('a'+i))}
			}
			got := r.pickName(tc.requested, fpA, boundTo, "")
			if got != tc.want || !protocol.ValidName(got) {
				t.Fatalf("pickName(%q) = %q, want %q", tc.requested, got, tc.want)
			}
		})
	}
}

func TestBoundNameTakesOverAndNamesNeverCollide(t *testing.T) {
	a, b, c := newSigner(t), newSigner(t), newSigner(t)
	f := startGateway(t, authLine(a, `no-pty,name="Pi",labels="role=db,site=lab"`)+authLine(b, "")+authLine(c, ""), nil)
	// b asks for "pi" while a (bound to it) is away: b gets it for now.
	dialEdge(t, f, b, edgeOpts{hello: protocol.Hello{Name: "pi"}})
	waitFor(t, 5*time.Second, "b connected", func() bool { return len(f.g.Edges(true)) == 1 })
	if n := f.g.Edges(true)[0].Name; n != "pi-"+fpID(keys.Fingerprint(b.PublicKey()))[:8] && n != "pi" {
		t.Fatalf("b named %q", n)
	}
	dialEdge(t, f, a, edgeOpts{hello: protocol.Hello{Name: "whatever", Labels: map[string]string{"role": "web"}}})
	dialEdge(t, f, c, edgeOpts{hello: protocol.Hello{Name: "pi"}})
	waitFor(t, 5*time.Second, "three connected", func() bool { return len(f.g.Edges(true)) == 3 })
	seen := map[string]bool{}
	for _, st := range f.g.Edges(true) {
		if seen[st.Name] || !protocol.ValidName(st.Name) {
			t.Fatalf("name %q duplicated or invalid: %+v", st.Name, f.g.Edges(true))
		}
		seen[st.Name] = true
		if st.Fingerprint == keys.Fingerprint(a.PublicKey()) {
			if st.Name != "pi" || st.Labels["role"] != "db" || st.ReportedLabels["role"] != "web" {
				t.Fatalf("bound edge status %+v", st)
			}
		}
	}
}

// TestSortStatuses: the key sort with in-place permutation orders by name then fingerprint,
// as sorting the statuses themselves does, and keeps every status whole.
func TestSortStatuses(t *testing.T) {
	cmp := func(a, b EdgeStatus) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Fingerprint, b.Fingerprint)
	}
	for _, n := range []int{0, 1, 2, 3, 10, 100, 1000} {
		in := make([]EdgeStatus, n)
		for i := range in {
			// Few distinct names, so that many ties fall to the fingerprint; "" names too.
			in[i] = EdgeStatus{Name: strings.Repeat("e", rand.IntN(5)), Fingerprint: "SHA256:" + strconv.Itoa(rand.IntN(n+1)),
				InFlight: i, RemoteAddr: strconv.Itoa(i)}
		}
		want := slices.Clone(in)
		slices.SortStableFunc(want, cmp)
		got := slices.Clone(in)
		sortStatuses(got)
		if !slices.IsSortedFunc(got, cmp) {
			t.Fatalf("n=%d: not sorted", n)
		}
		seen := make([]bool, n)
		for _, st := range got {
			if st.RemoteAddr != strconv.Itoa(st.InFlight) || seen[st.InFlight] {
				t.Fatalf("n=%d: status %d torn or duplicated", n, st.InFlight)
			}
			seen[st.InFlight] = true
		}
		for i := range want {
			if cmp(got[i], want[i]) != 0 {
				t.Fatalf("n=%d: position %d is %q %q, want %q %q", n, i, got[i].Name, got[i].Fingerprint, want[i].Name, want[i].Fingerprint)
			}
		}
	}
}

// TestReplacedConnection: a newer connection of the same key replaces the older one, whose
// edge is told why; from another address that is audited once as a key used from two places.
func TestReplacedConnection(t *testing.T) {
	key := newSigner(t)
	f := startGateway(t, authLine(key, `name="pi"`), nil)
	first := dialEdge(t, f, key, edgeOpts{hello: protocol.Hello{Name: "pi"}, from: "127.0.0.1"})
	waitFor(t, 5*time.Second, "first connection registered", func() bool { return len(f.g.Edges(true)) == 1 })
	dialEdge(t, f, key, edgeOpts{hello: protocol.Hello{Name: "pi"}, from: "127.0.0.2"})
	waitFor(t, 5*time.Second, "the older connection told it was replaced", first.replaced.Load)
	select {
	case <-first.closed():
	case <-time.After(5 * time.Second):
		t.Fatal("the replaced connection was not closed")
	}
	shared := 0
	for _, e := range f.auditLines(t) {
		if e.Event == "edge_key_shared" {
			shared++
		}
	}
	if shared != 1 {
		t.Errorf("%d edge_key_shared audit lines, want 1", shared)
	}
}
