package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// This file is the caller's side of a relayed call: remoteEdge is the gateway.Edge of an edge
// connected to another gateway. The tools use it as they use a local edge (policy and audit
// happen here, before the call); every method sends one openCall to the holder and reads the
// link until the result.

// cancelGrace bounds how long a cancelled call waits for the holder's last answer (the
// holder itself waits up to two seconds for the edge's).
const cancelGrace = 4 * time.Second

// remoteEdge is an edge connected to another gateway of the cluster.
type remoteEdge struct {
	n *Node
	r route
}

var _ gateway.Edge = (*remoteEdge)(nil)

func (e *remoteEdge) Name() string              { return e.r.Status.Name }
func (e *remoteEdge) Fingerprint() string       { return e.r.Status.Fingerprint }
func (e *remoteEdge) Labels() map[string]string { return maps.Clone(e.r.Status.Labels) }
func (e *remoteEdge) Connected() bool           { return true }

// HeldBy is the id of the gateway the edge is connected to (for the audit line).
func (e *remoteEdge) HeldBy() string { return e.r.Gateway }

// Exec implements gateway.Edge.
func (e *remoteEdge) Exec(ctx context.Context, rid string, p protocol.ExecParams, stdin io.Reader,
	out func(t protocol.FrameType, b []byte)) (protocol.ExecResult, error) {
	var res protocol.ExecResult
	p.Stdin = stdin != nil
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("exec: %w", err)
	}
	onFrame := func(m *nats.Msg) error {
		t, err := strconv.Atoi(m.Header.Get(hdrFrame))
		if err != nil || t < 0 || t > 255 {
			return fmt.Errorf("cluster: bad frame type %q", m.Header.Get(hdrFrame))
		}
		if out != nil {
			out(protocol.FrameType(t), m.Data)
		}
		return nil
	}
	return res, e.call(ctx, opExec, rid, p, stdin, map[string]func(*nats.Msg) error{kindFrame: onFrame}, &res)
}

// Upload implements gateway.Edge.
func (e *remoteEdge) Upload(ctx context.Context, rid string, p protocol.UploadParams, body io.Reader) (protocol.UploadResult, error) {
	var res protocol.UploadResult
	if body == nil {
		body = eofReader{}
	}
	return res, e.call(ctx, opUpload, rid, p, body, nil, &res)
}

// Download implements gateway.Edge.
func (e *remoteEdge) Download(ctx context.Context, rid string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error) {
	var res protocol.DownloadResult
	onData := func(m *nats.Msg) error {
		_, err := w.Write(m.Data)
		return err
	}
	return res, e.call(ctx, opDownload, rid, p, nil, map[string]func(*nats.Msg) error{kindData: onData}, &res)
}

// DeviceInfo implements gateway.Edge.
func (e *remoteEdge) DeviceInfo(ctx context.Context, rid string, refresh bool) (protocol.DeviceInfo, error) {
	var res protocol.DeviceInfo
	return res, e.n.relayCall(ctx, e.r, openCall{Op: opDeviceInfo, RID: rid, Refresh: refresh}, nil, nil, &res)
}

// JobStart implements gateway.Edge.
func (e *remoteEdge) JobStart(ctx context.Context, rid string, p protocol.JobStartParams) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("job_start: %w", err)
	}
	return res, e.call(ctx, opJobStart, rid, p, nil, nil, &res)
}

// JobGet implements gateway.Edge.
func (e *remoteEdge) JobGet(ctx context.Context, rid string, p protocol.JobGetParams) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("job_get: %w", err)
	}
	return res, e.call(ctx, opJobGet, rid, p, nil, nil, &res)
}

// JobCancel implements gateway.Edge.
func (e *remoteEdge) JobCancel(ctx context.Context, rid, id string) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	return res, e.n.relayCall(ctx, e.r, openCall{Op: opJobCancel, RID: rid, JobID: id}, nil, nil, &res)
}

// JobList implements gateway.Edge.
func (e *remoteEdge) JobList(ctx context.Context, rid string) (protocol.JobList, error) {
	var res protocol.JobList
	return res, e.n.relayCall(ctx, e.r, openCall{Op: opJobList, RID: rid}, nil, nil, &res)
}

// call relays op with params encoded.
func (e *remoteEdge) call(ctx context.Context, op, rid string, params any, body io.Reader,
	on map[string]func(*nats.Msg) error, res any) error {
	p, err := json.Marshal(params)
	if err != nil {
		return fmt.Errorf("%s: encode params: %w", op, err)
	}
	return e.n.relayCall(ctx, e.r, openCall{Op: op, RID: rid, Params: p}, body, on, res)
}

// unreachable is the error of a call whose holder cannot be reached.
func (n *Node) unreachable(r route, why string) error {
	return &gateway.UnreachableError{Edge: r.Status.Name, Gateway: r.Gateway, Reason: why}
}

// relayCall runs o on the gateway of r: body (if any) is streamed to it, on handles the
// messages of the kinds it names as they come, and the result is decoded into res. The call
// does not wait for the holder to take it before reading (a call without a body costs one
// message each way); the holder's first answer must come within openWait.
func (n *Node) relayCall(ctx context.Context, r route, o openCall, body io.Reader,
	on map[string]func(*nats.Msg) error, res any) error {
	if !n.nc.IsConnected() {
		return n.unreachable(r, "this gateway has lost its NATS connection")
	}
	o.Edge, o.Caller, o.Body = r.Status.Fingerprint, n.cfg.ID, body != nil
	b, err := json.Marshal(o)
	if err != nil {
		return err
	}
	l := n.newLink("")
	defer l.close()
	if err := n.nc.PublishMsg(&nats.Msg{Subject: callSubject(r.Gateway), Reply: l.inbox, Data: b}); err != nil {
		return n.unreachable(r, "this gateway's NATS connection is down")
	}
	bodyErr := make(chan error, 1)
	if body != nil {
		go func() { bodyErr <- sendBody(ctx, l, body) }()
	}
	x := &relayed{n: n, l: l, r: r, op: o.Op, bodyErr: bodyErr}
	return x.read(ctx, on, res)
}

// relayed is the caller's side of one relayed call while it reads the holder's answers.
type relayed struct {
	n       *Node
	l       *link
	r       route
	op      string
	bodyErr chan error
}

// errNotTaken: the holder did not answer the open within openWait.
var errNotTaken = errors.New("it did not answer within " + openWait.String())

// read reads the holder's messages until the result.
func (x *relayed) read(ctx context.Context, on map[string]func(*nats.Msg) error, res any) error {
	name := x.r.Status.Name
	opened := false
	openCtx, openDone := context.WithTimeoutCause(ctx, openWait, errNotTaken)
	defer openDone()
	rctx := openCtx
	cancelled := false
	for {
		m, err := x.l.next(rctx)
		switch {
		case err != nil && !opened && errors.Is(context.Cause(openCtx), errNotTaken):
			return x.n.unreachable(x.r, errNotTaken.Error())
		case err != nil && !cancelled && ctx.Err() != nil:
			// Tell the holder (once it answered, so that its inbox is known), then wait a
			// little for what the call still reports.
			cancelled = true
			if opened {
				_ = x.l.publish(kindCancel, nil, nil)
			}
			var stop context.CancelFunc
			rctx, stop = context.WithTimeout(context.WithoutCancel(ctx), cancelGrace)
			defer stop()
			continue
		case err != nil && cancelled:
			return fmt.Errorf("%s on %s: %w", x.op, name, ctx.Err())
		case errors.Is(err, errNATSLost) && !opened:
			return x.n.unreachable(x.r, err.Error())
		case errors.Is(err, errLinkLost) || errors.Is(err, errNATSLost):
			return fmt.Errorf("%w: %s: the link to gateway %s was lost during the call (%v)", gateway.ErrDisconnected, name, x.r.Gateway, err)
		case err != nil:
			return fmt.Errorf("%s on %s via gateway %s: %w", x.op, name, x.r.Gateway, err)
		}
		if m.Header.Get("Status") == noResponders {
			return x.n.unreachable(x.r, "it is not connected to NATS (it may have stopped)")
		}
		if !opened && m.Reply != "" { // the holder's first message: the call is taken
			opened = true
			x.l.setPeer(m.Reply)
			if cancelled {
				_ = x.l.publish(kindCancel, nil, nil)
			} else {
				rctx = ctx
			}
		}
		kind := m.Header.Get(hdrKind)
		switch kind {
		case kindOpened:
			continue
		case kindResult:
			if err := json.Unmarshal(m.Data, res); err != nil {
				return fmt.Errorf("%s on %s: result from gateway %s: %w", x.op, name, x.r.Gateway, err)
			}
			return nil
		case kindError:
			var ce callError
			if err := json.Unmarshal(m.Data, &ce); err != nil {
				return fmt.Errorf("%s on %s: error from gateway %s not understood", x.op, name, x.r.Gateway)
			}
			select {
			case err := <-x.bodyErr: // the body's own failure (a file that could not be read) says more
				var be bodyError
				if errors.As(err, &be) {
					return be.err
				}
			default:
			}
			x.n.log.Debug("relayed call failed on the gateway holding the edge", "gateway", x.r.Gateway, "op", x.op,
				"edge", name, "kind", ce.Kind, "err", ce.Message)
			return ce.decode(x.r.Gateway)
		case kindEOF:
			continue
		}
		if !opened {
			return fmt.Errorf("%s on %s: gateway %s answered out of order", x.op, name, x.r.Gateway)
		}
		if f := on[kind]; f != nil {
			err := f(m)
			x.l.used(len(m.Data))
			if err != nil {
				_ = x.l.publish(kindCancel, nil, nil)
				return fmt.Errorf("%s on %s: %w", x.op, name, err)
			}
		}
	}
}

// bodyError is a failure to read the caller's own body (not the link's).
type bodyError struct{ err error }

func (e bodyError) Error() string { return e.err.Error() }

// sendBody streams body to the holder once it took the call, then an end marker.
func sendBody(ctx context.Context, l *link, body io.Reader) error {
	select {
	case <-l.ready:
	case <-l.dead:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
	buf := make([]byte, chunkSize)
	for {
		n, err := io.ReadFull(body, buf)
		if n > 0 {
			if serr := l.sendBulk(ctx, kindData, nil, buf[:n]); serr != nil {
				return serr
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return l.publish(kindEOF, nil, nil)
		case err != nil:
			_ = l.publish(kindCancel, nil, nil)
			return bodyError{err}
		}
	}
}
