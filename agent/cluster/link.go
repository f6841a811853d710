package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// A link carries one relayed call between two gateways over NATS: each side has its own inbox
// and publishes to the other's. Every message carries its sender's inbox as its reply
// subject, so the caller learns the holder's from the first answer. Bulk bytes (an upload's body, a download,
// streamed output) go in chunks of at most chunkSize, and a sender never has more than
// linkWindow bytes unacknowledged, so memory stays bounded on both sides whatever the sizes
// and the relay is as fast as its slower end; NATS's message size bound never matters. Both
// sides send a ping every pingEvery; silence for linkSilence ends the link (a gateway died,
// or NATS went away).

// Message kinds (header hdrKind).
const (
	kindOpened = "o" // owner → caller: the call started (sent only if nothing else was soon)
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
	hdrFrame = "F"
	hdrAcked = "N"

	// noResponders is the Status header of NATS's answer to a message with a reply subject
	// that no subscriber took.
	noResponders = "503"

	chunkSize   = 128 << 10
	linkWindow  = 4 << 20
	pingEvery   = time.Second
	linkSilence = 5 * time.Second
	// minCost is what a small message counts for in the window, so that the window bounds the
	// message count too (streamed output may come in tiny frames).
	minCost = 16 << 10
	// inboxDepth bounds the messages a link holds unread: a window of them plus control.
	inboxDepth = linkWindow/minCost + 64
	// pendingBytes bounds the bytes the inbox subscription holds: maxRelayed links' windows.
	pendingBytes = int(min(int64(maxRelayed)*linkWindow, math.MaxInt))
	// openedAfter is how long a holder waits before it tells the caller that it took a call
	// without a body: a call that answers sooner needs no such message (most execs), one
	// that does not is told well within the caller's openWait.
	openedAfter = 100 * time.Millisecond
)

// Why a link ended before its call did.
var (
	errLinkLost = errors.New("the other gateway stopped answering during the call")
	errNATSLost = errors.New("this gateway lost its NATS connection")
)

// link is one side of a relayed call.
type link struct {
	nc    *nats.Conn
	ix    *inboxes
	inbox string         // the subject the other side publishes to
	in    chan *nats.Msg // every message but pings and acks, in order
	peer  string         // the other side's inbox; "" until known
	spoke atomic.Bool    // a message the other side reads (not a ping or ack) was sent

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

// inboxes takes the messages of every link of one NATS connection through one wildcard
// subscription and hands each to its link: a call costs no subscription of its own (no
// SUB/UNSUB round and no delivery goroutine per call on either gateway).
type inboxes struct {
	nc     *nats.Conn
	prefix string // a link's inbox is prefix + a token
	sub    *nats.Subscription
	seq    atomic.Uint64

	mu    sync.Mutex
	links map[string]*link // by inbox
}

// newInboxes subscribes to the connection's link inboxes.
func newInboxes(nc *nats.Conn) (*inboxes, error) {
	ix := &inboxes{nc: nc, prefix: nc.NewInbox() + ".", links: map[string]*link{}}
	sub, err := nc.Subscribe(ix.prefix+"*", ix.dispatch)
	if err != nil {
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	// Each link bounds what its peer may send (flow control, inboxDepth) and dispatch never
	// waits, so messages only pass through here; the bound is maxRelayed links' windows
	// (capped at what an int holds on 32-bit gateways).
	if err := sub.SetPendingLimits(maxRelayed*inboxDepth, pendingBytes); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	ix.sub = sub
	return ix, nil
}

// dispatch runs on the subscription's goroutine.
func (ix *inboxes) dispatch(m *nats.Msg) {
	ix.mu.Lock()
	l := ix.links[m.Subject]
	ix.mu.Unlock()
	if l != nil {
		l.receive(m)
	}
}

// failAll ends every link with err (the connection dropped, or messages were lost).
func (ix *inboxes) failAll(err error) {
	ix.mu.Lock()
	ls := make([]*link, 0, len(ix.links))
	for _, l := range ix.links {
		ls = append(ls, l)
	}
	ix.mu.Unlock()
	for _, l := range ls {
		l.fail(err)
	}
}

// open is a new link with a fresh inbox; peer may be set later (setPeer).
func (ix *inboxes) open(peer string) *link {
	l := &link{nc: ix.nc, ix: ix, inbox: ix.prefix + strconv.FormatUint(ix.seq.Add(1), 36), peer: peer,
		in: make(chan *nats.Msg, inboxDepth), ackWake: make(chan struct{}, 1),
		ready: make(chan struct{}), heard: make(chan struct{}, 1), dead: make(chan struct{})}
	ix.mu.Lock()
	ix.links[l.inbox] = l
	ix.mu.Unlock()
	return l
}

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
	if m.Header.Get("Status") != noResponders { // NATS saying nobody took a message is not the peer
		select {
		case l.heard <- struct{}{}:
		default:
		}
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
		l.ix.mu.Lock()
		delete(l.ix.links, l.inbox)
		l.ix.mu.Unlock()
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
	m := &nats.Msg{Subject: peer, Header: hdr, Data: data}
	if kind != kindPing && kind != kindAck {
		// Only what the other side reads names this side's inbox (a ping to a side that is
		// gone must not come back as NATS's no-responders answer, which would look like life).
		m.Reply = l.inbox
		l.spoke.Store(true)
	}
	return l.nc.PublishMsg(m)
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
