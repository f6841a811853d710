package tools_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
)

// adminFleet is a fakeFleet that can also administer keys.
type adminFleet struct {
	*fakeFleet
	revoked  []string
	approved []string
	ttl      time.Duration
	err      error
}

func (a *adminFleet) RevokeKey(ref string) (gateway.KeyRevoked, error) {
	a.revoked = append(a.revoked, ref)
	if a.err != nil {
		return gateway.KeyRevoked{}, a.err
	}
	return gateway.KeyRevoked{Fingerprint: "SHA256:abc", Name: "cam1"}, nil
}

func (a *adminFleet) PendingEdges() ([]gateway.PendingEdge, error) {
	return []gateway.PendingEdge{{Fingerprint: "SHA256:p1", RequestedName: "cam9", RemoteAddr: "127.0.0.1:5", FirstAttempt: time.Unix(0, 0), LastAttempt: time.Unix(60, 0), Attempts: 2},
		{Fingerprint: "SHA256:p2", RequestedName: "old", Revoked: &gateway.RevokedKey{Fingerprint: "SHA256:p2", Name: "cam3", RevokedAt: time.Unix(120, 0)}}}, nil
}

func (a *adminFleet) ApproveEdge(fp, name string, labels map[string]string) (gateway.KeyAdded, error) {
	a.approved = append(a.approved, fp+" "+name)
	if a.err != nil {
		return gateway.KeyAdded{}, a.err
	}
	return gateway.KeyAdded{Fingerprint: fp, Name: name, Labels: labels, Added: true}, nil
}

func (a *adminFleet) CreateEnrollment(name string, labels map[string]string, ttl time.Duration) (gateway.Enrollment, error) {
	a.ttl = ttl
	return gateway.Enrollment{String: "mcpssh-enroll-v1:xyz", Name: name, Labels: labels, Gateway: "gw:2222", HostKey: "SHA256:h", ExpiresAt: time.Unix(3600, 0)}, nil
}

var _ tools.KeyAdmin = (*adminFleet)(nil)

func TestKeyLifecycleTools(t *testing.T) {
	tests := []struct {
		tool    string
		args    map[string]any
		err     error
		wantErr string
		check   func(t *testing.T, a *adminFleet, out map[string]any)
	}{
		{"revoke_edge_key", map[string]any{"token": "tok", "edge": "cam1"}, nil, "", func(t *testing.T, a *adminFleet, out map[string]any) {
			if len(a.revoked) != 1 || a.revoked[0] != "cam1" || out["revoked"] != true || out["fingerprint"] != "SHA256:abc" {
				t.Fatalf("revoked %v, out %v", a.revoked, out)
			}
		}},
		{"revoke_edge_key", map[string]any{"token": "tok", "fingerprint": "SHA256:abc"}, nil, "", nil},
		{"revoke_edge_key", map[string]any{"token": "tok"}, nil, "give edge", nil},
		{"revoke_edge_key", map[string]any{"token": "tok", "edge": "a", "fingerprint": "SHA256:x"}, nil, "not both", nil},
		{"revoke_edge_key", map[string]any{"token": "tok", "fingerprint": "abc"}, nil, "SHA256", nil},
		{"revoke_edge_key", map[string]any{"token": "tok", "edge": "ghost"}, errors.New("no authorized key has the name"), "no authorized key", nil},
		{"revoke_edge_key", map[string]any{"token": "bad", "edge": "cam1"}, nil, "wrong provisioning token", nil},
		{"list_pending_edges", map[string]any{"token": "tok"}, nil, "", func(t *testing.T, _ *adminFleet, out map[string]any) {
			p := out["pending"].([]any)
			if len(p) != 2 || p[0].(map[string]any)["requested_name"] != "cam9" || p[0].(map[string]any)["last_attempt"] != "1970-01-01T00:01:00Z" ||
				p[0].(map[string]any)["revoked_at"] != "" {
				t.Fatalf("pending = %v", p)
			}
			if r := p[1].(map[string]any); r["revoked_at"] != "1970-01-01T00:02:00Z" || r["revoked_name"] != "cam3" {
				t.Errorf("a revoked key is not shown as revoked: %v", r)
			}
		}},
		{"approve_edge", map[string]any{"token": "tok", "fingerprint": "SHA256:p1", "name": "Cam9", "labels": map[string]any{"role": "cam"}}, nil, "", func(t *testing.T, a *adminFleet, out map[string]any) {
			if len(a.approved) != 1 || a.approved[0] != "SHA256:p1 cam9" || out["name"] != "cam9" {
				t.Fatalf("approved %v, out %v", a.approved, out)
			}
		}},
		{"approve_edge", map[string]any{"token": "tok", "fingerprint": "SHA256:p1", "name": "bad name"}, nil, "not valid", nil},
		{"create_enrollment_token", map[string]any{"token": "tok", "name": "cam3"}, nil, "", func(t *testing.T, a *adminFleet, out map[string]any) {
			if a.ttl != 15*time.Minute || !strings.HasPrefix(out["command"].(string), "mcp-ssh-edge enroll 'mcpssh-enroll-v1:") {
				t.Fatalf("ttl %s, out %v", a.ttl, out)
			}
		}},
		{"create_enrollment_token", map[string]any{"token": "tok", "name": "cam3", "ttl_seconds": 86401}, nil, "out of range", nil},
	}
	for _, tc := range tests {
		t.Run(tc.tool+" "+tc.wantErr, func(t *testing.T) {
			a := &adminFleet{fakeFleet: &fakeFleet{}, err: tc.err}
			lg, readAudit := auditLog(t)
			cfg := baseConfig()
			cfg.ProvisionToken, cfg.Audit = "tok", lg
			h := newHarness(t, a, cfg)
			res := h.call(tc.tool, tc.args)
			if raw := auditRaw(t, readAudit); strings.Contains(raw, `"tok"`) || strings.Contains(raw, "xyz") {
				t.Fatalf("audit leaks the token or the enrolment secret: %s", raw)
			}
			if tc.wantErr != "" {
				if !res.IsError || !strings.Contains(text(res), tc.wantErr) {
					t.Fatalf("isError=%v %q, want %q", res.IsError, text(res), tc.wantErr)
				}
				return
			}
			var out map[string]any
			structured(t, res, &out)
			if res.IsError {
				t.Fatalf("error: %s", text(res))
			}
			if tc.check != nil {
				tc.check(t, a, out)
			}
		})
	}
}

func TestKeyToolAnnotations(t *testing.T) {
	h := newHarness(t, &adminFleet{fakeFleet: &fakeFleet{}}, baseConfig())
	want := map[string][4]bool{
		"revoke_edge_key":         {false, true, true, false},
		"list_pending_edges":      {true, false, true, false},
		"approve_edge":            {false, false, true, false},
		"create_enrollment_token": {false, false, false, false},
	}
	for name, ann := range want {
		a := h.tools[name].Annotations
		if a.ReadOnlyHint == nil || a.DestructiveHint == nil || a.IdempotentHint == nil || a.OpenWorldHint == nil {
			t.Fatalf("%s: annotations not all set", name)
		}
		if got := [4]bool{*a.ReadOnlyHint, *a.DestructiveHint, *a.IdempotentHint, *a.OpenWorldHint}; got != ann {
			t.Errorf("%s annotations = %v, want %v", name, got, ann)
		}
	}
}

// TestWrongTokensRefusedQuickly: after a few wrong tokens a client is refused without any
// comparison, even with the right token, until its window passes.
func TestWrongTokensRefusedQuickly(t *testing.T) {
	cfg := baseConfig()
	cfg.ProvisionToken = "the-right-token-123"
	h := newHarness(t, &adminFleet{fakeFleet: &fakeFleet{}}, cfg)
	for i := range 5 {
		if res := h.call("list_pending_edges", map[string]any{"token": "guess"}); !strings.Contains(text(res), "wrong provisioning token") {
			t.Fatalf("attempt %d: %q", i, text(res))
		}
	}
	start := time.Now()
	res := h.call("list_pending_edges", map[string]any{"token": "the-right-token-123"})
	if !res.IsError || !strings.Contains(text(res), "too many wrong provisioning tokens") {
		t.Fatalf("after 5 failures: %q", text(res))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusal took %s", d)
	}
}
