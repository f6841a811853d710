package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// This file is the holder's side of a relayed call: another gateway's tool call for an edge
// connected here runs through the local handle, as a local call would (the edge's slots and
// queue, its metrics), and its frames, body and result travel over a link. The calling
// gateway already applied its policy and audited the call; this one audits that it ran it.

// serveCall takes a call relayed to this gateway (on the NATS subscription's goroutine).
func (n *Node) serveCall(m *nats.Msg) {
	if m.Reply == "" || len(m.Data) > maxOpen {
		return
	}
	var o openCall
	if err := json.Unmarshal(m.Data, &o); err != nil || o.Edge == "" || o.Caller == "" {
		n.refuse(m.Reply, fmt.Errorf("relayed call not understood"))
		return
	}
	select {
	case n.relay <- struct{}{}:
	default:
		n.refuse(m.Reply, fmt.Errorf("%w: gateway %s relays %d calls already", gateway.ErrEdgeBusy, n.cfg.ID, maxRelayed))
		return
	}
	l := n.newLink(m.Reply)
	go func() {
		defer func() { <-n.relay }()
		defer l.close()
		n.runRelayed(l, o)
	}()
}

// refuse answers an open with an error and no link.
func (n *Node) refuse(reply string, err error) {
	b, _ := json.Marshal(encodeError(err))
	_ = n.nc.PublishMsg(&nats.Msg{Subject: reply, Header: nats.Header{hdrKind: []string{kindError}}, Data: b})
}

// runRelayed runs one relayed call to its end. The caller learns this side's inbox from the
// first message: at once for a call with a body (the caller sends it once it knows where),
// from the answer itself for a call that ends within openedAfter, else from kindOpened then.
func (n *Node) runRelayed(l *link, o openCall) {
	l.setPeer(l.peer)
	if o.Body {
		if err := l.publish(kindOpened, nil, nil); err != nil {
			return
		}
	} else {
		t := time.AfterFunc(openedAfter, func() {
			if !l.spoke.Load() {
				_ = l.publish(kindOpened, nil, nil)
			}
		})
		defer t.Stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.dead:
			cancel()
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	var h gateway.Edge
	var err error
	if o.Op != opInventories {
		h, err = n.localEdge(o.Edge)
	}
	// The caller audited the call as its client asked it; this line records that this
	// gateway ran it for that gateway, under the same request id.
	ev := audit.Event{RequestID: o.RID, Actor: "gateway:" + o.Caller, Gateway: n.cfg.ID, EdgeGateway: n.cfg.ID,
		Tool: "relay:" + o.Op}
	if h != nil {
		ev.Edge, ev.Fingerprint = h.Name(), h.Fingerprint()
		describe(&ev, o)
		ev.Event = "intent"
		n.cfg.Audit.Write(ev)
	}
	var res any
	if err == nil {
		res, err = n.runOp(ctx, l, o, h)
	}
	if h != nil {
		ev.Event, ev.Outcome, ev.DurationMs = "outcome", "ok", audit.Ptr(time.Since(start).Milliseconds())
		if err != nil {
			ev.Outcome, ev.Error = "error", err.Error()
		}
		n.cfg.Audit.Write(ev)
	}
	if err != nil {
		n.log.Debug("relayed call failed", "caller", o.Caller, "op", o.Op, "fingerprint", o.Edge, "err", err)
		b, _ := json.Marshal(encodeError(err))
		_ = l.publish(kindError, nil, b)
		return
	}
	b, err := json.Marshal(res)
	if err != nil {
		b, _ = json.Marshal(encodeError(err))
		_ = l.publish(kindError, nil, b)
		return
	}
	_ = l.publish(kindResult, nil, b)
}

// localEdge resolves a relayed call's edge among the ones connected here.
func (n *Node) localEdge(fp string) (gateway.Edge, error) {
	if _, ok := n.gw.ConnectedSince(fp); !ok {
		return nil, fmt.Errorf("%w: %s is not connected to gateway %s (any more)", gateway.ErrEdgeOffline, fp, n.cfg.ID)
	}
	return n.gw.Edge(fp)
}

// runOp runs the operation on h and returns its result.
// linkCtx ends with the link; the call's own ctx also ends when the caller cancels (the
// output a cancelled process still reports then goes back on linkCtx).
func (n *Node) runOp(linkCtx context.Context, l *link, o openCall, h gateway.Edge) (any, error) {
	// One reader takes every message the caller sends: a cancel ends ctx whenever it comes,
	// body chunks go to the body's reader.
	ctx, cancel := context.WithCancelCause(linkCtx)
	defer cancel(nil)
	chunks := make(chan *nats.Msg, inboxDepth)
	go func() {
		for {
			m, err := l.next(linkCtx)
			if err != nil {
				return
			}
			switch m.Header.Get(hdrKind) {
			case kindCancel:
				cancel(errCallerCancelled)
			case kindData, kindEOF:
				chunks <- m // flow control bounds them to the channel's size
			}
		}
	}()
	var body io.Reader
	if o.Body {
		body = &bulkReader{ctx: ctx, l: l, n: -1, src: func(ctx context.Context) (*nats.Msg, error) {
			select {
			case m := <-chunks:
				return m, nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}}
	}
	decode := func(v any) error {
		if err := json.Unmarshal(o.Params, v); err != nil {
			return fmt.Errorf("relayed %s: params: %w", o.Op, err)
		}
		return nil
	}
	switch o.Op {
	case opExec:
		var p protocol.ExecParams
		if err := decode(&p); err != nil {
			return nil, err
		}
		out := func(t protocol.FrameType, b []byte) {
			_ = l.sendBulk(linkCtx, kindFrame, nats.Header{hdrFrame: []string{strconv.Itoa(int(t))}}, b)
		}
		return h.Exec(ctx, o.RID, p, body, out)
	case opUpload:
		var p protocol.UploadParams
		if err := decode(&p); err != nil {
			return nil, err
		}
		if body == nil {
			body = eofReader{}
		}
		return h.Upload(ctx, o.RID, p, body)
	case opDownload:
		var p protocol.DownloadParams
		if err := decode(&p); err != nil {
			return nil, err
		}
		res, err := h.Download(ctx, o.RID, p, bulkWriter{ctx: ctx, l: l})
		if err == nil {
			err = l.publish(kindEOF, nil, nil)
		}
		return res, err
	case opDeviceInfo:
		return h.DeviceInfo(ctx, o.RID, o.Refresh)
	case opJobStart:
		var p protocol.JobStartParams
		if err := decode(&p); err != nil {
			return nil, err
		}
		return h.JobStart(ctx, o.RID, p)
	case opJobGet:
		var p protocol.JobGetParams
		if err := decode(&p); err != nil {
			return nil, err
		}
		return h.JobGet(ctx, o.RID, p)
	case opJobCancel:
		return h.JobCancel(ctx, o.RID, o.JobID)
	case opJobList:
		return h.JobList(ctx, o.RID)
	case opInventories:
		b, err := json.Marshal(n.localInventories())
		if err != nil {
			return nil, err
		}
		if err := l.sendBulk(ctx, kindData, nil, b); err != nil {
			return nil, err
		}
		return struct{}{}, l.publish(kindEOF, nil, nil)
	}
	return nil, fmt.Errorf("relayed call: unknown operation %q", o.Op)
}

// localInventories lists the companion edges connected here with their inventories.
func (n *Node) localInventories() []gateway.EdgeInventory {
	all := n.gw.Inventories(true)
	out := all[:0]
	for _, inv := range all {
		if inv.Status.Kind == gateway.KindCompanion || inv.Status.Kind == "" {
			inv.Status.Gateway = n.cfg.ID
			out = append(out, inv)
		}
	}
	return out
}

// eofReader is an empty body.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// bulkWriter sends what is written as bulk data, flow-controlled.
type bulkWriter struct {
	ctx context.Context
	l   *link
}

func (w bulkWriter) Write(p []byte) (int, error) {
	if err := w.l.sendBulk(w.ctx, kindData, nil, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// errCallerCancelled: the calling gateway's context ended (its client cancelled the call).
var errCallerCancelled = errors.New("cancelled by the calling gateway")

// describe adds to a relayed call's audit line what it runs or which file it moves, as the
// caller's line has it (env names only; never stdin or content).
func describe(ev *audit.Event, o openCall) {
	var p struct {
		protocol.ExecParams
		Exec *protocol.ExecParams `json:"exec"` // job_start
		Path string               `json:"path"`
	}
	if json.Unmarshal(o.Params, &p) != nil {
		return
	}
	x := &p.ExecParams
	if p.Exec != nil {
		x = p.Exec
	}
	ev.Argv, ev.Command, ev.Cwd, ev.Path = x.Argv, x.Command, x.Cwd, p.Path
	for name := range x.Env {
		ev.Env = append(ev.Env, name)
	}
	slices.Sort(ev.Env)
}
