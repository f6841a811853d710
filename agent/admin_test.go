package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/approval"
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

// TestAdminActions runs `actions list|approve|deny` in-process while a Store stands in for the
// running gateway, with calls waiting on it: the CLI's decisions reach the waiting calls.
func TestAdminActions(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	t.Setenv("KEYS_DIR", filepath.Join(dir, "keys"))
	t.Setenv("STATE_DIR", state)
	gw, err := approval.Open(state, nil) // the running gateway's store
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	type waited struct {
		d   approval.Decision
		err error
	}
	submit := func(tool, summary string) (approval.Action, <-chan waited) {
		a, err := gw.Submit(approval.Action{Actor: "http:ops", Role: "admin", Tool: tool, Edge: "cam1", Summary: summary, RequestID: "r-" + tool})
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan waited, 1)
		go func() {
			d, err := gw.Wait(context.Background(), a.ID)
			ch <- waited{d, err}
		}()
		return a, ch
	}
	up, upDone := submit("upload_file", "path: /etc/app.conf; content: 12 bytes (not shown)")
	rb, rbDone := submit("run_command", "argv: reboot")
	decided := func(ch <-chan waited, approved bool, reason string) func(*testing.T) {
		return func(t *testing.T) {
			select {
			case w := <-ch:
				if w.err != nil || w.d.Approved != approved || w.d.Approver != cliApprover() || w.d.Reason != reason {
					t.Errorf("the waiting call got %+v, %v; want approved %v by %s, reason %q", w.d, w.err, approved, cliApprover(), reason)
				}
			case <-time.After(time.Second):
				t.Error("the waiting call did not see the CLI's decision within 1 s")
			}
		}
	}
	stillWaiting := func(t *testing.T) {
		select {
		case w := <-upDone:
			t.Fatalf("the call stopped waiting before any decision: %+v", w)
		default:
		}
	}
	for _, tc := range []struct {
		args             []string
		wantCode         int
		wantOut, wantErr string
		notOut           string
		then             func(*testing.T)
	}{
		{[]string{"actions", "list"}, 0, "EXPIRES IN", "", "", stillWaiting},
		{[]string{"actions", "list"}, 0, up.ID, "", "", nil},
		{[]string{"actions", "list"}, 0, "path: /etc/app.conf; content: 12 bytes (not shown)", "", "", nil},
		{[]string{"actions", "list"}, 0, rb.ID, "", "", nil},
		{[]string{"actions", "--help"}, 0, "actions approve ID [--reason TEXT]", "", "", nil},
		{[]string{"actions"}, 2, "", "say list, approve ID or deny ID", "", nil},
		{[]string{"actions", "frobnicate"}, 2, "", "bad usage", "", nil},
		{[]string{"actions", "approve"}, 2, "", "bad usage", "", nil},
		{[]string{"actions", "approve", up.ID, rb.ID}, 2, "", "bad usage", "", nil},
		{[]string{"actions", "list", "--reason", "x"}, 2, "", "bad usage", "", nil},
		{[]string{"actions", "approve", "--name", "x", up.ID}, 2, "", "only --reason exists", "", nil},
		{[]string{"actions", "approve", "tok-secret-123", "tok-secret-456"}, 2, "", "give one action ID", "", nil},
		{[]string{"actions", "approve", "tok-secret-123"}, 2, "", "12 hex characters", "", stillWaiting},
		{[]string{"actions", "approve", "0123456789ab"}, 1, "", "no pending action 0123456789ab: it was decided, expired, or never existed; `mcp-ssh-gateway actions list` shows what waits", "", stillWaiting},
		{[]string{"actions", "approve", strings.ToUpper(up.ID), "--reason", "looks fine"}, 0, "approved " + up.ID + ": upload_file on cam1 for http:ops", "", "", decided(upDone, true, "looks fine")},
		{[]string{"actions", "approve", up.ID}, 1, "", "no pending action " + up.ID, "", nil},
		{[]string{"actions", "deny", up.ID}, 1, "", "no pending action " + up.ID, "", nil},
		{[]string{"actions", "list"}, 0, rb.ID, "", up.ID, nil},
		{[]string{"actions", "deny", "--reason", "not on a Friday", rb.ID}, 0, "denied " + rb.ID, "", "", decided(rbDone, false, "not on a Friday")},
		{[]string{"actions", "list"}, 0, "SUMMARY", "", rb.ID, nil},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, strings.NewReader(""), &out, &errb)
		if code != tc.wantCode || !strings.Contains(out.String(), tc.wantOut) || !strings.Contains(errb.String(), tc.wantErr) ||
			(tc.notOut != "" && strings.Contains(out.String(), tc.notOut)) {
			t.Errorf("%v: exit %d, out %q, err %q; want exit %d, out with %q (without %q), err with %q",
				tc.args, code, out.String(), errb.String(), tc.wantCode, tc.wantOut, tc.notOut, tc.wantErr)
		}
		if strings.Contains(out.String()+errb.String(), "tok-secret") || strings.Contains(errb.String(), "frobnicate") {
			t.Errorf("%v: the argument was echoed", tc.args)
		}
		if tc.then != nil {
			tc.then(t)
		}
	}
}

// TestAdminKeyLifecycle: keys approve needs a name the operator chose (or an explicit
// --use-requested-name), approved and added keys leave keys pending, a revoked key is
// remembered as revoked, keys label rewrites labels in place, and keys --help is help.
func TestAdminKeyLifecycle(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	t.Setenv("KEYS_DIR", filepath.Join(dir, "keys"))
	t.Setenv("STATE_DIR", state)
	newKey := func(name string) (line, fp string) {
		s, _, err := keys.LoadOrGenerate(filepath.Join(dir, name), "t")
		if err != nil {
			t.Fatal(err)
		}
		return keys.AuthorizedLine(s.PublicKey()), keys.Fingerprint(s.PublicKey())
	}
	pendLine, pendFP := newKey("pend")    // asks for "cam9"
	addLine, addFP := newKey("add")       // pending, then authorized with keys add
	_, anonFP := newKey("anon")           // pending, asks for no name
	staleLine, staleFP := newKey("stale") // pending though authorized (approved while a gateway had it as unknown)
	now := time.Now().UTC().Format(time.RFC3339)
	entry := func(fp, line, name string) string {
		return `{"fingerprint":"` + fp + `","public_key":"` + line + `","requested_name":"` + name +
			`","remote_addr":"192.0.2.7:4000","first_attempt":"` + now + `","last_attempt":"` + now + `","attempts":2}`
	}
	os.MkdirAll(state, 0o700)
	doc := `{"pending":[` + entry(pendFP, pendLine, "cam9") + "," + entry(addFP, addLine, "") + "," + entry(anonFP, "x", "") + "," +
		entry(staleFP, staleLine, "") + `]}`
	if err := os.WriteFile(filepath.Join(state, "pending.json"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	admin := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := run(args, strings.NewReader(""), &out, &errb)
		return out.String(), errb.String(), code
	}
	if _, errs, code := admin("keys", "add", "--name", "stale", staleLine); code != 0 {
		t.Fatalf("keys add: %d %s", code, errs)
	}
	// keys add took the stale entry out: put it back, as a gateway that had not reloaded would.
	b, _ := os.ReadFile(filepath.Join(state, "pending.json"))
	if strings.Contains(string(b), staleFP) {
		t.Errorf("keys add left its key in pending.json")
	}
	os.WriteFile(filepath.Join(state, "pending.json"), []byte(doc), 0o600)
	for _, tc := range []struct {
		args           []string
		wantCode       int
		want, wantErr  string // in stdout, stderr
		notOut, notErr string
	}{
		{[]string{"keys", "--help"}, 0, "keys label NAME|SHA256:FINGERPRINT k=v,… [--replace]", "", "", "bad usage"},
		{[]string{"keys", "approve", "-h"}, 0, "unverified", "", "", "bad usage"},
		{[]string{"keys", "pending"}, 0, pendFP, "", staleFP, ""},
		{[]string{"keys", "pending"}, 0, "new", "", "", ""},
		{[]string{"keys", "approve", pendFP}, 2, "", "give --name NAME: the name a pending edge asked for is its own unverified claim", "", ""},
		{[]string{"keys", "approve", pendFP, "--name", "x", "--use-requested-name"}, 2, "", "not both", "", ""},
		{[]string{"keys", "approve", anonFP, "--use-requested-name"}, 1, "", "asked for no valid name", "", ""},
		{[]string{"keys", "approve", pendFP, "--use-requested-name", "--labels", "role=cam"}, 0, "approved " + pendFP + " cam9 role=cam", "", "", ""},
		{[]string{"keys", "pending"}, 0, anonFP, "", pendFP, ""},
		{[]string{"keys", "add", "--name", "b", addLine}, 0, "added " + addFP, "", "", ""},
		{[]string{"keys", "pending"}, 0, anonFP, "", addFP, ""},
		{[]string{"keys", "label", "cam9", "site=lab,floor=2"}, 0, "floor=2,role=cam,site=lab (were role=cam", "", "", ""},
		{[]string{"keys", "label", "cam9", "site="}, 0, ": floor=2,role=cam (were", "", "", ""},
		{[]string{"keys", "label", pendFP, "zone=b", "--replace"}, 0, ": zone=b (were floor=2,role=cam", "", "", ""},
		{[]string{"keys", "list"}, 0, "zone=b", "", "role=cam", ""},
		{[]string{"keys", "label", "cam9", "--replace"}, 0, ": - (were zone=b", "", "", ""},
		{[]string{"keys", "label", "nope", "a=b"}, 1, "", "no authorized key", "", ""},
		{[]string{"keys", "label", "cam9", "a=b,c"}, 2, "", "not key=value", "", ""},
		{[]string{"keys", "label", "cam9"}, 2, "", "bad usage", "", ""},
		{[]string{"keys", "revoke", "cam9"}, 0, "revoked " + pendFP, "", "", ""},
	} {
		out, errs, code := admin(tc.args...)
		if code != tc.wantCode || !strings.Contains(out, tc.want) || !strings.Contains(errs, tc.wantErr) ||
			(tc.notOut != "" && strings.Contains(out, tc.notOut)) || (tc.notErr != "" && strings.Contains(errs, tc.notErr)) {
			t.Errorf("%v: exit %d\nstdout %q\nstderr %q\nwant exit %d, stdout with %q without %q, stderr with %q without %q",
				tc.args, code, out, errs, tc.wantCode, tc.want, tc.notOut, tc.wantErr, tc.notErr)
		}
	}
	// The label edits kept the key's line otherwise intact, and the revocation is remembered.
	ak, _ := os.ReadFile(filepath.Join(dir, "keys", "authorized_keys"))
	if !strings.Contains(string(ak), `name="stale" `+staleLine) || !strings.Contains(string(ak), `name="b" `+addLine) {
		t.Errorf("authorized_keys after the edits:\n%s", ak)
	}
	b, _ = os.ReadFile(filepath.Join(state, "pending.json"))
	var d struct {
		Revoked []struct{ Fingerprint, Name string }
	}
	if err := json.Unmarshal(b, &d); err != nil || len(d.Revoked) != 1 || d.Revoked[0].Fingerprint != pendFP || d.Revoked[0].Name != "cam9" {
		t.Errorf("revoked keys remembered: %+v (%v)", d.Revoked, err)
	}
}

// TestKeysListWarnsOfUnusableLines: a mistyped authorized_keys line (a space instead of a comma
// between options) is not listed, and `keys list` says which line and why.
func TestKeysListWarnsOfUnusableLines(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KEYS_DIR", dir)
	t.Setenv("STATE_DIR", filepath.Join(dir, "state"))
	good, _, err := keys.LoadOrGenerate(filepath.Join(dir, "good"), "t")
	if err != nil {
		t.Fatal(err)
	}
	bad, _, err := keys.LoadOrGenerate(filepath.Join(dir, "bad"), "t")
	if err != nil {
		t.Fatal(err)
	}
	file := `name="e4" ` + keys.AuthorizedLine(good.PublicKey()) + "\n" +
		`name="e5" labels="a=b" ` + keys.AuthorizedLine(bad.PublicKey()) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"keys", "list"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("keys list exited %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "e4") || strings.Contains(out.String(), "e5") {
		t.Errorf("keys list output:\n%s", out.String())
	}
	if w := errb.String(); !strings.Contains(w, "warning:") || !strings.Contains(w, "line 2") {
		t.Errorf("no warning naming line 2 of the mistyped file:\n%s", w)
	}
}
