package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
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

// Exec runs a process on edge. stdin nil sends no stdin (p.Stdin is set accordingly); out
// receives stdout and stderr chunks as they arrive (valid only during the call: the caller
// copies and caps them). A cancelled ctx stops the process and still returns what the edge
// reported if it does so within a short grace.
func (g *Gateway) Exec(ctx context.Context, edge string, p protocol.ExecParams, stdin io.Reader,
	out func(t protocol.FrameType, b []byte)) (protocol.ExecResult, error) {
	p.Stdin = stdin != nil
	var res protocol.ExecResult
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("exec: %w", err)
	}
	onFrame := func(t protocol.FrameType, b []byte) {
		if out != nil && (t == protocol.FrameStdout || t == protocol.FrameStderr) {
			out(t, b)
		}
	}
	payload, err := g.call(ctx, edge, protocol.MethodExec, p, stdin, onFrame)
	if err != nil {
		return res, err
	}
	return res, protocol.DecodeResponse(payload, &res)
}

// call runs one RPC on its own stream and returns the payload of the edge's FrameResult.
// body, if not nil, is sent as FrameData frames ending with an empty one (or a FrameDigest,
// see digestBody); onFrame sees every other frame the edge sends before the result.
func (g *Gateway) call(ctx context.Context, ref, method string, params any, body io.Reader,
	onFrame func(t protocol.FrameType, b []byte)) (payload []byte, err error) {
	var sent, received atomic.Int64
	start := time.Now()
	defer func() {
		g.cfg.Metrics.RPC(method, rpcOutcome(payload, err), time.Since(start), sent.Load(), received.Load())
	}()
	switch b := body.(type) {
	case nil:
	case *digestBody:
		b.r = countingReader{r: b.r, n: &sent} // keep the type: send ends it with the digest
	default:
		body = countingReader{r: body, n: &sent}
	}
	count := func(t protocol.FrameType, b []byte) {
		received.Add(int64(len(b)))
		if onFrame != nil {
			onFrame(t, b)
		}
	}
	return g.callEdge(ctx, ref, method, params, body, count)
}

// callEdge is call without the metrics.
func (g *Gateway) callEdge(ctx context.Context, ref, method string, params any, body io.Reader,
	onFrame func(t protocol.FrameType, b []byte)) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", method, ref, err)
	}
	e, err := g.resolve(ref)
	if err != nil {
		return nil, err
	}
	release, err := g.acquire(ctx, e, ref)
	if err != nil {
		return nil, err
	}
	defer release()
	p, err := json.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("%s: encode params: %w", method, err)
	}
	// Speak the edge's version when it is older: it refuses a request of a higher one.
	req := protocol.Request{V: min(protocol.Version, max(e.hello.Protocol, 1)), ID: newRequestID(), Method: method, Params: p}

	stream, err := e.sess.OpenStream()
	if err != nil {
		if e.sess.IsClosed() {
			return nil, fmt.Errorf("%w: %s", ErrDisconnected, ref)
		}
		return nil, fmt.Errorf("%s on %s: open stream: %w", method, ref, err)
	}
	defer stream.Close()
	w := newFrameWriter(stream)

	// Writer: request then body. Reader: frames until the result.
	writeErr := make(chan error, 1)
	go func() { writeErr <- w.send(req, body) }()
	type readResult struct {
		payload []byte
		err     error
	}
	readDone := make(chan readResult, 1)
	go func() {
		p, err := readFrames(stream, onFrame)
		readDone <- readResult{p, err}
	}()
	// stopReader makes sure onFrame is never called after call returns.
	stopReader := func() readResult {
		stream.SetReadDeadline(time.Now())
		return <-readDone
	}

	finish := func(r readResult) ([]byte, error) {
		if r.err == nil {
			e.touch()
			return r.payload, nil
		}
		if e.sess.IsClosed() {
			return nil, fmt.Errorf("%w: %s", ErrDisconnected, ref)
		}
		return nil, fmt.Errorf("%s on %s: %w", method, ref, r.err)
	}
	for {
		select {
		case r := <-readDone:
			return finish(r)
		case err := <-writeErr:
			writeErr = nil
			var be bodyError
			if errors.As(err, &be) {
				// The edge waits for the rest of the body: cancel, so it drops what it has.
				w.cancel()
				t := time.NewTimer(cancelWait)
				defer t.Stop()
				select {
				case <-readDone:
				case <-e.gone():
					stopReader()
				case <-t.C:
					stopReader()
				}
				return nil, fmt.Errorf("%s on %s: %w", method, ref, be.err)
			}
			if err != nil && !errors.Is(err, errWriterStopped) {
				if e.sess.IsClosed() {
					stopReader()
					return nil, fmt.Errorf("%w: %s", ErrDisconnected, ref)
				}
				// The edge may still answer (e.g. it refused the request early): keep reading.
				g.log.Debug("rpc body write failed", "edge", ref, "method", method, "err", err)
			}
		case <-e.gone():
			stopReader()
			return nil, fmt.Errorf("%w: %s", ErrDisconnected, ref)
		case <-ctx.Done():
			w.cancel()
			t := time.NewTimer(cancelWait)
			defer t.Stop()
			select {
			case r := <-readDone:
				if r.err == nil {
					e.touch()
					return r.payload, nil
				}
			case <-e.gone():
				stopReader()
				return nil, fmt.Errorf("%w: %s", ErrDisconnected, ref)
			case <-t.C:
				stopReader()
			}
			return nil, fmt.Errorf("%s on %s: %w", method, ref, ctx.Err())
		}
	}
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
	digest  hash.Hash // of the body written so far, for a digestBody
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
		if w.digest != nil {
			w.digest.Write(p[:c])
		}
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
	d, digest := body.(*digestBody)
	if digest {
		w.digest = sha256.New()
	}
	if _, err := io.CopyBuffer(w, bodyReader{body}, make([]byte, bodyBuffer)); err != nil {
		return err
	}
	if !digest {
		return w.frame(protocol.FrameData, nil)
	}
	if d.check != nil {
		if err := d.check(); err != nil {
			return bodyError{err}
		}
	}
	d.sum = hex.EncodeToString(w.digest.Sum(nil))
	return w.frame(protocol.FrameDigest, []byte(d.sum))
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
