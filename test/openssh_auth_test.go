package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// TestOpenSSHAuthRefused drives the OpenSSH client's other ways in: password and
// keyboard-interactive answers (given by an askpass program), an unknown key (which gets only
// as far as the enrolment prompt, and fails it), a revoked key, and key exchanges and ciphers
// the gateway does not offer (costly Diffie-Hellman, SHA-1, ciphers without authentication).
// Every one is refused and the canary command never runs on the gateway host.
func TestOpenSSHAuthRefused(t *testing.T) {
	t.Parallel()
	requireOpenSSH(t)
	f := newFixture(t)
	known, revoked, unknown := f.newEdgeKey(t), f.newEdgeKey(t), f.newEdgeKey(t)
	f.authorize(t, known, "known", "")
	f.authorize(t, revoked, "to-revoke", "")
	g := f.startGateway(t, map[string]string{"PROVISION_TOKEN": "a-long-provisioning-token"})
	f.mustAdmin(t, "", "keys", "revoke", "to-revoke")
	host, port, _ := net.SplitHostPort(g.addr)
	canary := filepath.Join(t.TempDir(), fmt.Sprintf("canary-%d", time.Now().UnixNano()))
	askpass := filepath.Join(t.TempDir(), "askpass")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho guessed-password\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, k := range []edgeKey{known, revoked, unknown} {
		os.Chmod(k.KeyFile, 0o600)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in the client's output; "permission denied" if empty
	}{
		{"password", []string{"-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"}, ""},
		{"keyboard-interactive", []string{"-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=keyboard-interactive"}, ""},
		{"none", []string{"-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=none"}, ""},
		{"unknown key then enrolment prompt", []string{"-i", unknown.KeyFile, "-o", "PreferredAuthentications=publickey,keyboard-interactive"}, ""},
		{"revoked key", []string{"-i", revoked.KeyFile, "-o", "BatchMode=yes"}, ""},
		{"known key, 2048-bit Diffie-Hellman", []string{"-i", known.KeyFile, "-o", "BatchMode=yes",
			"-o", "KexAlgorithms=diffie-hellman-group14-sha256,diffie-hellman-group14-sha1,diffie-hellman-group-exchange-sha256"}, "no matching key exchange"},
		{"known key, AES-CTR", []string{"-i", known.KeyFile, "-o", "BatchMode=yes", "-o", "Ciphers=aes128-ctr,aes256-ctr"}, "no matching cipher"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			args := append([]string{"-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
				"-o", "ConnectTimeout=10", "-o", "IdentitiesOnly=yes", "-o", "NumberOfPasswordPrompts=1", "-p", port, "-l", "edge"}, tc.args...)
			args = append(args, host, "touch "+canary)
			cmd := exec.CommandContext(ctx, "/usr/bin/ssh", args...)
			cmd.Env = append(localfleet.BaseEnv(f.Dir), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
			cmd.WaitDelay = 2 * time.Second
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil || err == nil {
				t.Fatalf("ssh %v: err %v (ctx %v), want refused:\n%s", tc.args, err, ctx.Err(), out)
			}
			want := tc.want
			if want == "" {
				want = "permission denied"
			}
			if !strings.Contains(strings.ToLower(string(out)), want) {
				t.Errorf("ssh output does not say %q:\n%s", want, out)
			}
		})
	}
	if _, err := os.Stat(canary); err == nil {
		t.Errorf("canary %s was created", canary)
	}
	if !strings.Contains(g.auditLog(), "enrolment") {
		t.Errorf("the refused enrolment answer is not audited:\n%s", g.auditLog())
	}
}
