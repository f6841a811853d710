package tools

import (
	"context"
	"fmt"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// maxKeyLine bounds a public key line: an RSA 16384-bit key is under 3 KiB.
const maxKeyLine = 16 << 10

// msgProvisioningDisabled answers key-changing tools when no PROVISION_TOKEN is set.
const msgProvisioningDisabled = "provisioning over MCP is disabled: set PROVISION_TOKEN, or use `mcp-ssh-gateway keys add` on the gateway host"

// RegisterKeyInput is register_edge_key's arguments.
type RegisterKeyInput struct {
	Token     string            `json:"token" jsonschema:"the gateway's provisioning token (PROVISION_TOKEN), as given to you by the operator"`
	PublicKey string            `json:"public_key" jsonschema:"the edge's public key: one authorized_keys line as printed by mcp-ssh-edge pubkey; options are stripped"`
	Name      string            `json:"name,omitempty" jsonschema:"name to bind to the key: lower-case letters, digits, '.', '_', '-', at most 63; omit to let the edge's own name be used when it connects"`
	Labels    map[string]string `json:"labels,omitempty" jsonschema:"labels to bind to the key (key to value), e.g. {\"role\": \"camera\"}; these are the trusted labels"`
}

// RegisterKeyOutput is register_edge_key's result.
type RegisterKeyOutput struct {
	Fingerprint string            `json:"fingerprint" jsonschema:"SHA256 fingerprint of the registered key"`
	Name        string            `json:"name" jsonschema:"name bound to the key; empty when none is bound yet"`
	Labels      map[string]string `json:"labels" jsonschema:"labels bound to the key"`
	Added       bool              `json:"added" jsonschema:"true when the key was added now, false when it was already authorized"`
}

func registerKeyTool() mcp.Tool {
	return mcp.NewTool("register_edge_key",
		mcp.WithDescription("Authorize an edge device's SSH public key so the device can connect, optionally binding a name and trusted labels. "+
			"Needs the operator's provisioning token; without one, ask the operator to run `mcp-ssh-gateway keys add` on the gateway host. "+
			"Use get_agent_pubkey for the configuration the device needs, and get_status to see it once connected."+tokenLockoutNote),
		hints("Register an edge key", false, false, true, false),
		mcp.WithInputSchema[RegisterKeyInput](),
		mcp.WithOutputSchema[RegisterKeyOutput](),
	)
}

func (h *handlers) registerEdgeKey(ctx context.Context, _ mcp.CallToolRequest, in RegisterKeyInput) *mcp.CallToolResult {
	const tool = "register_edge_key"
	if msg, ok := h.checkToken(ctx, tool, in.Token); !ok {
		return errResult(msg)
	}
	pub, err := parsePublicKey(in.PublicKey)
	if err != nil {
		return errResult(err.Error())
	}
	name := strings.ToLower(strings.TrimSpace(in.Name))
	if name != "" && !protocol.ValidName(name) {
		return errResult(fmt.Sprintf("name %q is not valid: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63", oneLine(in.Name)))
	}
	if err := protocol.ValidateLabels(in.Labels); err != nil {
		return errResult("labels: " + err.Error())
	}
	fp := keys.Fingerprint(pub)
	res, err := h.fleet.RegisterKey(keys.AuthorizedLine(pub), name, nonNilMap(in.Labels))
	if err != nil {
		h.cfg.Audit.Write(audit.Event{Event: "outcome", RequestID: newRequestID(), Actor: h.actor(ctx), Tool: tool,
			Fingerprint: fp, Edge: name, Outcome: "error", Error: err.Error()})
		return errResult(fmt.Sprintf("registering key %s failed: %s", fp, oneLine(err.Error())))
	}
	// The Fleet writes the key_added line itself; this one records who asked.
	ev := audit.Event{Event: "outcome", RequestID: newRequestID(), Actor: h.actor(ctx), Tool: tool,
		Fingerprint: res.Fingerprint, Edge: res.Name, Outcome: "ok"}
	if !res.Added {
		ev.Error = "key already authorized"
	}
	h.cfg.Audit.Write(ev)
	return okResult(RegisterKeyOutput{
		Fingerprint: res.Fingerprint,
		Name:        res.Name,
		Labels:      nonNilMap(res.Labels),
		Added:       res.Added,
	})
}

// parsePublicKey accepts exactly one authorized_keys line (options allowed, then stripped).
// Its errors never echo the input: what was given may be a private key pasted by mistake.
func parsePublicKey(line string) (ssh.PublicKey, error) {
	line = strings.TrimSpace(line)
	const hint = "; pass one line as printed by `mcp-ssh-edge pubkey` on the device (e.g. ssh-ed25519 AAAA... comment)"
	switch {
	case line == "":
		return nil, fmt.Errorf("public_key is empty%s", hint)
	case len(line) > maxKeyLine:
		return nil, fmt.Errorf("public_key is too long for a public key%s", hint)
	case strings.ContainsAny(line, "\r\n"):
		return nil, fmt.Errorf("public_key must be a single line, not a file or a private key%s", hint)
	}
	pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("public_key is not an SSH public key%s", hint)
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return nil, fmt.Errorf("public_key is a certificate, not a plain public key%s", hint)
	}
	return pub, nil
}
