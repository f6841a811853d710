package gateway

import (
	"context"
	"encoding/binary"
	"log/slog"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// supervise is the rest of an edge connection's life, in the connection's own goroutine: it
// answers the edge's requests (all refused), refuses further channels, probes the edge every
// KeepaliveInterval (protocol.Prober: the tunnel is closed once no probe was answered for
// three intervals), pulls the edge's inventory (pullSchedule) and closes the tunnel when the
// edge opens a stream (streamWatch), which it then reports. It returns when the tunnel is
// down or must be closed.
func (g *Gateway) supervise(ctx context.Context, c *sshConn, e *edge, log *slog.Logger) (streamOpened bool) {
	alive := protocol.NewProber(e.conn, g.cfg.KeepaliveInterval, g.wg.Go)
	defer alive.Stop()
	pulls := g.newPullSchedule(ctx, e, log)
	defer pulls.timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-e.gone():
			return false
		case <-e.streams.opened:
			log.Warn("edge opened a stream (protocol violation): closing its tunnel")
			return true
		case r, ok := <-c.reqs:
			if !serveRequest(r, ok) {
				c.reqs = nil
				return false // the connection ended
			}
		case r, ok := <-c.chReqs:
			if !serveRequest(r, ok) {
				c.chReqs = nil
				return false
			}
		case nch, ok := <-c.chans:
			if !ok {
				c.chans = nil
				return false
			}
			nch.Reject(ssh.Prohibited, "only one mcp tunnel per connection")
		case <-alive.C():
			if err := alive.Tick(); err != nil {
				log.Warn("edge dropped: keepalives unanswered", "missed", protocol.MaxMissedKeepalives,
					"interval", g.cfg.KeepaliveInterval, "err", err)
				return false
			}
		case err := <-alive.Replies():
			if alive.Answered(err) == nil {
				e.touch()
			}
		case <-pulls.timer.C:
			pulls.due()
		case <-pulls.done:
			pulls.finished()
		}
	}
}

// pullSchedule is when supervise pulls an edge's inventory: the first pull within a second of
// connect, put off while a connect storm lasts (deferFirstPull), then every inventoryWait,
// one pull at a time. It costs no goroutine between pulls.
type pullSchedule struct {
	g     *Gateway
	ctx   context.Context
	e     *edge
	log   *slog.Logger
	timer *time.Timer
	first bool          // the first pull is still to come
	done  chan struct{} // one slot: a pull never blocks once supervise returned
}

func (g *Gateway) newPullSchedule(ctx context.Context, e *edge, log *slog.Logger) *pullSchedule {
	return &pullSchedule{g: g, ctx: ctx, e: e, log: log, timer: time.NewTimer(g.inventoryWait(true)),
		first: true, done: make(chan struct{}, 1)}
}

// due starts the pull the timer fired for, unless a connect storm puts the first one off or
// maxScheduledPulls are running already.
func (s *pullSchedule) due() {
	if s.first && s.g.deferFirstPull(s.e.since) {
		// Look again in 1–2 s: few wake-ups while thousands of edges wait, and their pulls
		// spread over a second or more once the storm is over.
		s.timer.Reset(time.Second + s.g.inventoryWait(true))
		return
	}
	select {
	case s.g.inv.pulling <- struct{}{}:
	default:
		// maxScheduledPulls are running (the first pulls after a reconnect storm): look
		// again in 0.5–1.5 s rather than start one more goroutine that waits.
		s.timer.Reset(time.Second/2 + s.g.inventoryWait(true))
		return
	}
	s.first = false
	s.g.wg.Go(func() {
		defer func() { <-s.g.inv.pulling }()
		if _, err := s.g.pullInventory(s.ctx, s.e.fp, false); err != nil {
			s.log.Debug("inventory pull failed", "err", err)
		}
		s.done <- struct{}{}
	})
}

// finished schedules the next pull once one has ended (none for a negative
// InventoryInterval).
func (s *pullSchedule) finished() {
	if wait := s.g.inventoryWait(false); wait > 0 {
		s.timer.Reset(wait)
	}
}

// Frame layout of yamux v0.1.2 (its spec.md): a 12-byte header (version, type, flags, stream
// ID, length), big-endian; a data frame is followed by length bytes of payload.
const (
	yamuxHeaderSize    = 12
	yamuxTypeData      = 0
	yamuxTypeWindowUpd = 1
	yamuxFlagSYN       = 1
	yamuxFlagsOffset   = 2
	yamuxLengthOffset  = 8
)

// streamWatch is the tunnel channel as the gateway's yamux session reads it, watching the
// frames go by for a stream the edge opens (a data or window-update frame with SYN: the
// gateway opens every stream, so the edge only ever ACKs). That is a protocol violation;
// opened is closed at the first one, and supervise closes the tunnel. It replaces a goroutine
// per tunnel blocked in yamux's AcceptStream; the cost is a few comparisons per frame header
// in yamux's receive loop, the only reader.
type streamWatch struct {
	ssh.Channel
	opened chan struct{} // closed at the first stream the edge opens
	hdr    [yamuxHeaderSize]byte
	hdrN   int    // header bytes seen of the current frame
	skip   uint32 // payload bytes of the current data frame still to pass
	seen   bool   // opened is closed
}

func newStreamWatch(ch ssh.Channel) *streamWatch {
	return &streamWatch{Channel: ch, opened: make(chan struct{})}
}

// Read implements io.Reader for yamux and watches what it returns.
func (w *streamWatch) Read(p []byte) (int, error) {
	n, err := w.Channel.Read(p)
	w.scan(p[:n])
	return n, err
}

// scan follows the frame boundaries through b.
func (w *streamWatch) scan(b []byte) {
	for len(b) > 0 {
		if w.skip > 0 {
			k := min(w.skip, uint32(min(len(b), 1<<30)))
			w.skip -= k
			b = b[k:]
			continue
		}
		c := copy(w.hdr[w.hdrN:], b)
		w.hdrN += c
		b = b[c:]
		if w.hdrN < yamuxHeaderSize {
			return
		}
		w.hdrN = 0
		typ := w.hdr[1]
		flags := binary.BigEndian.Uint16(w.hdr[yamuxFlagsOffset:])
		if (typ == yamuxTypeData || typ == yamuxTypeWindowUpd) && flags&yamuxFlagSYN != 0 && !w.seen {
			w.seen = true
			close(w.opened)
		}
		if typ == yamuxTypeData {
			w.skip = binary.BigEndian.Uint32(w.hdr[yamuxLengthOffset:])
		}
	}
}
