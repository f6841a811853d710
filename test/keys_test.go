package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// admin runs `mcp-ssh-gateway args…` with the fixture's gateway environment.
func (f *fixture) admin(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gatewayBin, args...)
	cmd.Env = f.gatewayEnv(map[string]string{"SSH_PORT": "2222", "PUBLIC_ADDR": "127.0.0.1:1"})
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (f *fixture) mustAdmin(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errs, code := f.admin(t, stdin, args...)
	if code != 0 {
		t.Fatalf("mcp-ssh-gateway %v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

// TestAdminCLIKeyLifecycle: keys add / list / revoke on the files of a running gateway; a
// revoked edge is dropped within seconds, and the audit log records it and still verifies.
func TestAdminCLIKeyLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	g := f.startGateway(t, nil)
	k := f.newEdgeKey(t)
	f.mustAdmin(t, k.Line+"\n", "keys", "add", "--name", "cli-cam", "--labels", "role=cam", "-")
	if out := f.mustAdmin(t, "", "keys", "list"); !strings.Contains(out, "cli-cam") || !strings.Contains(out, k.Fingerprint) || !strings.Contains(out, "role=cam") {
		t.Fatalf("keys list:\n%s", out)
	}
	f.startEdge(t, k, g.addr, map[string]string{"EDGE_NAME": "whatever"})
	e := g.waitConnected(t, k.Fingerprint, nil)
	if e.Name != "cli-cam" || e.Labels["role"] != "cam" {
		t.Fatalf("edge = %+v", e)
	}
	start := time.Now()
	f.mustAdmin(t, "", "keys", "revoke", "cli-cam")
	if !waitFor(10*time.Second, func() bool { e, _ := g.edgeByFP(t, k.Fingerprint); return !e.Connected }) {
		t.Fatal("revoked edge still connected after 10 s")
	}
	t.Logf("revoked edge dropped after %v", time.Since(start))
	if !waitFor(5*time.Second, func() bool { return strings.Contains(g.auditLog(), `"key_revoked"`) }) {
		t.Fatalf("no key_revoked audit line:\n%s", g.auditLog())
	}
	if out := f.mustAdmin(t, "", "audit", "verify"); !strings.Contains(out, "intact") {
		t.Fatalf("audit verify: %s", out)
	}
	if _, _, code := f.admin(t, "", "keys", "revoke", "nobody"); code == 0 {
		t.Fatal("revoking an unknown name exited 0")
	}
}

// TestPendingApproveAndEnrol: an unknown edge shows up as pending with its requested name and
// connects once approved; an enrolment string binds name and labels, works once, and a wrong
// one fails. The enrolment secret is in no log.
func TestPendingApproveAndEnrol(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	g := f.startGateway(t, map[string]string{"PROVISION_TOKEN": "a-long-provisioning-token"})

	stranger := f.newEdgeKey(t)
	f.startEdge(t, stranger, g.addr, map[string]string{"EDGE_NAME": "stranger"})
	var pending string
	if !waitFor(15*time.Second, func() bool {
		pending = f.mustAdmin(t, "", "keys", "pending")
		return strings.Contains(pending, stranger.Fingerprint)
	}) {
		t.Fatalf("unknown key not pending:\n%s", pending)
	}
	if !strings.Contains(pending, "stranger") {
		t.Fatalf("requested name not shown:\n%s", pending)
	}
	// Over MCP too.
	r := g.call(t, "list_pending_edges", map[string]any{"token": "a-long-provisioning-token"})
	if r.IsError || !strings.Contains(r.Text, stranger.Fingerprint) {
		t.Fatalf("list_pending_edges: %+v", r)
	}
	f.mustAdmin(t, "", "keys", "approve", "--name", "approved-one", "--labels", "role=sensor", stranger.Fingerprint)
	e := g.waitConnected(t, stranger.Fingerprint, nil)
	if e.Name != "approved-one" || e.Labels["role"] != "sensor" {
		t.Fatalf("approved edge = %+v", e)
	}

	// Enrolment over MCP.
	r = g.call(t, "create_enrollment_token", map[string]any{"token": "a-long-provisioning-token", "name": "enrolled-cam", "labels": map[string]any{"site": "lab"}, "ttl_seconds": 600})
	if r.IsError {
		t.Fatalf("create_enrollment_token: %+v", r)
	}
	str, _ := r.Structured["enrollment"].(string)
	if !strings.HasPrefix(str, "mcpssh-enroll-v1:") || r.Structured["gateway"] != g.addr {
		t.Fatalf("enrolment = %v", r.Structured)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	cfgFile := filepath.Join(dir, "edge.env")
	enroll := func(s string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, edgeBin, "enroll", "--config", cfgFile, s)
		cmd.Env = append(localfleet.BaseEnv(f.Dir), "EDGE_KEY_FILE="+keyFile, "EDGE_STATE_DIR="+filepath.Join(dir, "state"))
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		return string(out), 0
	}
	if out, code := enroll(str); code != 0 {
		t.Fatalf("enroll: exit %d: %s", code, out)
	}
	env, err := os.ReadFile(cfgFile)
	if err != nil || !strings.Contains(string(env), "EDGE_GATEWAY="+g.addr) || !strings.Contains(string(env), "EDGE_GATEWAY_HOST_KEY="+f.HostKeyFP) {
		t.Fatalf("config file: %s %v", env, err)
	}
	// The same string a second time, with another key: refused.
	os.Remove(keyFile)
	if out, code := enroll(str); code == 0 || !strings.Contains(out, "refused") {
		t.Fatalf("reused enrolment: exit %d: %s", code, out)
	}
	if strings.Contains(g.Stderr(), strings.TrimPrefix(str, "mcpssh-enroll-v1:")) || strings.Contains(g.auditLog(), strings.TrimPrefix(str, "mcpssh-enroll-v1:")) {
		t.Fatal("the enrolment string appears in the gateway's log or audit")
	}
	if out := f.mustAdmin(t, "", "keys", "list"); !strings.Contains(out, "enrolled-cam") || !strings.Contains(out, "site=lab") {
		t.Fatalf("keys list after enrolment:\n%s", out)
	}
}
