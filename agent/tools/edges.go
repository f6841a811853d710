package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
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

// target is what the audit log and the results know about the edge a call addresses.
type target struct {
	arg         string // as given
	name        string // resolved name, or arg when unknown
	fingerprint string // "" when unknown
}

// connectedLookup is implemented by a Fleet that finds one connected edge without listing
// them all (*gateway.Gateway does); the full listing is the fallback for the others.
type connectedLookup interface {
	Lookup(ref string) (name, fingerprint string, ok bool)
}

// resolve looks edge up by name (case folded) or fingerprint, for naming it in results and
// audit lines. An edge not found is still passed on: the Fleet gives the authoritative answer.
func (h *handlers) resolve(edge string) target {
	t := target{arg: edge, name: edge}
	if l, ok := h.fleet.(connectedLookup); ok {
		if name, fp, found := l.Lookup(edge); found {
			t.name, t.fingerprint = name, fp
			return t
		}
	}
	lower := strings.ToLower(edge)
	for _, e := range h.fleet.Edges(false) {
		if e.Name == lower || e.Fingerprint == edge {
			t.name, t.fingerprint = e.Name, e.Fingerprint
			break
		}
	}
	return t
}

// intent writes the audit line before an RPC and returns the request id that ties it to the
// outcome line.
func (h *handlers) intent(tool string, t target, e audit.Event) string {
	e.Event, e.RequestID, e.Actor, e.Tool = "intent", newRequestID(), h.cfg.Actor, tool
	e.Edge, e.Fingerprint = t.name, t.fingerprint
	h.cfg.Audit.Write(e)
	return e.RequestID
}

// outcome writes the audit line after an RPC. outcome is ok, error, refused, timeout or
// cancelled; err (if any) is recorded as its message.
func (h *handlers) outcome(id, tool string, t target, outcome string, err error, e audit.Event) {
	e.Event, e.RequestID, e.Actor, e.Tool = "outcome", id, h.cfg.Actor, tool
	e.Edge, e.Fingerprint, e.Outcome = t.name, t.fingerprint, outcome
	if err != nil {
		e.Error = err.Error()
	}
	h.cfg.Audit.Write(e)
}

// outcomeOf classifies an RPC error for the audit log.
func outcomeOf(err error) string {
	var pe *protocol.Error
	switch {
	case err == nil:
		return "ok"
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
