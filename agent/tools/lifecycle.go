package tools

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// KeyAdmin is the key lifecycle beyond registration; *gateway.Gateway implements it. The
// four tools of this file are registered only when the Fleet has it.
type KeyAdmin interface {
	RevokeKey(ref string) (gateway.KeyRevoked, error)
	PendingEdges() ([]gateway.PendingEdge, error)
	ApproveEdge(fp, name string, labels map[string]string) (gateway.KeyAdded, error)
	CreateEnrollment(name string, labels map[string]string, ttl time.Duration) (gateway.Enrollment, error)
}

// defaultEnrollTTL is create_enrollment_token's ttl_seconds when none is given.
const defaultEnrollTTL = 15 * time.Minute

func addKeyAdminTools(s *server.MCPServer, h *handlers, ka KeyAdmin) {
	k := &keyAdmin{h: h, admin: ka}
	s.AddTool(revokeTool(), typed(k.revoke))
	s.AddTool(pendingTool(), typed(k.listPending))
	s.AddTool(approveTool(), typed(k.approve))
	s.AddTool(enrollTool(), typed(k.createEnrollment))
}

type keyAdmin struct {
	h     *handlers
	admin KeyAdmin
}

// outcome writes the audit line that records who asked for a key change and how it ended.
func (k *keyAdmin) outcome(ctx context.Context, tool, edge, fp string, err error) {
	ev := audit.Event{Event: "outcome", RequestID: newRequestID(), Actor: k.h.actor(ctx), Tool: tool, Edge: edge, Fingerprint: fp, Outcome: "ok"}
	if err != nil {
		ev.Outcome, ev.Error = "error", err.Error()
	}
	k.h.cfg.Audit.Write(ev)
}

// RevokeInput is revoke_edge_key's arguments.
type RevokeInput struct {
	Token       string `json:"token" jsonschema:"the gateway's provisioning token (PROVISION_TOKEN)"`
	Edge        string `json:"edge,omitempty" jsonschema:"the edge to revoke: its bound name or SHA256:… fingerprint (give this or fingerprint)"`
	Fingerprint string `json:"fingerprint,omitempty" jsonschema:"SHA256:… fingerprint of the key to revoke (give this or edge)"`
}

// RevokeOutput is revoke_edge_key's result.
type RevokeOutput struct {
	Fingerprint string `json:"fingerprint" jsonschema:"fingerprint of the revoked key"`
	Name        string `json:"name" jsonschema:"name that was bound to it; empty when none"`
	Revoked     bool   `json:"revoked" jsonschema:"true: the key was removed from authorized_keys and its tunnel, if any, closed"`
}

func revokeTool() mcp.Tool {
	return mcp.NewTool("revoke_edge_key",
		mcp.WithDescription("Remove an edge's key from the gateway's authorized keys and drop its live connection at once; the device can no longer connect. "+
			"Use it for a lost, retired or compromised device. Needs the provisioning token. To look at edges first use get_status; to admit a key use register_edge_key or approve_edge."+tokenLockoutNote),
		hints("Revoke an edge key", false, true, true, false),
		mcp.WithInputSchema[RevokeInput](),
		mcp.WithOutputSchema[RevokeOutput](),
	)
}

func (k *keyAdmin) revoke(ctx context.Context, _ mcp.CallToolRequest, in RevokeInput) *mcp.CallToolResult {
	const tool = "revoke_edge_key"
	if msg, ok := k.h.checkToken(ctx, tool, in.Token); !ok {
		return errResult(msg)
	}
	ref := strings.TrimSpace(in.Edge)
	fp := strings.TrimSpace(in.Fingerprint)
	switch {
	case ref == "" && fp == "":
		return errResult("give edge (name or fingerprint) or fingerprint: see get_status for both")
	case ref != "" && fp != "":
		return errResult("give edge or fingerprint, not both")
	case fp != "":
		if !strings.HasPrefix(fp, "SHA256:") {
			return errResult("fingerprint must look like SHA256:… as get_status shows it")
		}
		ref = fp
	}
	r, err := k.admin.RevokeKey(ref)
	k.outcome(ctx, tool, r.Name, r.Fingerprint, err)
	if err != nil {
		return errResult(oneLine(err.Error()))
	}
	return okResult(RevokeOutput{Fingerprint: r.Fingerprint, Name: r.Name, Revoked: true})
}

// PendingInput is list_pending_edges' arguments.
type PendingInput struct {
	Token string `json:"token" jsonschema:"the gateway's provisioning token (PROVISION_TOKEN)"`
}

// PendingItem is one unknown key that tried to connect.
type PendingItem struct {
	Fingerprint   string `json:"fingerprint" jsonschema:"SHA256:… fingerprint of the key; pass it to approve_edge"`
	RequestedName string `json:"requested_name" jsonschema:"the name the device asked for: unverified, shown only as a hint"`
	RemoteAddr    string `json:"remote_addr" jsonschema:"address it last connected from"`
	FirstAttempt  string `json:"first_attempt" jsonschema:"RFC 3339 UTC time of its first attempt"`
	LastAttempt   string `json:"last_attempt" jsonschema:"RFC 3339 UTC time of its last attempt"`
	Attempts      int    `json:"attempts" jsonschema:"attempts recorded (rate-limited, so a lower bound)"`
	RevokedAt     string `json:"revoked_at" jsonschema:"when this key was revoked (RFC 3339 UTC), if it was authorized once: not a new device; empty otherwise"`
	RevokedName   string `json:"revoked_name" jsonschema:"the name the key was bound to before it was revoked; empty otherwise"`
}

// PendingOutput is list_pending_edges' result.
type PendingOutput struct {
	Pending []PendingItem `json:"pending" jsonschema:"unknown keys that proved they hold their private key, oldest first"`
}

func pendingTool() mcp.Tool {
	return mcp.NewTool("list_pending_edges",
		mcp.WithDescription("List devices whose key is not authorized but that tried to connect (they proved they hold their private key). "+
			"Nothing here is trusted: confirm with the operator which fingerprint is the expected device, then admit it with approve_edge. Needs the provisioning token."+tokenLockoutNote),
		hints("List pending edges", true, false, true, false),
		mcp.WithInputSchema[PendingInput](),
		mcp.WithOutputSchema[PendingOutput](),
	)
}

func (k *keyAdmin) listPending(ctx context.Context, _ mcp.CallToolRequest, in PendingInput) *mcp.CallToolResult {
	if msg, ok := k.h.checkToken(ctx, "list_pending_edges", in.Token); !ok {
		return errResult(msg)
	}
	ps, err := k.admin.PendingEdges()
	if err != nil {
		return errResult("reading the pending keys failed: " + oneLine(err.Error()))
	}
	out := PendingOutput{Pending: make([]PendingItem, 0, len(ps))}
	for _, p := range ps {
		item := PendingItem{Fingerprint: p.Fingerprint, RequestedName: p.RequestedName, RemoteAddr: p.RemoteAddr,
			FirstAttempt: rfc3339(p.FirstAttempt), LastAttempt: rfc3339(p.LastAttempt), Attempts: p.Attempts}
		if p.Revoked != nil {
			item.RevokedAt, item.RevokedName = rfc3339(p.Revoked.RevokedAt), p.Revoked.Name
		}
		out.Pending = append(out.Pending, item)
	}
	return okResult(out)
}

// ApproveInput is approve_edge's arguments.
type ApproveInput struct {
	Token       string            `json:"token" jsonschema:"the gateway's provisioning token (PROVISION_TOKEN)"`
	Fingerprint string            `json:"fingerprint" jsonschema:"SHA256:… fingerprint of a pending key, from list_pending_edges"`
	Name        string            `json:"name" jsonschema:"name to bind to the key: lower-case letters, digits, '.', '_', '-', at most 63"`
	Labels      map[string]string `json:"labels,omitempty" jsonschema:"trusted labels to bind (key to value), e.g. {\"role\": \"camera\"}"`
}

func approveTool() mcp.Tool {
	return mcp.NewTool("approve_edge",
		mcp.WithDescription("Admit a pending device (from list_pending_edges) by its key fingerprint, binding a name and trusted labels; it connects on its next retry. "+
			"Approve only a fingerprint the operator confirmed. Needs the provisioning token. For a device you have the public key of, register_edge_key fits better."+tokenLockoutNote),
		hints("Approve a pending edge", false, false, true, false),
		mcp.WithInputSchema[ApproveInput](),
		mcp.WithOutputSchema[RegisterKeyOutput](),
	)
}

func (k *keyAdmin) approve(ctx context.Context, _ mcp.CallToolRequest, in ApproveInput) *mcp.CallToolResult {
	const tool = "approve_edge"
	if msg, ok := k.h.checkToken(ctx, tool, in.Token); !ok {
		return errResult(msg)
	}
	name := strings.ToLower(strings.TrimSpace(in.Name))
	if !protocol.ValidName(name) {
		return errResult(fmt.Sprintf("name %q is not valid: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63", oneLine(in.Name)))
	}
	if err := protocol.ValidateLabels(in.Labels); err != nil {
		return errResult("labels: " + err.Error())
	}
	res, err := k.admin.ApproveEdge(strings.TrimSpace(in.Fingerprint), name, nonNilMap(in.Labels))
	if err != nil {
		k.outcome(ctx, tool, name, in.Fingerprint, err)
		return errResult(oneLine(err.Error()))
	}
	k.h.cfg.Audit.Write(audit.Event{Event: "key_approved", Actor: k.h.actor(ctx), Tool: tool, Edge: res.Name, Fingerprint: res.Fingerprint, Outcome: "ok"})
	return okResult(RegisterKeyOutput{Fingerprint: res.Fingerprint, Name: res.Name, Labels: nonNilMap(res.Labels), Added: res.Added})
}

// EnrollInput is create_enrollment_token's arguments.
type EnrollInput struct {
	Token      string            `json:"token" jsonschema:"the gateway's provisioning token (PROVISION_TOKEN)"`
	Name       string            `json:"name" jsonschema:"name the enrolled device gets: lower-case letters, digits, '.', '_', '-', at most 63"`
	TTLSeconds int               `json:"ttl_seconds,omitempty" jsonschema:"how long the enrolment string works, in seconds (default 900, at most 86400)"`
	Labels     map[string]string `json:"labels,omitempty" jsonschema:"trusted labels to bind to the device (key to value)"`
}

// EnrollOutput is create_enrollment_token's result.
type EnrollOutput struct {
	Enrollment         string            `json:"enrollment" jsonschema:"the one-time enrolment string; give it to the device's owner (it is a secret until used)"`
	Command            string            `json:"command" jsonschema:"the command to run on the device"`
	Name               string            `json:"name" jsonschema:"name the device will get"`
	Labels             map[string]string `json:"labels" jsonschema:"labels the device will get"`
	Gateway            string            `json:"gateway" jsonschema:"the host:port the device will dial (PUBLIC_ADDR)"`
	HostKeyFingerprint string            `json:"host_key_fingerprint" jsonschema:"the gateway host key the device will pin"`
	ExpiresAt          string            `json:"expires_at" jsonschema:"RFC 3339 UTC time after which the string no longer works"`
}

func enrollTool() mcp.Tool {
	return mcp.NewTool("create_enrollment_token",
		mcp.WithDescription("Create a one-time enrolment string for a new device: running `mcp-ssh-edge enroll <string>` on it configures the edge, pins this gateway's host key, "+
			"and binds the name and labels to the device's own key (its private key never leaves it). The string works once and expires. Needs the provisioning token. "+
			"When you already have the device's public key, register_edge_key is simpler."+tokenLockoutNote),
		hints("Create an enrolment string", false, false, false, false),
		mcp.WithInputSchema[EnrollInput](),
		mcp.WithOutputSchema[EnrollOutput](),
	)
}

func (k *keyAdmin) createEnrollment(ctx context.Context, _ mcp.CallToolRequest, in EnrollInput) *mcp.CallToolResult {
	const tool = "create_enrollment_token"
	if msg, ok := k.h.checkToken(ctx, tool, in.Token); !ok {
		return errResult(msg)
	}
	ttl := defaultEnrollTTL
	if in.TTLSeconds != 0 {
		if in.TTLSeconds < 0 || in.TTLSeconds > int(gateway.MaxEnrollTTL/time.Second) {
			return errResult(fmt.Sprintf("ttl_seconds %d is out of range: give 1 to %d", in.TTLSeconds, int(gateway.MaxEnrollTTL/time.Second)))
		}
		ttl = time.Duration(in.TTLSeconds) * time.Second
	}
	if err := protocol.ValidateLabels(in.Labels); err != nil {
		return errResult("labels: " + err.Error())
	}
	en, err := k.admin.CreateEnrollment(in.Name, nonNilMap(in.Labels), ttl)
	k.outcome(ctx, tool, strings.ToLower(strings.TrimSpace(in.Name)), "", err)
	if err != nil {
		return errResult("creating the enrolment failed: " + oneLine(err.Error()))
	}
	return okResult(EnrollOutput{
		Enrollment: en.String, Command: "mcp-ssh-edge enroll '" + en.String + "'",
		Name: en.Name, Labels: nonNilMap(en.Labels), Gateway: en.Gateway, HostKeyFingerprint: en.HostKey,
		ExpiresAt: rfc3339(en.ExpiresAt),
	})
}
