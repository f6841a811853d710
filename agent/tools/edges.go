package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/policy"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// maxEdgeArg bounds the edge argument: a name (63) or a SHA256 fingerprint (50).
const maxEdgeArg = 128

// checkEdgeArg validates the edge argument's shape; existence is the Fleet's business.
func checkEdgeArg(edge string) error {
	if edge == "" {
		return errors.New("edge is required: call get_status and pass an edge's name")
	}
	if len(edge) > maxEdgeArg {
		return fmt.Errorf("edge is %d bytes long (max %d): pass an edge's name or SHA256 fingerprint", len(edge), maxEdgeArg)
	}
	return nil
}

// ask is what a call wants to do on an edge: what the policy judges and the audit line
// records (never stdin or content).
type ask struct {
	argv    []string
	command string
	cwd     string
	env     map[string]string
	path    string
	timeout time.Duration // 0 for calls that are not timed
}

// event is the intent line's view of a.
func (a ask) event(e audit.Event) audit.Event {
	e.Argv, e.Command, e.Cwd, e.Env = a.argv, a.command, a.cwd, envNames(a.env)
	if a.path != "" {
		e.Path = a.path
	}
	return e
}

// edgeCall is one tool call on one edge, from resolution to its outcome line: who calls, the
// handle the edge was resolved to (once), the request id that the audit lines share with the
// RPC (and so with the edge's rpc.log), and what the policy let it do.
type edgeCall struct {
	h      *handlers
	tool   string
	who    caller
	pol    *policy.Policy
	edge   gateway.Edge // nil when the edge did not resolve
	name   string       // the edge's name, or the argument when it did not resolve
	fp     string
	id     string
	within []string // path prefixes the deciding rule confines the call to; nil = any
}

// begin resolves ref, checks the call against the gateway's policy (waiting for a person when
// the policy says so) and writes the audit intent line. A non-nil result means the call ends
// here: the edge is unknown, or the call was refused or not approved (its outcome line is
// written too).
func (h *handlers) begin(ctx context.Context, req mcp.CallToolRequest, tool, ref string, a ask, ev audit.Event) (*edgeCall, *mcp.CallToolResult) {
	if err := checkEdgeArg(ref); err != nil {
		return nil, errResult(err.Error())
	}
	c, err := h.resolveCall(ctx, tool, ref)
	if err != nil {
		c.write("intent", a.event(ev))
		c.end(outcomeOf(err), err, audit.Event{})
		return nil, errResult(edgeMessage(ref, err))
	}
	if res := c.authorize(ctx, req, a, ev); res != nil {
		return nil, res
	}
	c.awaitTunnel(ctx)
	c.write("intent", a.event(ev))
	return c, nil
}

// open is begin for calls that only read what the edge keeps (a job's output, its list of
// jobs): resolved and checked, audited only when refused.
func (h *handlers) open(ctx context.Context, req mcp.CallToolRequest, tool, ref string, a ask) (*edgeCall, *mcp.CallToolResult) {
	if err := checkEdgeArg(ref); err != nil {
		return nil, errResult(err.Error())
	}
	c, err := h.resolveCall(ctx, tool, ref)
	if err != nil {
		return nil, errResult(edgeMessage(ref, err))
	}
	if res := c.authorize(ctx, req, a, audit.Event{}); res != nil {
		return nil, res
	}
	c.awaitTunnel(ctx)
	return c, nil
}

// A gateway that just started has not seen its edges yet: they come back on their own
// backoff (up to EDGE_BACKOFF_MAX). In the gateway's first reconnectWindow a call for a known
// edge that is not connected waits up to reconnectWait for it instead of failing at once,
// which matters most for a stdio gateway started by one client call.
const (
	reconnectWindow = time.Minute
	reconnectWait   = 15 * time.Second
)

// awaitTunnel waits, in the gateway's first minute, for the call's edge to reconnect; the RPC
// then reports whatever the state is.
func (c *edgeCall) awaitTunnel(ctx context.Context) {
	if c.edge.Connected() {
		return
	}
	started := c.h.fleet.Info().Started
	if started.IsZero() || time.Since(started) > reconnectWindow {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, reconnectWait)
	defer cancel()
	changes := c.h.fleet.WatchEdges(wctx)
	for !c.edge.Connected() {
		select {
		case <-wctx.Done():
			return
		case <-changes:
		}
	}
}

// resolveCall resolves ref once for the call; the returned call is usable for audit lines
// even when err is not nil. An edge the caller's role does not reach is unknown to it.
func (h *handlers) resolveCall(ctx context.Context, tool, ref string) (*edgeCall, error) {
	p := h.policy()
	c := &edgeCall{h: h, tool: tool, who: h.caller(ctx, p), pol: p, name: ref, id: newRequestID()}
	e, err := h.fleet.Edge(ref)
	if err != nil {
		return c, err
	}
	if !p.IsAllowAll() && !p.EdgeVisible(c.who.role, e.Labels()) {
		return c, fmt.Errorf("%w: %s", errNotReached, ref)
	}
	c.edge, c.name, c.fp = e, e.Name(), e.Fingerprint()
	return c, nil
}

// policyRequest is the call as the policy judges it.
func (c *edgeCall) policyRequest(a ask) policy.Request {
	return policy.Request{Tool: c.tool, Edge: c.name, EdgeLabels: c.edge.Labels(), Argv: a.argv, Command: a.command,
		EnvNames: envNames(a.env), Path: a.path, TimeoutSeconds: int((a.timeout + time.Second - 1) / time.Second)}
}

// authorize applies the gateway's policy; a non-nil result is its refusal (audited), or the
// request to the client for a person's approval.
func (c *edgeCall) authorize(ctx context.Context, req mcp.CallToolRequest, a ask, ev audit.Event) *mcp.CallToolResult {
	if c.pol.IsAllowAll() {
		return nil
	}
	d := c.pol.Decide(c.who.role, c.policyRequest(a))
	if !d.Allowed {
		return c.refuse(a, ev, d.Reason+": explain_policy shows what this client may do")
	}
	c.within = d.Paths
	if d.NeedsApproval {
		return c.approval(ctx, req, a, ev)
	}
	return nil
}

// write writes one audit line of the call.
func (c *edgeCall) write(event string, e audit.Event) {
	e.Event, e.RequestID, e.Actor, e.Tool = event, c.id, c.who.actor, c.tool
	e.Edge, e.Fingerprint = c.name, c.fp
	if c.edge != nil {
		if e.EdgeGateway = gateway.HeldBy(c.edge); e.EdgeGateway != "" {
			e.Gateway = c.h.cfg.GatewayID
		}
	}
	c.h.cfg.Audit.Write(e)
}

// end writes the outcome line. outcome is ok, error, refused, timeout or cancelled; err (if
// any) is recorded as its message.
func (c *edgeCall) end(outcome string, err error, e audit.Event) {
	e.Outcome = outcome
	if err != nil {
		e.Error = err.Error()
	}
	c.write("outcome", e)
}

// errNotReached is an edge outside the caller's role: unknown to the caller, refused in the
// audit log.
var errNotReached = fmt.Errorf("%w (not reached by the caller's role)", gateway.ErrUnknownEdge)

// outcomeOf classifies an RPC error for the audit log.
func outcomeOf(err error) string {
	var pe *protocol.Error
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, errNotReached):
		return "refused"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &pe) && (pe.Code == protocol.CodePolicy || pe.Code == protocol.CodePaused):
		return "refused"
	case errors.As(err, &pe) && pe.Code == protocol.CodeCancelled:
		return "cancelled"
	}
	return "error"
}

// edgeMessage turns an error from the Fleet into the one line a model reads: what happened
// and what to do about it.
func edgeMessage(edge string, err error) string {
	var pe *protocol.Error
	switch {
	case errors.Is(err, gateway.ErrUnknownEdge):
		return fmt.Sprintf("unknown edge %q: call get_status to list edges", edge)
	case errors.Is(err, gateway.ErrGatewayUnreachable):
		return oneLine(err.Error()) + ": retry in a few seconds, or call get_status to see where it is connected"
	case errors.Is(err, gateway.ErrEdgeOffline):
		return fmt.Sprintf("edge %q is not connected: call get_status to see which edges are up (last_seen tells when it was), and retry once it reconnects", edge)
	case errors.Is(err, gateway.ErrEdgeBusy):
		return fmt.Sprintf("edge %q is busy (at its concurrency limit with a full queue): retry in a few seconds", edge)
	case errors.Is(err, gateway.ErrDisconnected):
		return fmt.Sprintf("edge %q disconnected during the call, so its outcome is unknown: check the device's state before retrying", edge)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("the call to edge %q timed out: retry, or check with get_status that the edge is still connected", edge)
	case errors.Is(err, context.Canceled):
		return fmt.Sprintf("the call to edge %q was cancelled", edge)
	case errors.As(err, &pe):
		msg := oneLine(pe.Message)
		switch pe.Code {
		case protocol.CodePolicy:
			return "refused by the edge's policy: " + msg
		case protocol.CodeExists:
			return msg + ": the file already exists; set overwrite: true to replace it"
		case protocol.CodePaused:
			return fmt.Sprintf("edge %q is paused by its owner (mcp-ssh-edge pause): it refuses every call until they run mcp-ssh-edge resume", edge)
		case protocol.CodeBusy:
			return fmt.Sprintf("edge %q is busy (at its concurrency limit): retry in a few seconds", edge)
		case protocol.CodeNotFound:
			return "not found on the edge: " + msg
		case protocol.CodeBadRequest:
			return "the edge rejected the request: " + msg + "; fix the arguments"
		case protocol.CodeUnsupported:
			return fmt.Sprintf("edge %q cannot do this: %s", edge, msg)
		case protocol.CodeUnsupportedVersion, protocol.CodeUnknownMethod:
			return fmt.Sprintf("edge %q runs an mcp-ssh-edge too old for this call (%s): upgrade it", edge, msg)
		case protocol.CodeIO:
			return "I/O error on the edge: " + msg
		case protocol.CodeCancelled:
			return fmt.Sprintf("the call to edge %q was cancelled", edge)
		}
		return fmt.Sprintf("edge %q failed (%s): %s", edge, oneLine(pe.Code), msg)
	}
	return fmt.Sprintf("the call to edge %q failed: %s", edge, oneLine(err.Error()))
}

// maxPeerMessage bounds text from a peer that is echoed into a result.
const maxPeerMessage = 512

// oneLine makes peer-supplied text safe to put in a one-line message: control characters
// become spaces and the length is bounded.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxPeerMessage {
		cut := maxPeerMessage
		for cut > 0 && !utf8Start(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
