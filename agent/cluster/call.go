package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Operations a gateway relays for another: one per method of gateway.Edge, plus the
// inventories of its edges (find_edges).
const (
	opExec        = "exec"
	opUpload      = "upload"
	opDownload    = "download"
	opDeviceInfo  = "device_info"
	opJobStart    = "job_start"
	opJobGet      = "job_get"
	opJobCancel   = "job_cancel"
	opJobList     = "job_list"
	opInventories = "inventories"
)

// maxOpen bounds the open message of a relayed call (its params: an exec's argv and env are
// the largest, bounded by protocol's own limits well below this).
const maxOpen = 512 << 10

// openCall is the first message of a relayed call, sent to the holder's call subject with the
// caller's link inbox as its reply subject.
type openCall struct {
	Op      string          `json:"op"`
	Edge    string          `json:"edge"` // fingerprint
	RID     string          `json:"rid"`
	Caller  string          `json:"caller"` // calling gateway's id
	Params  json.RawMessage `json:"params,omitempty"`
	Body    bool            `json:"body,omitempty"` // a body (stdin, upload content) follows
	Refresh bool            `json:"refresh,omitempty"`
	JobID   string          `json:"job_id,omitempty"`
}

// callError is how a relayed call's error travels, so that the caller sees the same error
// (errors.Is on the gateway's sentinels, *protocol.Error codes) as the holder did.
type callError struct {
	Kind    string `json:"kind"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message"`
}

// Kinds of callError.
const (
	errKindUnknown      = "unknown_edge"
	errKindOffline      = "offline"
	errKindBusy         = "busy"
	errKindDisconnected = "disconnected"
	errKindEdge         = "edge"
	errKindCanceled     = "canceled"
	errKindDeadline     = "deadline"
	errKindOther        = "other"
)

// encodeError describes err for the caller.
func encodeError(err error) callError {
	var pe *protocol.Error
	e := callError{Kind: errKindOther, Message: err.Error()}
	switch {
	case errors.As(err, &pe):
		e.Kind, e.Code, e.Message = errKindEdge, pe.Code, pe.Message
	case errors.Is(err, gateway.ErrUnknownEdge):
		e.Kind = errKindUnknown
	case errors.Is(err, gateway.ErrEdgeOffline):
		e.Kind = errKindOffline
	case errors.Is(err, gateway.ErrEdgeBusy):
		e.Kind = errKindBusy
	case errors.Is(err, gateway.ErrDisconnected):
		e.Kind = errKindDisconnected
	case errors.Is(err, context.Canceled):
		e.Kind = errKindCanceled
	case errors.Is(err, context.DeadlineExceeded):
		e.Kind = errKindDeadline
	}
	return e
}

// remoteError is a holder's error as the caller sees it: its message, and the sentinel of
// its kind for errors.Is.
type remoteError struct {
	kind error
	msg  string
	via  string
}

func (e *remoteError) Error() string { return e.msg + " (on gateway " + e.via + ")" }
func (e *remoteError) Unwrap() error { return e.kind }

// decode turns a callError back into an error of the same kind.
func (e callError) decode(via string) error {
	var kind error
	switch e.Kind {
	case errKindEdge:
		return &protocol.Error{Code: e.Code, Message: e.Message}
	case errKindUnknown:
		kind = gateway.ErrUnknownEdge
	case errKindOffline:
		kind = gateway.ErrEdgeOffline
	case errKindBusy:
		kind = gateway.ErrEdgeBusy
	case errKindDisconnected:
		kind = gateway.ErrDisconnected
	case errKindCanceled:
		kind = context.Canceled
	case errKindDeadline:
		kind = context.DeadlineExceeded
	default:
		return fmt.Errorf("%s (on gateway %s)", e.Message, via)
	}
	return &remoteError{kind: kind, msg: e.Message, via: via}
}
