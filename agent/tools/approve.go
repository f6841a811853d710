package tools

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/approval"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
)

// approvalInput names the elicitation that asks a person to approve a call.
const approvalInput = "approval"

// approvalHeartbeat is how often a call waiting for a person says so (progress keeps the
// client's request timeout from running out).
const approvalHeartbeat = 5 * time.Second

// approval holds a call the policy marks for a person's approval. A client that declares
// elicitation is asked (the user answers, not the model): the call returns an input request
// and resumes when the client retries with the answer. Any other client waits, with progress,
// for `mcp-ssh-gateway actions approve|deny ID` or approve_action. Silence is no. The
// decision and who made it are audited; a nil result means approved.
func (c *edgeCall) approval(ctx context.Context, req mcp.CallToolRequest, a ask, ev audit.Event) *mcp.CallToolResult {
	store := c.h.cfg.Access.Approvals
	if store == nil {
		return c.refuse(a, ev, fmt.Sprintf("role %s: %s on %s needs a person's approval, and this gateway keeps no approvals", c.who.role, c.tool, c.name))
	}
	summary := approval.Summarize(c.tool, req.GetArguments())
	if id := req.Params.RequestState; id != "" {
		return c.answered(ctx, req, id, summary, a, ev)
	}
	act, err := store.Submit(approval.Action{Actor: c.who.actor, Role: c.who.role, Tool: c.tool, Edge: c.name,
		Summary: summary, RequestID: c.id, Expires: time.Now().Add(c.pol.ApprovalTimeout())})
	if err != nil {
		return c.refuse(a, ev, fmt.Sprintf("role %s: %s on %s needs a person's approval: %v", c.who.role, c.tool, c.name, err))
	}
	c.h.cfg.Audit.Write(audit.Event{Event: "approval_requested", RequestID: c.id, Actor: c.who.actor, Tool: c.tool,
		Edge: c.name, Fingerprint: c.fp, Path: act.ID})
	if elicits(ctx) && c.tool != "run_on_edges" { // a fan-out cannot return one input request per edge: its edges wait
		return server.NewInputRequestBuilder(act.ID).Elicit(approvalInput, mcp.ElicitationParams{
			Message: fmt.Sprintf("Approve %s on %s for %s? %s (action %s; it expires in %s)",
				c.tool, c.name, c.who.actor, summary, act.ID, time.Until(act.Expires).Round(time.Second)),
			RequestedSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"approve": map[string]any{"type": "boolean", "description": "true to let the call run"},
				},
				"required": []string{"approve"},
			},
		}).ToolResult()
	}
	return c.await(ctx, req, act.ID, a, ev)
}

// answered resumes a call whose client came back with the person's answer to the
// elicitation for action id; the retried call must be the one the person was shown.
func (c *edgeCall) answered(ctx context.Context, req mcp.CallToolRequest, id, summary string, a ask, ev audit.Event) *mcp.CallToolResult {
	store := c.h.cfg.Access.Approvals
	approve := false
	if r := server.ElicitationResponse(req.Params.InputResponses, approvalInput); r != nil && r.Action == mcp.ElicitationResponseActionAccept {
		if m, ok := r.Content.(map[string]any); ok {
			approve, _ = m["approve"].(bool)
		}
	}
	act, err := store.Get(id)
	if err == nil && !elicits(ctx) {
		// Only a client the gateway asks (it declared elicitation) may come back with an answer.
		err = errors.New("this client declared no elicitation, so it was asked nothing")
	}
	if err == nil && (act.Tool != c.tool || act.Edge != c.name || act.Actor != c.who.actor || act.Summary != summary) {
		err = errors.New("the retried call is not the one the person was asked about")
	}
	if err == nil {
		// Someone may have decided meanwhile (the CLI, approve_action): that decision stands.
		if _, err = store.Decide(id, approve, "elicitation:"+c.who.actor, ""); errors.Is(err, approval.ErrDecided) {
			err = nil
		}
	}
	if err != nil {
		return c.refuse(a, ev, fmt.Sprintf("role %s: the approval of %s on %s did not hold (%v): call the tool again", c.who.role, c.tool, c.name, err))
	}
	return c.await(ctx, req, id, a, ev)
}

// await waits for the decision on action id, sending progress while it waits.
func (c *edgeCall) await(ctx context.Context, req mcp.CallToolRequest, id string, a ask, ev audit.Event) *mcp.CallToolResult {
	waitCtx, stop := context.WithCancel(ctx)
	defer stop()
	if req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil {
		pr := startProgress(waitCtx, req.Params.Meta.ProgressToken, c.h.cfg.Log)
		defer pr.stop()
		go func() {
			t := time.NewTicker(approvalHeartbeat)
			defer t.Stop()
			msg := fmt.Sprintf("waiting for a person to approve action %s: mcp-ssh-gateway actions approve %s (or deny)\n", id, id)
			pr.add([]byte(msg))
			for {
				select {
				case <-waitCtx.Done():
					return
				case <-t.C:
					pr.add([]byte(msg))
				}
			}
		}()
	}
	d, err := c.h.cfg.Access.Approvals.Wait(waitCtx, id)
	outcome := "denied"
	if d.Approved {
		outcome = "approved"
	}
	c.h.cfg.Audit.Write(audit.Event{Event: "approval", RequestID: c.id, Actor: c.who.actor, Tool: c.tool, Edge: c.name,
		Fingerprint: c.fp, Path: id, Outcome: outcome, Approver: d.Approver, Error: d.Reason})
	switch {
	case err != nil:
		return c.refuse(a, ev, fmt.Sprintf("%s on %s was not approved: %s", c.tool, c.name, oneLine(cmp.Or(d.Reason, err.Error()))))
	case !d.Approved && d.Approver == "":
		return c.refuse(a, ev, fmt.Sprintf("%s on %s was not approved: %s; ask the operator, then call it again", c.tool, c.name, oneLine(d.Reason)))
	case !d.Approved:
		msg := fmt.Sprintf("%s on %s was denied by %s", c.tool, c.name, d.Approver)
		if d.Reason != "" {
			msg += ": " + oneLine(d.Reason)
		}
		return c.refuse(a, ev, msg)
	}
	return nil
}

// refuse ends the call before its RPC: audited as refused, answered with msg.
func (c *edgeCall) refuse(a ask, ev audit.Event, msg string) *mcp.CallToolResult {
	c.write("intent", a.event(ev))
	c.end("refused", errors.New(msg), audit.Event{})
	return errResult(msg)
}

// elicits reports whether the client calling through ctx declared elicitation.
func elicits(ctx context.Context) bool {
	if info := server.RequestProtocolInfoFromContext(ctx); info != nil && info.ClientCapabilities != nil {
		return info.ClientCapabilities.Elicitation != nil
	}
	if s, ok := server.ClientSessionFromContext(ctx).(server.SessionWithClientInfo); ok {
		return s.GetClientCapabilities().Elicitation != nil
	}
	return false
}
