package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/approval"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/policy"
)

// ExplainInput is explain_policy's arguments.
type ExplainInput struct {
	Tool      string         `json:"tool" jsonschema:"the tool you would call, e.g. run_command"`
	Arguments map[string]any `json:"arguments,omitempty" jsonschema:"the arguments you would pass it (edge or job_id, argv or command, env, path, timeout_seconds); nothing is run"`
}

// ExplainOutput is explain_policy's result.
type ExplainOutput struct {
	Allowed       bool   `json:"allowed" jsonschema:"true when the gateway's policy would let the call run"`
	NeedsApproval bool   `json:"needs_approval" jsonschema:"true when the call would wait for a person to approve it"`
	Role          string `json:"role" jsonschema:"your client's role"`
	Rule          string `json:"rule" jsonschema:"the rule that decides, e.g. viewer rule 1 (edges env=prod); empty when none comes close"`
	Reason        string `json:"reason" jsonschema:"one line: why it is allowed or refused"`
}

func explainTool() mcp.Tool {
	return mcp.NewTool("explain_policy",
		mcp.WithDescription("Check, without running anything, whether the gateway's policy would let a call through, which rule decides, "+
			"and whether it would wait for a person's approval. Use it when a call was refused, or before a call you are unsure of; "+
			"pass the tool name and the exact arguments you would use."),
		hints("Explain the gateway's policy", true, false, true, false),
		mcp.WithInputSchema[ExplainInput](),
		mcp.WithOutputSchema[ExplainOutput](),
	)
}

func (h *handlers) explainPolicy(ctx context.Context, _ mcp.CallToolRequest, in ExplainInput) *mcp.CallToolResult {
	p := h.policy()
	who := h.caller(ctx, p)
	if in.Tool == "" || len(in.Tool) > 64 {
		return errResult("tool is required: the name of the tool you would call, e.g. run_command")
	}
	r := policy.Request{Tool: in.Tool}
	a, ref, err := h.askOf(in.Tool, in.Arguments)
	if err != nil {
		return errResult("arguments: " + err.Error())
	}
	if ref != "" {
		e, err := h.fleet.Edge(ref)
		if err == nil && !p.IsAllowAll() && !p.EdgeVisible(who.role, e.Labels()) {
			err = gateway.ErrUnknownEdge
		}
		if err != nil {
			return okResult(ExplainOutput{Role: who.role, Reason: edgeMessage(ref, err)})
		}
		c := &edgeCall{tool: in.Tool, edge: e, name: e.Name()}
		r = c.policyRequest(a)
	}
	d := p.Decide(who.role, r)
	out := ExplainOutput{Allowed: d.Allowed, NeedsApproval: d.NeedsApproval, Role: d.Role, Rule: d.Rule, Reason: d.Reason}
	if out.Reason == "" && d.Allowed {
		out.Reason = "allowed"
	}
	return okResult(out)
}

// askOf reads, from a proposed call's arguments, what the policy judges and the edge it
// addresses ("" for tools that address none).
func (h *handlers) askOf(tool string, args map[string]any) (ask, string, error) {
	var a ask
	str := func(k string) string { s, _ := args[k].(string); return s }
	ref := str("edge")
	if id := str("job_id"); id != "" {
		edge, _, err := parseJobID(id)
		if err != nil {
			return a, "", err
		}
		ref = edge
	}
	a.command, a.cwd, a.path = str("command"), str("cwd"), str("path")
	if v, ok := args["argv"].([]any); ok {
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return a, "", errors.New("argv must be an array of strings")
			}
			a.argv = append(a.argv, s)
		}
	}
	if v, ok := args["env"].(map[string]any); ok {
		a.env = map[string]string{}
		for k := range v {
			a.env[k] = ""
		}
	}
	switch tool {
	case "run_command", "run_on_edges":
		a.timeout = h.cfg.ExecTimeout
	case "start_command":
		a.timeout = h.cfg.ExecTimeoutMax
	}
	if n, ok := args["timeout_seconds"].(float64); ok && n > 0 {
		a.timeout = time.Duration(n) * time.Second
	}
	return a, ref, nil
}

// ApproveActionInput is approve_action's arguments.
type ApproveActionInput struct {
	Token    string `json:"token" jsonschema:"the gateway's PROVISION_TOKEN (from the operator)"`
	ActionID string `json:"action_id" jsonschema:"the id of the waiting call, from list_pending_actions"`
	Approve  bool   `json:"approve" jsonschema:"true lets the call run; false denies it"`
	Reason   string `json:"reason,omitempty" jsonschema:"optional words for the caller, e.g. why it was denied"`
}

// PendingAction is one call waiting for a person.
type PendingAction struct {
	ActionID string `json:"action_id" jsonschema:"pass it to approve_action"`
	Tool     string `json:"tool" jsonschema:"the tool that waits"`
	Edge     string `json:"edge" jsonschema:"the edge it addresses"`
	Actor    string `json:"actor" jsonschema:"the client that made the call"`
	Role     string `json:"role" jsonschema:"that client's role"`
	Summary  string `json:"summary" jsonschema:"what the call would do (argv, command or path)"`
	Created  string `json:"created" jsonschema:"when it started waiting (RFC 3339 UTC)"`
	Expires  string `json:"expires" jsonschema:"when silence becomes no (RFC 3339 UTC)"`
}

// PendingActionsInput is list_pending_actions' arguments.
type PendingActionsInput struct {
	Token string `json:"token" jsonschema:"the gateway's PROVISION_TOKEN (from the operator)"`
}

// PendingActionsOutput is list_pending_actions' result.
type PendingActionsOutput struct {
	Actions []PendingAction `json:"actions" jsonschema:"calls waiting for a person, oldest first"`
}

func approveActionTool() mcp.Tool {
	return mcp.NewTool("approve_action",
		mcp.WithDescription("Approve or deny a call that waits for a person under the gateway's policy (list_pending_actions shows them). "+
			"Only for an operator's own client with the PROVISION_TOKEN: a client cannot approve its own calls. "+
			"Operators without an MCP client use `mcp-ssh-gateway actions approve ID` on the gateway host."),
		hints("Approve or deny a waiting call", false, true, false, false),
		mcp.WithInputSchema[ApproveActionInput](),
		mcp.WithOutputSchema[PendingAction](),
	)
}

func pendingActionsTool() mcp.Tool {
	return mcp.NewTool("list_pending_actions",
		mcp.WithDescription("List the calls that wait for a person's approval under the gateway's policy, with what each would do. "+
			"Needs the PROVISION_TOKEN; decide one with approve_action."),
		hints("List calls waiting for approval", true, false, true, false),
		mcp.WithInputSchema[PendingActionsInput](),
		mcp.WithOutputSchema[PendingActionsOutput](),
	)
}

// addPolicyTools registers explain_policy, and the approval tools when approvals are kept.
func (h *handlers) addPolicyTools(s *server.MCPServer) {
	s.AddTool(explainTool(), typed(h.explainPolicy))
	if h.cfg.Access.Approvals == nil {
		return
	}
	s.AddTool(approveActionTool(), typed(h.approveAction))
	s.AddTool(pendingActionsTool(), typed(h.listPendingActions))
}

func pendingOf(a approval.Action) PendingAction {
	return PendingAction{ActionID: a.ID, Tool: a.Tool, Edge: a.Edge, Actor: a.Actor, Role: a.Role, Summary: a.Summary,
		Created: rfc3339(a.Created), Expires: rfc3339(a.Expires)}
}

func (h *handlers) listPendingActions(ctx context.Context, _ mcp.CallToolRequest, in PendingActionsInput) *mcp.CallToolResult {
	if msg, ok := h.checkToken(ctx, "list_pending_actions", in.Token); !ok {
		return errResult(msg)
	}
	list, err := h.cfg.Access.Approvals.List()
	if err != nil {
		return errResult(fmt.Sprintf("cannot list the waiting calls: %v", err))
	}
	out := PendingActionsOutput{Actions: []PendingAction{}}
	for _, a := range list {
		out.Actions = append(out.Actions, pendingOf(a))
	}
	return okResult(out)
}

func (h *handlers) approveAction(ctx context.Context, _ mcp.CallToolRequest, in ApproveActionInput) *mcp.CallToolResult {
	const tool = "approve_action"
	if msg, ok := h.checkToken(ctx, tool, in.Token); !ok {
		return errResult(msg)
	}
	actor := h.actor(ctx)
	list, err := h.cfg.Access.Approvals.List()
	if err != nil {
		return errResult(fmt.Sprintf("cannot read the waiting calls: %v", err))
	}
	for _, a := range list {
		if a.ID == strings.ToLower(strings.TrimSpace(in.ActionID)) && a.Actor == actor {
			return errResult(fmt.Sprintf("action %s is a call of this same client (%s): a person must decide it from another client or with `mcp-ssh-gateway actions`", oneLine(in.ActionID), actor))
		}
	}
	a, err := h.cfg.Access.Approvals.Decide(in.ActionID, in.Approve, "mcp:"+actor, in.Reason)
	if err != nil {
		return errResult(oneLine(err.Error()) + ": list_pending_actions shows what waits")
	}
	outcome := "denied"
	if in.Approve {
		outcome = "approved"
	}
	h.cfg.Audit.Write(audit.Event{Event: "outcome", RequestID: newRequestID(), Actor: actor, Tool: tool, Edge: a.Edge,
		Path: a.ID, Outcome: outcome, Approver: "mcp:" + actor})
	return okResult(pendingOf(a))
}
