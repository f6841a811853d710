package tools

import (
	"context"
	"crypto/subtle"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/approval"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/policy"
)

// Access is the gateway's policy as the tools apply it: who calls, what the caller's role
// may see and do, and where calls that wait for a person are kept.
type Access struct {
	Policy    func() *policy.Policy // the policy in force (it reloads); nil: every client is admin, everything allowed
	HTTPToken string                // MCP_HTTP_TOKEN: the HTTP client "http", role admin
	Approvals *approval.Store       // pending approvals; nil: calls that need one are refused
}

// alwaysVisible are the tools every role sees: explain_policy only tells a caller what its own
// role may do.
var alwaysVisible = map[string]bool{"explain_policy": true}

type bearerKey struct{}

// WithBearer marks ctx as an HTTP request that presented token; the HTTP transport's context
// function sets it. A ctx without one is the stdio client.
func WithBearer(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, bearerKey{}, token)
}

// caller is who makes a call: the audit log's actor and the policy's role ("" = no role: the
// caller may do nothing).
type caller struct {
	actor string
	role  string
}

// policy is the policy in force.
func (h *handlers) policy() *policy.Policy {
	if h.cfg.Access.Policy == nil {
		return policy.AllowAll()
	}
	if p := h.cfg.Access.Policy(); p != nil {
		return p
	}
	return policy.AllowAll()
}

// caller tells who calls through ctx, under p.
func (h *handlers) caller(ctx context.Context, p *policy.Policy) caller {
	token, isHTTP := ctx.Value(bearerKey{}).(string)
	if !isHTTP {
		return caller{actor: h.cfg.Actor, role: p.StdioRole()}
	}
	if h.cfg.Access.HTTPToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(h.cfg.Access.HTTPToken)) == 1 {
		return caller{actor: "http", role: "admin"}
	}
	if name, role, ok := p.HTTPClient(token); ok {
		return caller{actor: "http:" + name, role: role}
	}
	return caller{actor: "http:unknown"}
}

// ClientKnown reports whether an HTTP bearer token names a client (MCP_HTTP_TOKEN, or one of
// the policy's clients): the HTTP transport answers 401 to any other.
func (a Access) ClientKnown(token string) bool {
	if token == "" {
		return false
	}
	if a.HTTPToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(a.HTTPToken)) == 1 {
		return true
	}
	if a.Policy == nil {
		return false
	}
	p := a.Policy()
	if p == nil {
		return false
	}
	_, _, ok := p.HTTPClient(token)
	return ok
}

// actor is the audit log's name for the client calling through ctx.
func (h *handlers) actor(ctx context.Context) string { return h.caller(ctx, h.policy()).actor }

// visibleTools is the server's tool filter: a client sees, and may call, only the tools its
// role reaches.
func (h *handlers) visibleTools(ctx context.Context, tools []mcp.Tool) []mcp.Tool {
	p := h.policy()
	role := h.caller(ctx, p).role
	out := make([]mcp.Tool, 0, len(tools))
	for _, t := range tools {
		if alwaysVisible[t.Name] || p.ToolVisible(role, t.Name) {
			out = append(out, t)
		}
	}
	return out
}

// edgeFilter returns whether an edge with these gateway-bound labels is visible to the client
// calling through ctx (get_status, find_edges, run_on_edges, resources).
func (h *handlers) edgeFilter(ctx context.Context) func(labels map[string]string) bool {
	p := h.policy()
	if p.IsAllowAll() {
		return everyEdge(ctx)
	}
	role := h.caller(ctx, p).role
	return func(labels map[string]string) bool { return p.EdgeVisible(role, labels) }
}

// visibleEdges keeps the edges sees accepts (all of them, without a policy).
func visibleEdges(edges []gateway.EdgeStatus, sees func(labels map[string]string) bool) []gateway.EdgeStatus {
	out := edges[:0:0]
	for _, e := range edges {
		if sees(e.Labels) {
			out = append(out, e)
		}
	}
	return out
}
