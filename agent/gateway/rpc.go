package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

const (
	// cancelWait bounds how long a cancelled call waits for the edge's result.
	cancelWait = 2 * time.Second
	// bodyBuffer is the read size for request bodies (large reads are measurably faster).
	bodyBuffer = 256 << 10
)

// rpc is one RPC to make: its request id (the caller's, shared with the audit log), method
// and params; body, if not nil, is sent as FrameData frames ending with an empty one (or a
// FrameDigest, see digestBody); onFrame sees every other frame the edge sends before the
// result.
type rpc struct {
	id      string
	method  string
	params  any
	body    io.Reader
	onFrame func(t protocol.FrameType, b []byte)
}

// call runs one RPC on its own stream to h's tunnel and returns the payload of the edge's
// FrameResult, recording the call's metrics.
func (g *Gateway) call(ctx context.Context, h *handle, r rpc) (payload []byte, err error) {
	var sent, received atomic.Int64
	start := time.Now()
	defer func() {
		g.cfg.Metrics.RPC(r.method, rpcOutcome(payload, err), time.Since(start), sent.Load(), received.Load())
	}()
	switch b := r.body.(type) {
	case nil:
	case *digestBody:
		b.r = countingReader{r: b.r, n: &sent} // keep the type: send ends it with the digest
	default:
		r.body = countingReader{r: r.body, n: &sent}
	}
	onFrame := r.onFrame
	r.onFrame = func(t protocol.FrameType, b []byte) {
		received.Add(int64(len(b)))
		if onFrame != nil {
			onFrame(t, b)
		}
	}
	if r.id == "" {
		r.id = newRequestID()
	}
	return g.callEdge(ctx, h, r)
}

// callEdge is call without the metrics: it takes a slot on the edge, opens the stream and
// runs the exchange.
func (g *Gateway) callEdge(ctx context.Context, h *handle, r rpc) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", r.method, h.name, err)
	}
	e, err := h.tunnel()
	if err != nil {
		return nil, err
	}
	release, err := g.acquire(ctx, e, h.name)
	if err != nil {
		return nil, err
	}
	defer release()
	p, err := json.Marshal(r.params)
	if err != nil {
		return nil, fmt.Errorf("%s: encode params: %w", r.method, err)
	}
	// Speak the edge's version when it is older: it refuses a request of a higher one.
	req := protocol.Request{V: min(protocol.Version, max(e.hello.Protocol, 1)), ID: r.id, Method: r.method, Params: p}
	stream, err := e.sess.OpenStream()
	if err != nil {
		if e.sess.IsClosed() {
			return nil, fmt.Errorf("%w: %s", ErrDisconnected, h.name)
		}
		return nil, fmt.Errorf("%s on %s: open stream: %w", r.method, h.name, err)
	}
	// The half-close (FIN) waits until yamux has written it to the SSH channel, one packet
	// write on loopback ≈ 20 µs: done after the call returns, not on its critical path. The
	// reader has ended (finish, stopReader) or is stopped by the close.
	defer func() { go stream.Close() }()
	x := &exchange{e: e, ref: h.name, method: r.method, stream: stream, w: newFrameWriter(stream),
		writeErr: make(chan error, 1), readDone: make(chan readResult, 1), log: g.log}
	go func() { x.writeErr <- x.w.send(req, r.body) }()
	go func() {
		p, err := readFrames(stream, r.onFrame)
		x.readDone <- readResult{p, err}
	}()
	return x.wait(ctx)
}

// readResult is what an exchange's reader ends with.
type readResult struct {
	payload []byte
	err     error
}

// exchange is one RPC's stream while it runs: a writer goroutine sends the request and
// body, a reader goroutine reads frames until the result; wait follows both, the tunnel
// and the caller's context.
type exchange struct {
	e        *edge
	ref      string // the edge's name, for messages
	method   string
	stream   *yamux.Stream
	w        *frameWriter
	writeErr chan error
	readDone chan readResult
	log      *slog.Logger
}

// wait returns the edge's result, or why there is none.
func (x *exchange) wait(ctx context.Context) ([]byte, error) {
	for {
		select {
		case r := <-x.readDone:
			return x.finish(r)
		case err := <-x.writeErr:
			x.writeErr = nil
			if done, payload, err := x.written(err); done {
				return payload, err
			}
		case <-x.e.gone():
			x.stopReader()
			return nil, fmt.Errorf("%w: %s", ErrDisconnected, x.ref)
		case <-ctx.Done():
			return x.cancelled(ctx)
		}
	}
}

// finish turns the reader's end into the call's.
func (x *exchange) finish(r readResult) ([]byte, error) {
	if r.err == nil {
		x.e.touch()
		return r.payload, nil
	}
	if x.e.sess.IsClosed() {
		return nil, fmt.Errorf("%w: %s", ErrDisconnected, x.ref)
	}
	return nil, fmt.Errorf("%s on %s: %w", x.method, x.ref, r.err)
}

// written handles the writer's end: done is false when the call goes on (the body was sent,
// or a write failed but the edge may still answer, e.g. it refused the request early).
func (x *exchange) written(err error) (done bool, payload []byte, _ error) {
	var be bodyError
	switch {
	case errors.As(err, &be):
		// The edge waits for the rest of the body: cancel, so it drops what it has.
		x.w.cancel()
		x.drain()
		return true, nil, fmt.Errorf("%s on %s: %w", x.method, x.ref, be.err)
	case err == nil || errors.Is(err, errWriterStopped):
		return false, nil, nil
	case x.e.sess.IsClosed():
		x.stopReader()
		return true, nil, fmt.Errorf("%w: %s", ErrDisconnected, x.ref)
	}
	x.log.Debug("rpc body write failed", "edge", x.ref, "method", x.method, "err", err)
	return false, nil, nil
}

// cancelled tells the edge to stop and waits a short grace for its answer, which still
// carries what it did (e.g. the output of a killed process).
func (x *exchange) cancelled(ctx context.Context) ([]byte, error) {
	x.w.cancel()
	r, ok, gone := x.drain()
	switch {
	case ok && r.err == nil:
		x.e.touch()
		return r.payload, nil
	case gone:
		return nil, fmt.Errorf("%w: %s", ErrDisconnected, x.ref)
	}
	return nil, fmt.Errorf("%s on %s: %w", x.method, x.ref, ctx.Err())
}

// drain waits up to cancelWait for the reader after a cancel; ok reports that it ended on
// its own, gone that the tunnel went down meanwhile. The reader is stopped either way.
func (x *exchange) drain() (r readResult, ok, gone bool) {
	t := time.NewTimer(cancelWait)
	defer t.Stop()
	select {
	case r = <-x.readDone:
		return r, true, false
	case <-x.e.gone():
		x.stopReader()
		return r, false, true
	case <-t.C:
		x.stopReader()
		return r, false, false
	}
}

// stopReader makes sure onFrame is never called after the call returns.
func (x *exchange) stopReader() readResult {
	x.stream.SetReadDeadline(time.Now())
	return <-x.readDone
}

// acquire takes one of the edge's slots, queueing up to MaxQueue callers behind them.
func (g *Gateway) acquire(ctx context.Context, e *edge, ref string) (release func(), err error) {
	release = func() { <-e.slots; e.running.Add(-1) }
	select {
	case e.slots <- struct{}{}:
		e.running.Add(1)
		return release, nil
	default:
	}
	if n := e.waiting.Add(1); n > int64(g.cfg.MaxQueue) {
		e.waiting.Add(-1)
		return nil, fmt.Errorf("%w: %s is running %d calls (its limit) and %d more are queued; retry later",
			ErrEdgeBusy, ref, cap(e.slots), g.cfg.MaxQueue)
	}
	defer e.waiting.Add(-1)
	select {
	case e.slots <- struct{}{}:
		e.running.Add(1)
		return release, nil
	case <-e.gone():
		return nil, fmt.Errorf("%w: %s", ErrDisconnected, ref)
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for a free slot on %s: %w", ref, ctx.Err())
	}
}

// readFrames reads the edge's frames until its FrameResult, whose payload it returns (copied).
func readFrames(r io.Reader, onFrame func(t protocol.FrameType, b []byte)) ([]byte, error) {
	fr := protocol.NewReader(r)
	for {
		t, p, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, errors.New("the edge closed the stream without a result")
			}
			return nil, fmt.Errorf("read from edge: %w", err)
		}
		switch t {
		case protocol.FrameResult:
			return append([]byte(nil), p...), nil
		case protocol.FrameStdout, protocol.FrameStderr, protocol.FrameData:
			if onFrame != nil {
				onFrame(t, p)
			}
		default:
			return nil, fmt.Errorf("protocol violation: the edge sent a %s frame", t)
		}
	}
}

// errWriterStopped: the call was cancelled, no more frames are written.
var errWriterStopped = errors.New("stream writer stopped")

// frameWriter writes whole frames to a stream, so that a cancel can be sent between two frames
// of a body without corrupting the stream; lock is a channel so cancel can give up waiting.
type frameWriter struct {
	s       *yamux.Stream
	lock    chan struct{}
	broken  bool // a write failed part-way: the frame sequence is no longer well formed
	stopped bool // cancelled: nothing more is written
	buf     []byte
}

func newFrameWriter(s *yamux.Stream) *frameWriter {
	return &frameWriter{s: s, lock: make(chan struct{}, 1)}
}

// frame writes one frame unless the writer was stopped.
func (w *frameWriter) frame(t protocol.FrameType, p []byte) error {
	w.lock <- struct{}{}
	defer func() { <-w.lock }()
	if w.stopped || w.broken {
		return errWriterStopped
	}
	// One buffer per stream, reused for every frame: bulk bodies allocate nothing per chunk.
	var err error
	if w.buf, err = protocol.AppendFrame(w.buf[:0], t, p); err != nil {
		return err
	}
	if _, err := w.s.Write(w.buf); err != nil {
		w.broken = true
		return err
	}
	return nil
}

// Write sends p as FrameData frames (an io.Writer for io.CopyBuffer).
func (w *frameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), protocol.MaxDataFrame)
		if err := w.frame(protocol.FrameData, p[:c]); err != nil {
			return n, err
		}
		n += c
		p = p[c:]
	}
	return n, nil
}

// send writes the request and then the body, if any, ending it with an empty data frame, or
// for a *digestBody with its SHA-256 in a FrameDigest. A failure of the body itself (a read
// error, a source that changed) comes back as a bodyError: the caller must cancel the call,
// since the edge is still waiting for the rest.
func (w *frameWriter) send(req protocol.Request, body io.Reader) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := w.frame(protocol.FrameRequest, b); err != nil {
		return err
	}
	if body == nil {
		return nil
	}
	if d, ok := body.(*digestBody); ok {
		return w.sendDigestBody(d) // hashed in a goroutine of its own, pipelined with the sending
	}
	if _, err := io.CopyBuffer(w, bodyReader{body}, make([]byte, bodyBuffer)); err != nil {
		return err
	}
	return w.frame(protocol.FrameData, nil)
}

// bodyError is a failure of a request body itself, as opposed to the stream it is sent on.
type bodyError struct{ err error }

func (e bodyError) Error() string { return e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

// bodyReader marks the body's read errors as bodyErrors (and hides WriterTo, so that
// io.CopyBuffer uses our large buffer).
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = bodyError{fmt.Errorf("read the content: %w", err)}
	}
	return n, err
}

// cancel unblocks a body write stuck on flow control, sends FrameCancel if the frame sequence
// is intact, and half-closes the stream. It waits at most cancelWait for the writer.
func (w *frameWriter) cancel() {
	w.s.SetWriteDeadline(time.Now())
	t := time.NewTimer(cancelWait)
	defer t.Stop()
	select {
	case w.lock <- struct{}{}:
	case <-t.C:
		w.s.Close()
		return
	}
	defer func() { <-w.lock }()
	if !w.broken && !w.stopped {
		w.s.SetWriteDeadline(time.Now().Add(cancelWait))
		protocol.WriteFrame(w.s, protocol.FrameCancel, nil)
	}
	w.stopped = true
	w.s.Close()
}

// newRequestID returns a random id for one RPC (also useful in the edge's rpc.log).
func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
