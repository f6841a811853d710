package keys

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestLoadOrGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "id_ed25519")
	s1, gen, err := LoadOrGenerate(path, "test")
	if err != nil || !gen {
		t.Fatalf("first call: generated=%v err=%v", gen, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	s2, gen, err := LoadOrGenerate(path, "test")
	if err != nil || gen {
		t.Fatalf("second call: generated=%v err=%v", gen, err)
	}
	if Fingerprint(s1.PublicKey()) != Fingerprint(s2.PublicKey()) {
		t.Fatal("reloaded key differs from the generated one")
	}
	if !strings.HasPrefix(AuthorizedLine(s1.PublicKey()), "ssh-ed25519 ") {
		t.Fatalf("AuthorizedLine = %q", AuthorizedLine(s1.PublicKey()))
	}
	bad := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad, []byte("not a key"), 0o600)
	if _, _, err := LoadOrGenerate(bad, ""); err == nil {
		t.Fatal("a garbage key file was accepted (or replaced)")
	}
	if b, _ := os.ReadFile(bad); string(b) != "not a key" {
		t.Fatal("a garbage key file was overwritten")
	}
}

func TestPins(t *testing.T) {
	s, _, err := LoadOrGenerate(filepath.Join(t.TempDir(), "k"), "")
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := LoadOrGenerate(filepath.Join(t.TempDir(), "o"), "")
	fp, line := Fingerprint(s.PublicKey()), AuthorizedLine(s.PublicKey())
	tests := []struct {
		pins    string
		wantErr bool
		match   bool
	}{
		{fp, false, true},
		{line, false, true},
		{Fingerprint(other.PublicKey()) + ", " + fp, false, true},
		{Fingerprint(other.PublicKey()), false, false},
		{"", true, false},
		{"SHA256:short", true, false},
		{"garbage", true, false},
	}
	for _, tc := range tests {
		p, err := ParsePins(tc.pins)
		if (err != nil) != tc.wantErr {
			t.Errorf("ParsePins(%.30q) err = %v", tc.pins, err)
			continue
		}
		if err != nil {
			continue
		}
		cbErr := p.HostKeyCallback()("gw:2222", &net.TCPAddr{}, s.PublicKey())
		if (cbErr == nil) != tc.match {
			t.Errorf("pins %.30q: callback = %v, want match %v", tc.pins, cbErr, tc.match)
		}
	}
	var _ ssh.HostKeyCallback = (&Pins{}).HostKeyCallback()
}
