package tools_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

func TestRegisterEdgeKey(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := keys.AuthorizedLine(sshPub)
	fp := keys.Fingerprint(sshPub)
	const secretish = "-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA-secret"

	tests := []struct {
		name      string
		token     string // configured
		args      map[string]any
		regErr    error
		wantErr   string
		wantAudit string // event of the last audit line, "" = none
		wantLine  string
	}{
		{"disabled", "", map[string]any{"token": "x", "public_key": line}, nil, "provisioning over MCP is disabled: set PROVISION_TOKEN, or use `mcp-ssh-gateway keys add` on the gateway host", "", ""},
		{"wrong token", "tok", map[string]any{"token": "nope", "public_key": line}, nil, "wrong provisioning token", "outcome", ""},
		{"empty token", "tok", map[string]any{"token": "", "public_key": line}, nil, "wrong provisioning token", "outcome", ""},
		{"private key refused", "tok", map[string]any{"token": "tok", "public_key": secretish}, nil, "not an SSH public key", "", ""},
		{"two lines refused", "tok", map[string]any{"token": "tok", "public_key": line + "\n" + line}, nil, "single line", "", ""},
		{"bad name", "tok", map[string]any{"token": "tok", "public_key": line, "name": "-bad name"}, nil, "not valid", "", ""},
		{"bad labels", "tok", map[string]any{"token": "tok", "public_key": line, "labels": map[string]string{"": "x"}}, nil, "label", "", ""},
		{"fleet error", "tok", map[string]any{"token": "tok", "public_key": line, "name": "cam1"}, errors.New("name cam1 is bound to another key"), "bound to another key", "outcome", ""},
		{"ok with options", "tok", map[string]any{"token": "tok", "public_key": `command="/bin/false",no-pty ` + line + " me@host", "name": "Cam1"}, nil, "", "outcome", line},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var gotLine, gotName string
			var gotLabels map[string]string
			f := &fakeFleet{regFn: func(l, name string, labels map[string]string) (gateway.KeyAdded, error) {
				gotLine, gotName, gotLabels = l, name, labels
				if tc.regErr != nil {
					return gateway.KeyAdded{}, tc.regErr
				}
				return gateway.KeyAdded{Fingerprint: fp, Name: name, Labels: nil, Added: true}, nil
			}}
			lg, readAudit := auditLog(t)
			cfg := baseConfig()
			cfg.ProvisionToken = tc.token
			cfg.Audit = lg
			h := newHarness(t, f, cfg)
			res := h.call("register_edge_key", tc.args)
			raw := auditRaw(t, readAudit)
			if strings.Contains(raw, "secret") || strings.Contains(raw, "nope") || strings.Contains(raw, `"tok"`) {
				t.Fatalf("audit leaks key material or token: %s", raw)
			}
			if evs := readAudit(); tc.wantAudit == "" && len(evs) != 0 || tc.wantAudit != "" && (len(evs) != 1 || evs[0].Event != tc.wantAudit) {
				t.Fatalf("audit %s, want one %q line", raw, tc.wantAudit)
			}
			if tc.wantErr != "" {
				if !res.IsError || !strings.Contains(text(res), tc.wantErr) || strings.Contains(text(res), "secret") {
					t.Fatalf("isError=%v %q", res.IsError, text(res))
				}
				if tc.regErr == nil && f.callCount() != 0 {
					t.Fatal("RegisterKey called")
				}
				return
			}
			var out tools.RegisterKeyOutput
			structured(t, res, &out)
			if res.IsError || !out.Added || out.Fingerprint != fp || out.Name != "cam1" || out.Labels == nil {
				t.Fatalf("got %+v %q", out, text(res))
			}
			if gotLine != tc.wantLine || gotName != "cam1" || gotLabels == nil {
				t.Fatalf("RegisterKey(%q, %q, %v)", gotLine, gotName, gotLabels)
			}
		})
	}
}
