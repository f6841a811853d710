package gateway

import (
	"os"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// TestApplyKeys: changes shared by other gateways land in one rewrite; lines of other keys
// and comments are kept; what cannot be applied is refused with why.
func TestApplyKeys(t *testing.T) {
	a, b, c, d := newSigner(t), newSigner(t), newSigner(t), newSigner(t)
	la := `name="cam-a" ` + keys.AuthorizedLine(a.PublicKey())
	lb := `name="cam-b" ` + keys.AuthorizedLine(b.PublicKey())
	f := startGateway(t, "# fleet\n"+la+"\n"+lb+"\n", nil)
	fa, fb, fc, fd := keys.Fingerprint(a.PublicKey()), keys.Fingerprint(b.PublicKey()), keys.Fingerprint(c.PublicKey()),
		keys.Fingerprint(d.PublicKey())
	lbRelabelled := `name="cam-b",labels="site=lab" ` + keys.AuthorizedLine(b.PublicKey())
	refused, err := f.g.ApplyKeys([]KeyChange{
		{Fingerprint: fa, Line: ""},                                                   // revoked elsewhere
		{Fingerprint: fb, Line: lbRelabelled},                                         // relabelled elsewhere
		{Fingerprint: fc, Line: `name="cam-c" ` + keys.AuthorizedLine(c.PublicKey())}, // added elsewhere
		{Fingerprint: fd, Line: `name="cam-b" ` + keys.AuthorizedLine(d.PublicKey())}, // a name bound here
		{Fingerprint: fd, Line: `name="cam-d" ` + keys.AuthorizedLine(c.PublicKey())}, // not its key
		{Fingerprint: "SHA256:x", Line: "not a key"},                                  // not a line
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(refused) != 2 || refused[fd] == nil || refused["SHA256:x"] == nil {
		t.Fatalf("refused = %v, want the key of another's line and the bad line", refused)
	}
	lines := f.g.KeyLines()
	if _, ok := lines[fa]; ok {
		t.Error("revoked key still authorized")
	}
	if lines[fb] != lbRelabelled || !strings.HasPrefix(lines[fc], `name="cam-c"`) {
		t.Errorf("lines = %v", lines)
	}
	if k := f.g.keys.lookup(fb); k == nil || k.labels["site"] != "lab" {
		t.Errorf("relabelled key = %+v", k)
	}
	data, _ := os.ReadFile(f.akPath)
	if !strings.HasPrefix(string(data), "# fleet\n") || strings.Count(string(data), "\n") != 3 {
		t.Errorf("file = %q, want the comment and two lines", data)
	}
	// Applying what is in force already changes nothing.
	st, _ := os.Stat(f.akPath)
	if refused, err := f.g.ApplyKeys([]KeyChange{{Fingerprint: fb, Line: lbRelabelled}, {Fingerprint: fa}}); err != nil || len(refused) != 0 {
		t.Fatalf("no-op batch: %v, %v", refused, err)
	}
	if st2, _ := os.Stat(f.akPath); !st2.ModTime().Equal(st.ModTime()) {
		t.Error("a batch in force already rewrote the file")
	}
}
