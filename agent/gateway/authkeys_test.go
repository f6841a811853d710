package gateway

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestParseAuthKeysOptions(t *testing.T) {
	k1, k2, k3, k4 := newSigner(t), newSigner(t), newSigner(t), newSigner(t)
	data := "# fleet keys\n\n" +
		authLine(k1, `no-pty,name="Pi",labels="role=db,site=lab 1"`) +
		"garbage line\n" +
		authLine(k2, `name="pi"`) + // already bound: name ignored, key kept
		authLine(k3, `name="bad name!",labels="bad key!=x"`) +
		strings.TrimSuffix(authLine(k4, `command="/bin/false"`), "\n") + " a comment"
	set, err := parseAuthKeys([]byte(data), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fp := func(s ssh.Signer) string { return keys.Fingerprint(s.PublicKey()) }
	tests := []struct {
		key    ssh.Signer
		name   string
		labels string
	}{
		{k1, "pi", "map[role:db site:lab 1]"},
		{k2, "", "map[]"},
		{k3, "", "map[]"},
		{k4, "", "map[]"},
	}
	for i, tc := range tests {
		k := set.byFP[fp(tc.key)]
		if k == nil || k.name != tc.name || fmt.Sprint(k.labels) != tc.labels {
			t.Errorf("key %d: %+v, want name %q labels %s", i+1, k, tc.name, tc.labels)
		}
	}
	if len(set.byFP) != 4 || set.byName["pi"] != fp(k1) {
		t.Fatalf("set: %d keys, names %v", len(set.byFP), set.byName)
	}
}

func TestAuthorizedKeysReloadedWithoutRestart(t *testing.T) {
	old, added := newSigner(t), newSigner(t)
	f := startGateway(t, "# comment\n"+authLine(old, ""), nil)
	oldEdge := dialEdge(t, f, old, edgeOpts{hello: protocol.Hello{Name: "old"}})
	if _, err := tryDialEdge(f, added, edgeOpts{}); err == nil {
		t.Fatal("key not yet in the file was admitted")
	}
	// Replace the file as an editor would (atomic rename): new key in, old key out.
	if err := keys.WriteFileAtomic(f.akPath, []byte(authLine(added, `name="fresh"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	var e *testEdge
	waitFor(t, 5*time.Second, "new key admitted", func() bool {
		var err error
		e, err = tryDialEdge(f, added, edgeOpts{hello: protocol.Hello{Name: "x"}})
		return err == nil
	})
	t.Cleanup(e.close)
	waitDone(t, oldEdge.conn, 5*time.Second)
	waitFor(t, 5*time.Second, "status", func() bool {
		es := f.g.Edges(false)
		return len(es) == 1 && es[0].Name == "fresh" && es[0].Connected
	})
}

func TestRegisterKeyConcurrentKeepsEveryLine(t *testing.T) {
	existing := newSigner(t)
	header := "# managed by hand: keep me\n" + strings.TrimSuffix(authLine(existing, `no-port-forwarding,name="base"`), "\n") + " admin@laptop\n"
	f := startGateway(t, header, nil)
	const n = 20
	signers := make([]ssh.Signer, n)
	for i := range signers {
		signers[i] = newSigner(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, s := range signers {
		wg.Go(func() {
			line := "no-pty,name=\"evil\" " + strings.TrimSuffix(authLine(s, ""), "\n") + fmt.Sprintf(" edge%d@host", i)
			k, err := f.g.RegisterKey(line, fmt.Sprintf("Edge-%02d", i), map[string]string{"n": fmt.Sprint(i)})
			if err == nil && (!k.Added || k.Name != fmt.Sprintf("edge-%02d", i)) {
				err = fmt.Errorf("unexpected %+v", k)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(f.akPath)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(f.akPath); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	content := string(b)
	if !strings.HasPrefix(content, header) {
		t.Fatalf("existing lines changed:\n%s", content)
	}
	for i, s := range signers {
		want := fmt.Sprintf(`name="edge-%02d",labels="n=%d" %s edge%d@host`, i, i, keys.AuthorizedLine(s.PublicKey()), i)
		if strings.Count(content, want+"\n") != 1 {
			t.Fatalf("line %d missing or duplicated; want %q in:\n%s", i, want, content)
		}
	}
	if strings.Contains(content, "evil") {
		t.Fatal("options of the registered line were kept")
	}
	// Every new key can connect at once, under its bound name.
	dialEdge(t, f, signers[7], edgeOpts{hello: protocol.Hello{Name: "other"}})
	waitFor(t, 5*time.Second, "edge-07", func() bool {
		es := f.g.Edges(true)
		return len(es) == 1 && es[0].Name == "edge-07" && es[0].Labels["n"] == "7"
	})
	var added int
	for _, ev := range f.auditLines(t) {
		if ev.Event == "key_added" {
			added++
		}
	}
	if added != n {
		t.Fatalf("%d key_added events, want %d", added, n)
	}
}

func TestRegisterKeyValidation(t *testing.T) {
	bound := newSigner(t)
	f := startGateway(t, authLine(bound, `name="taken",labels="a=b"`), nil)
	pub := func() string { return keys.AuthorizedLine(newSigner(t).PublicKey()) }
	tests := []struct {
		name, line, edgeName string
		labels               map[string]string
		wantErr              string
	}{
		{"empty", "", "", nil, "not one OpenSSH public key"},
		{"two lines", pub() + "\n" + pub(), "", nil, "not one OpenSSH public key"},
		{"not a key", "hello world", "", nil, "not one OpenSSH public key"},
		{"bad name", pub(), "Bad Name", nil, "invalid"},
		{"name bound to another key", pub(), "TAKEN", nil, "already bound"},
		{"bad label key", pub(), "", map[string]string{"bad key": "x"}, "label key"},
		{"label value with comma", pub(), "", map[string]string{"k": "a,b"}, "commas"},
		{"ok without name", pub(), "", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := f.g.RegisterKey(tc.line, tc.edgeName, tc.labels)
			if tc.wantErr == "" {
				if err != nil || !k.Added || k.Labels == nil {
					t.Fatalf("RegisterKey = %+v, %v", k, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
	// Already present: nothing changes, current name and labels come back.
	before, _ := os.ReadFile(f.akPath)
	k, err := f.g.RegisterKey(keys.AuthorizedLine(bound.PublicKey()), "newname", map[string]string{"x": "y"})
	if err != nil || k.Added || k.Name != "taken" || k.Labels["a"] != "b" {
		t.Fatalf("re-register = %+v, %v", k, err)
	}
	if after, _ := os.ReadFile(f.akPath); string(after) != string(before) {
		t.Fatal("file changed on re-registration")
	}
}

func TestRegisterKeyRefusesPrivateKeyWithoutEchoing(t *testing.T) {
	f := startGateway(t, "", nil)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(priv, "secret")
	if err != nil {
		t.Fatal(err)
	}
	pemText := string(pem.EncodeToMemory(block))
	secret := strings.Split(pemText, "\n")[1] // a line of key material
	inputs := []string{pemText, strings.ReplaceAll(pemText, "\n", " "), secret}
	for _, in := range inputs {
		_, err := f.g.RegisterKey(in, "pi", nil)
		if err == nil {
			t.Fatal("private key accepted")
		}
		if strings.Contains(err.Error(), secret[:20]) {
			t.Fatalf("error echoes the input: %v", err)
		}
	}
	if strings.Contains(f.logs.String(), secret[:20]) {
		t.Fatal("private key material in the log")
	}
	if b, _ := os.ReadFile(f.akPath); len(b) != 0 {
		t.Fatalf("authorized_keys written: %q", b)
	}
	if b, _ := os.ReadFile(f.auditPath); strings.Contains(string(b), secret[:20]) {
		t.Fatal("private key material in the audit log")
	}
}
