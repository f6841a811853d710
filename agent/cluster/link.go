package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A link carries one relayed call between two gateways over NATS: each side subscribes to
// its own inbox and publishes to the other's. Bulk bytes (an upload's body, a download,
// streamed output) go in chunks of at most chunkSize, and a sender never has more than
// linkWindow bytes unacknowledged, so memory stays bounded on both sides whatever the sizes
// and the relay is as fast as its slower end; NATS's message size bound never matters. Both
// sides send a ping every pingEvery; silence for linkSilence ends the link (a gateway died,
// or NATS went away).

// Message kinds (header hdrKind).
const (
	kindOpened = "o" // owner → caller: the call started; header hdrInbox is the owner's inbox
	kindData   = "d" // bulk bytes (upload body, download content, inventories)
	kindFrame  = "f" // streamed output: header hdrFrame is the protocol frame type
	kindEOF    = "e" // the bulk bytes ended
	kindAck    = "a" // header hdrAcked: bytes consumed so far
	kindCancel = "c" // caller → owner: the caller's context ended
	kindResult = "r" // owner → caller: the call's result (JSON)
	kindError  = "x" // owner → caller: the call failed (JSON callError)
	kindPing   = "p"
)

const (
	hdrKind  = "K"
	hdrInbox = "I"
	hdrFrame = "F"
	hdrAcked = "N"

	chunkSize   = 128 << 10
	linkWindow  = 4 << 20
	pingEvery   = time.Second
	linkSilence = 5 * time.Second
	// minCost is what a small message counts for in the window, so that the window bounds the
	// message count too (streamed output may come in tiny frames).
	minCost = 16 << 10
	// inboxDepth bounds the messages a link holds unread: a window of them plus control.
	inboxDepth = linkWindow/minCost + 64
)

// Why a link ended before its call did.
var (
	errLinkLost = errors.New("the other gateway stopped answering during the call")
	errNATSLost = errors.New("this gateway lost its NATS connection")
)

// link is one side of a relayed call.
type link struct {
	nc   *nats.Conn
	sub  *nats.Subscription
	in   chan *nats.Msg // every message but pings and acks, in order
	peer string         // the other side's inbox; "" until known

	mu       sync.Mutex
	sent     int64         // bulk bytes sent
	acked    int64         // of those, acknowledged by the other side
	ackWake  chan struct{} // signalled on each ack
	consumed int64         // bulk bytes received and used
	ackedOut int64         // consumed as last acknowledged to the other side

	ready chan struct{} // closed once peer is known
	heard chan struct{} // signalled on any message (for the silence watchdog)
	dead  chan struct{} // closed when the link is lost or closed
	once  sync.Once
	err   error
}

// newLink subscribes to a fresh inbox; peer may be set later (setPeer).
func newLink(nc *nats.Conn, peer string) (*link, error) {
	l := &link{nc: nc, peer: peer, in: make(chan *nats.Msg, inboxDepth), ackWake: make(chan struct{}, 1),
		ready: make(chan struct{}), heard: make(chan struct{}, 1), dead: make(chan struct{})}
	sub, err := nc.Subscribe(nc.NewRespInbox(), l.receive)
	if err != nil {
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	// Flow control bounds what a peer sends; a peer that ignores it is cut off here rather
	// than buffered without end.
	if err := sub.SetPendingLimits(inboxDepth*2, linkWindow*2+1<<20); err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	l.sub = sub
	return l, nil
}

// inbox is the subject the other side publishes to.
func (l *link) inbox() string { return l.sub.Subject }

// setPeer names the other side's inbox and starts the pings and the silence watchdog.
func (l *link) setPeer(peer string) {
	l.mu.Lock()
	l.peer = peer
	l.mu.Unlock()
	close(l.ready)
	go l.keepalive()
}

// receive runs on the subscription's goroutine.
func (l *link) receive(m *nats.Msg) {
	select {
	case l.heard <- struct{}{}:
	default:
	}
	switch m.Header.Get(hdrKind) {
	case kindPing:
		return
	case kindAck:
		n, err := strconv.ParseInt(m.Header.Get(hdrAcked), 10, 64)
		if err != nil {
			l.fail(fmt.Errorf("cluster: bad acknowledgement %q", m.Header.Get(hdrAcked)))
			return
		}
		l.mu.Lock()
		if n > l.acked && n <= l.sent {
			l.acked = n
		}
		l.mu.Unlock()
		select {
		case l.ackWake <- struct{}{}:
		default:
		}
		return
	}
	select {
	case l.in <- m:
	case <-l.dead:
	default:
		l.fail(errors.New("cluster: the other gateway sent more than flow control allows"))
	}
}

// keepalive pings the other side and ends the link after linkSilence without a message.
func (l *link) keepalive() {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-l.dead:
			return
		case <-l.heard:
			last = time.Now()
		case now := <-t.C:
			if now.Sub(last) > linkSilence {
				l.fail(errLinkLost)
				return
			}
			_ = l.publish(kindPing, nil, nil)
		}
	}
}

// fail ends the link with err (the first one wins).
func (l *link) fail(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.dead)
		_ = l.sub.Unsubscribe()
	})
}

// close ends the link.
func (l *link) close() { l.fail(errors.New("cluster: link closed")) }

// lost returns why the link ended.
func (l *link) lost() error {
	<-l.dead
	return l.err
}

// publish sends one message of kind to the other side.
func (l *link) publish(kind string, hdr nats.Header, data []byte) error {
	l.mu.Lock()
	peer := l.peer
	l.mu.Unlock()
	if hdr == nil {
		hdr = nats.Header{}
	}
	hdr.Set(hdrKind, kind)
	return l.nc.PublishMsg(&nats.Msg{Subject: peer, Header: hdr, Data: data})
}

// sendBulk sends b (any size) as chunks of kind, waiting for acknowledgements so that at most
// linkWindow bytes are in flight. hdr is copied onto every chunk.
func (l *link) sendBulk(ctx context.Context, kind string, hdr nats.Header, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), chunkSize)
		if err := l.waitWindow(ctx, cost(n)); err != nil {
			return err
		}
		h := nats.Header{}
		for k, v := range hdr {
			h[k] = v
		}
		if err := l.publish(kind, h, b[:n]); err != nil {
			return fmt.Errorf("cluster: send: %w", err)
		}
		b = b[n:]
	}
	return nil
}

// waitWindow waits until n more bytes fit in the window, then counts them as sent.
func (l *link) waitWindow(ctx context.Context, n int) error {
	for {
		l.mu.Lock()
		if l.sent-l.acked+int64(n) <= linkWindow {
			l.sent += int64(n)
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		select {
		case <-l.ackWake:
		case <-l.dead:
			return l.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// next returns the next message, or why there is none.
func (l *link) next(ctx context.Context) (*nats.Msg, error) {
	select {
	case m := <-l.in:
		return m, nil
	default:
	}
	select {
	case m := <-l.in:
		return m, nil
	case <-l.dead:
		select { // what arrived before the end is still delivered
		case m := <-l.in:
			return m, nil
		default:
		}
		return nil, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// cost is what a bulk message of n bytes counts for in the window.
func cost(n int) int { return max(n, minCost) }

// used records that a bulk message of n bytes was used, acknowledging once a quarter window
// has gathered.
func (l *link) used(n int) {
	l.mu.Lock()
	l.consumed += int64(cost(n))
	c := l.consumed
	due := c-l.ackedOut >= linkWindow/4
	if due {
		l.ackedOut = c
	}
	l.mu.Unlock()
	if due {
		_ = l.publish(kindAck, nats.Header{hdrAcked: []string{strconv.FormatInt(c, 10)}}, nil)
	}
}

// bulkReader reads the bulk bytes a link receives until kindEOF, as an io.Reader. src gives
// the messages (l.next when nothing else reads the link); a message of another kind is an
// error unless other takes it (returning true).
type bulkReader struct {
	ctx   context.Context
	l     *link
	src   func(ctx context.Context) (*nats.Msg, error)
	buf   []byte
	n     int // len of the message buf came from, acknowledged once buf is used up; -1: none
	eof   bool
	other func(m *nats.Msg) bool
}

func (r *bulkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.n >= 0 {
			r.l.used(r.n)
			r.n = -1
		}
		if r.eof {
			return 0, io.EOF
		}
		src := r.src
		if src == nil {
			src = r.l.next
		}
		m, err := src(r.ctx)
		if err != nil {
			return 0, err
		}
		switch m.Header.Get(hdrKind) {
		case kindData:
			r.buf, r.n = m.Data, len(m.Data)
		case kindEOF:
			r.eof = true
		default:
			if r.other == nil || !r.other(m) {
				return 0, fmt.Errorf("cluster: unexpected message %q in a body", m.Header.Get(hdrKind))
			}
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
