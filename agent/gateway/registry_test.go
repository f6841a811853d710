package gateway

import (
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
