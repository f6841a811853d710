package tools_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
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

// session is another MCP client (its own session) on h's server, checked like h.
func (h *harness) session(t *testing.T) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.NewInProcessClient(h.srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var ir mcp.InitializeRequest
	ir.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	ir.Params.ClientInfo = mcp.Implementation{Name: "test-2", Version: "0"}
	init, err := c.Initialize(ctx, ir)
	if err != nil {
		t.Fatalf("initialize: %v", err)
	}
	return &harness{t: t, c: c, srv: h.srv, init: init, tools: h.tools, schemas: h.schemas}
}

// TestTokenLockoutPerSession: the lockout after five wrong provisioning tokens a minute is per
// MCP session, so that one client's mistakes do not lock out another that shares its actor
// (every client using MCP_HTTP_TOKEN is "http"), while one session still gets no more than
// five guesses a minute and fresh sessions buy no more than 20 for the actor as a whole.
func TestTokenLockoutPerSession(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	line := keys.AuthorizedLine(sshPub)
	const right, httpToken = "the-right-token-123", "http-token-of-every-client"
	const wrongMsg, lockedMsg = "wrong provisioning token:", "too many wrong provisioning tokens from "
	const actorMsg = lockedMsg + "all sessions of client http"

	type step struct {
		session int    // which client calls: index into the sessions of the test
		token   string // provisioning token given
		want    string // "" = registered, else the start of the error
	}
	wrong := func(session, n int) []step {
		var out []step
		for range n {
			out = append(out, step{session, "guess", wrongMsg})
		}
		return out
	}
	tests := []struct {
		name     string
		bearer   string // "" = stdio
		sessions int
		steps    []step
	}{
		{"stdio: locked out, the right token refused too", "", 1,
			append(wrong(0, 5), step{0, "guess", lockedMsg}, step{0, right, lockedMsg})},
		{"same HTTP token: one session locked out, the other registers", httpToken, 2,
			append(wrong(0, 5), step{0, right, lockedMsg}, step{1, right, ""}, step{0, "guess", lockedMsg}, step{1, right, ""})},
		{"other session's wrong tokens count on their own", httpToken, 2,
			append(append(wrong(0, 4), wrong(1, 4)...), step{0, right, ""}, step{1, right, ""})},
		{"fresh sessions: at most 20 guesses a minute for the actor", httpToken, 5,
			append(append(append(append(wrong(0, 5), wrong(1, 5)...), wrong(2, 5)...), wrong(3, 5)...), step{4, right, actorMsg})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.ProvisionToken = right
			cfg.Access.HTTPToken = httpToken
			registered := 0
			f := &fakeFleet{regFn: func(_, name string, _ map[string]string) (gateway.KeyAdded, error) {
				registered++
				return gateway.KeyAdded{Fingerprint: keys.Fingerprint(sshPub), Name: name, Labels: map[string]string{}, Added: true}, nil
			}}
			first := newHarness(t, &adminFleet{fakeFleet: f}, cfg)
			for _, name := range []string{"register_edge_key", "revoke_edge_key", "list_pending_edges", "approve_edge", "create_enrollment_token"} {
				if d := first.tools[name].Description; !strings.Contains(d, "the right one too") {
					t.Fatalf("%s's description does not say that the lockout refuses the right token too: %q", name, d)
				}
			}
			clients := []*harness{first}
			for len(clients) < tc.sessions {
				clients = append(clients, first.session(t))
			}
			wantRegistered := 0
			for i, st := range tc.steps {
				res := clients[st.session].callAs(tc.bearer, "register_edge_key", map[string]any{"token": st.token, "public_key": line, "name": "cam1"})
				if st.want == "" {
					wantRegistered++
					if res.IsError {
						t.Fatalf("step %d (session %d, right token): %q, want registered", i, st.session, text(res))
					}
					continue
				}
				if !res.IsError || !strings.HasPrefix(text(res), st.want) {
					t.Fatalf("step %d (session %d): isError=%v %q, want %q", i, st.session, res.IsError, text(res), st.want)
				}
				if strings.HasPrefix(st.want, lockedMsg) && !strings.Contains(text(res), "even the right one") {
					t.Fatalf("step %d: the refusal %q does not say that the right token is refused too", i, text(res))
				}
			}
			if registered != wantRegistered {
				t.Fatalf("RegisterKey called %d times, want %d", registered, wantRegistered)
			}
		})
	}
}
