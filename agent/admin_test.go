package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

func TestShortToken(t *testing.T) {
	for tok, want := range map[string]bool{"": false, "short": true, "fifteen-chars-x": true, "sixteen-chars-xx": false} {
		if got := shortToken(tok); got != want {
			t.Errorf("shortToken(%q) = %v, want %v", tok, got, want)
		}
	}
}

// TestAdminKeys runs the admin CLI in-process on a temporary gateway environment.
func TestAdminKeys(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KEYS_DIR", filepath.Join(dir, "keys"))
	t.Setenv("STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("PUBLIC_ADDR", "gw.example:2222")
	signer, _, err := keys.LoadOrGenerate(filepath.Join(dir, "edge"), "t")
	if err != nil {
		t.Fatal(err)
	}
	line := keys.AuthorizedLine(signer.PublicKey())
	fp := keys.Fingerprint(signer.PublicKey())
	admin := func(stdin string, args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := run(args, strings.NewReader(stdin), &out, &errb)
		return out.String(), errb.String(), code
	}
	for _, tc := range []struct {
		args     []string
		stdin    string
		wantCode int
		wantOut  string
	}{
		{[]string{"keys", "list"}, "", 0, "NAME"},
		{[]string{"keys", "add", "--name", "cam1", "--labels", "role=cam", "-"}, line + "\n", 0, "added " + fp},
		{[]string{"keys", "add", line}, "", 0, "already authorized"},
		{[]string{"keys", "add", "-----BEGIN OPENSSH PRIVATE KEY-----"}, "", 2, ""},
		{[]string{"keys", "add", "-"}, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n", 1, ""},
		{[]string{"keys", "list"}, "", 0, "role=cam"},
		{[]string{"keys", "pending"}, "", 0, "FINGERPRINT"},
		{[]string{"keys", "approve", "--name", "x", "SHA256:none"}, "", 1, ""},
		{[]string{"enroll-token", "--name", "cam2", "--ttl", "5m"}, "", 0, "mcpssh-enroll-v1:"},
		{[]string{"enroll-token", "--name", "cam2", "--ttl", "48h"}, "", 1, ""},
		{[]string{"enroll-token"}, "", 2, ""},
		{[]string{"keys", "revoke", "cam1"}, "", 0, "revoked " + fp},
		{[]string{"keys", "revoke", "cam1"}, "", 1, ""},
		{[]string{"keys", "frobnicate"}, "", 2, ""},
	} {
		out, errs, code := admin(tc.stdin, tc.args...)
		if code != tc.wantCode || !strings.Contains(out, tc.wantOut) {
			t.Errorf("%v: exit %d, out %q, err %q; want exit %d and %q", tc.args, code, out, errs, tc.wantCode, tc.wantOut)
		}
		if strings.Contains(out+errs, "PRIVATE KEY") {
			t.Errorf("%v: output echoes a private key", tc.args)
		}
	}
	// audit verify: missing log, then a good and an edited one.
	if _, _, code := admin("", "audit", "verify"); code != 1 {
		t.Errorf("verify without a log: exit %d", code)
	}
	log := filepath.Join(dir, "a.jsonl")
	os.WriteFile(log, []byte(`{"event":"x","prev":""}`+"\n"+`{"event":"y","prev":"bad"}`+"\n"), 0o600)
	if _, errs, code := admin("", "audit", "verify", log); code != 1 || !strings.Contains(errs, "line 2") {
		t.Errorf("verify of a broken chain: exit %d %q", code, errs)
	}
}
