package gateway

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// TestNameSticksToFirstKey repeats the squatting attack: the honest edge db1 (a key with no
// bound name) connects, goes offline, and another authorized key asks for db1. The name was
// bound to the first key on its first connection, so the squatter gets db1-<fp8> and the
// honest edge gets db1 back.
func TestNameSticksToFirstKey(t *testing.T) {
	honest, squatter := newSigner(t), newSigner(t)
	f := startGateway(t, authLine(honest, `labels="role=db"`)+authLine(squatter, ""), nil)
	honestFP, squatterFP := keys.Fingerprint(honest.PublicKey()), keys.Fingerprint(squatter.PublicKey())
	nameOf := func(fp string) string {
		for _, st := range f.g.Edges(true) {
			if st.Fingerprint == fp {
				return st.Name
			}
		}
		return ""
	}

	e := dialEdge(t, f, honest, edgeOpts{hello: protocol.Hello{Name: "db1"}})
	waitFor(t, 5*time.Second, "db1 connected", func() bool { return nameOf(honestFP) == "db1" })
	// The binding is written within bindDelay; give it a bounded while, then let the attack
	// show whether it holds.
	for deadline := time.Now().Add(2 * time.Second); f.g.keys.boundTo("db1") != honestFP && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	e.close()
	waitFor(t, 5*time.Second, "db1 offline", func() bool { return nameOf(honestFP) == "" })

	dialEdge(t, f, squatter, edgeOpts{hello: protocol.Hello{Name: "db1"}})
	want := "db1-" + fpID(squatterFP)[:8]
	waitFor(t, 5*time.Second, "squatter connected", func() bool { return nameOf(squatterFP) != "" })
	if got := nameOf(squatterFP); got != want {
		t.Fatalf("the squatter asking for db1 while its owner is offline got %q, want %q", got, want)
	}
	if e := f.g.reg.get("db1"); e != nil {
		t.Fatalf("db1 resolves to %s while its owner is offline", e.fp)
	}
	dialEdge(t, f, honest, edgeOpts{hello: protocol.Hello{Name: "db1"}})
	waitFor(t, 5*time.Second, "db1 back", func() bool { return nameOf(honestFP) == "db1" })
	if k := f.g.keys.lookup(honestFP); k == nil || k.labels["role"] != "db" {
		t.Fatalf("binding lost the key's labels: %+v", k)
	}
	if n := countEvents(t, f, "name_bound"); n != 1 {
		t.Fatalf("%d name_bound audit lines, want 1", n)
	}
}

// TestBindNames: a binding adds name="…" to the key's line and keeps everything else of the
// file; keys that have a name option, names bound elsewhere and keys not in the file are left.
func TestBindNames(t *testing.T) {
	a, b, c := newSigner(t), newSigner(t), newSigner(t)
	fa, fb, fc := keys.Fingerprint(a.PublicKey()), keys.Fingerprint(b.PublicKey()), keys.Fingerprint(c.PublicKey())
	tests := []struct {
		name  string
		file  string
		want  map[string]string
		bound []string
		check func(t *testing.T, out string)
	}{
		{"a plain line", "# fleet\n" + authLine(a, ""), map[string]string{fa: "db1"}, []string{fa}, func(t *testing.T, out string) {
			if !strings.HasPrefix(out, "# fleet\nname=\"db1\" ssh-ed25519 ") {
				t.Fatalf("file:\n%s", out)
			}
		}},
		{"a line with options", authLine(a, `no-pty,labels="role=db"`), map[string]string{fa: "db1"}, []string{fa}, func(t *testing.T, out string) {
			if !strings.HasPrefix(out, `name="db1",no-pty,labels="role=db" ssh-ed25519 `) {
				t.Fatalf("file:\n%s", out)
			}
		}},
		{"a key with a name option is left", authLine(a, `name="Bad Name!"`), map[string]string{fa: "db1"}, nil, nil},
		{"a name bound to another key is left", authLine(a, "") + authLine(b, `name="db1"`), map[string]string{fa: "db1"}, nil, nil},
		{"two keys wanting one name: the first wins", authLine(a, "") + authLine(c, ""), map[string]string{fa: "db1", fc: "db1"}, []string{fa}, nil},
		{"an unknown key is left", authLine(a, ""), map[string]string{fb: "db1"}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := t.TempDir() + "/authorized_keys"
			os.WriteFile(path, []byte(tc.file), 0o600)
			ks, err := newKeyStore(path, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				t.Fatal(err)
			}
			bound, err := ks.bindNames(tc.want)
			if err != nil || strings.Join(bound, ",") != strings.Join(tc.bound, ",") {
				t.Fatalf("bindNames = %v, %v; want %v", bound, err, tc.bound)
			}
			out, _ := os.ReadFile(path)
			if len(tc.bound) == 0 && string(out) != tc.file {
				t.Fatalf("file changed:\n%s", out)
			}
			for _, fp := range tc.bound {
				if ks.lookup(fp).name != tc.want[fp] {
					t.Fatalf("key %s not bound after reload", fp)
				}
			}
			if tc.check != nil {
				tc.check(t, string(out))
			}
		})
	}
}
