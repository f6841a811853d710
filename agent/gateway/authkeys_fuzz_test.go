package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// FuzzAuthorizedKeys feeds arbitrary authorized_keys content to the parser, the revocation
// filter and the one-line parser: no panic, every bound name and label valid, and removing a
// key keeps every other key.
func FuzzAuthorizedKeys(f *testing.F) {
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOVYTwXnU2xk1pomYMKreX0XsRllCzOXIhCRJUDV51Xh"
	f.Add([]byte(key + " c\n"))
	f.Add([]byte(`name="cam1",labels="role=cam,site=a" ` + key + " comment\n# note\n\n"))
	f.Add([]byte(`command="/bin/false",no-pty,name="x" ` + key + "\n" + key + "\n"))
	f.Add([]byte(`labels="a=b,,=c,d" name="BAD NAME" ` + key))
	f.Add([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"))
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := parseAuthKeys(data, log)
		if err != nil {
			return
		}
		for fp, k := range set.byFP {
			if k.name != "" && (!protocol.ValidName(k.name) || set.byName[k.name] != fp) {
				t.Fatalf("bad bound name %q for %s", k.name, fp)
			}
			if err := protocol.ValidateLabels(k.labels); err != nil {
				t.Fatalf("bad labels %v: %v", k.labels, err)
			}
			rest, err := parseAuthKeys(removeKeyLines(data, fp), log)
			if err != nil || rest.byFP[fp] != nil || len(rest.byFP) != len(set.byFP)-1 {
				t.Fatalf("removing %s: %d keys left of %d, err %v", fp, len(rest.byFP), len(set.byFP), err)
			}
		}
		for line := range bytes.Lines(data) {
			if pub, _, err := parseOneKey(string(line)); err == nil && pub == nil {
				t.Fatal("nil key without error")
			} else if err != nil && err != errNotPublicKey && !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("error is not one of the fixed messages (it may echo the input): %v", err)
			}
		}
	})
}
