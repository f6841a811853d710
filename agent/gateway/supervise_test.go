package gateway

import (
	"encoding/binary"
	"testing"
	"time"
)

// yamuxFrame encodes one yamux frame header, with payload for a data frame.
func yamuxFrame(typ byte, flags uint16, id uint32, payload []byte, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:], flags)
	binary.BigEndian.PutUint32(h[4:], id)
	if typ == yamuxTypeData {
		length = uint32(len(payload))
	}
	binary.BigEndian.PutUint32(h[8:], length)
	return append(h, payload...)
}

// TestStreamWatch: a stream opened by the edge (SYN on a data or window-update frame) is
// seen however the bytes are split across reads; ACKs, pings with SYN, and payload bytes that
// look like a SYN header are not.
func TestStreamWatch(t *testing.T) {
	synLookalike := yamuxFrame(yamuxTypeWindowUpd, yamuxFlagSYN, 2, nil, 0) // inside a payload
	const ack, fin = 2, 4
	benign := concat(
		yamuxFrame(yamuxTypeWindowUpd, ack, 1, nil, 1<<20),
		yamuxFrame(yamuxTypeData, 0, 1, append(synLookalike, make([]byte, 5000)...), 0),
		yamuxFrame(2 /* ping */, yamuxFlagSYN, 0, nil, 7),
		yamuxFrame(yamuxTypeData, fin, 1, nil, 0),
		yamuxFrame(3 /* go away */, 0, 0, nil, 0),
	)
	for _, tc := range []struct {
		name   string
		stream []byte
		opened bool
	}{
		{"benign", benign, false},
		{"data SYN", concat(benign, yamuxFrame(yamuxTypeData, yamuxFlagSYN, 2, []byte("hi"), 0)), true},
		{"window update SYN", concat(benign, yamuxFrame(yamuxTypeWindowUpd, yamuxFlagSYN, 4, nil, 0)), true},
	} {
		for _, chunk := range []int{1, 3, 11, 12, 13, 4096, len(tc.stream)} {
			w := newStreamWatch(nil)
			for b := tc.stream; len(b) > 0; {
				n := min(chunk, len(b))
				w.scan(b[:n])
				b = b[n:]
			}
			select {
			case <-w.opened:
				if !tc.opened {
					t.Errorf("%s, reads of %d: stream reported opened", tc.name, chunk)
				}
			default:
				if tc.opened {
					t.Errorf("%s, reads of %d: stream opened by the edge not seen", tc.name, chunk)
				}
			}
		}
	}
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestScheduledPullsBounded: with maxScheduledPulls running, a due pull starts no goroutine
// and looks again within 1.5 s.
func TestScheduledPullsBounded(t *testing.T) {
	g := &Gateway{inv: newInventoryStore()}
	for range maxScheduledPulls {
		g.inv.pulling <- struct{}{}
	}
	s := &pullSchedule{g: g, timer: time.NewTimer(time.Hour), done: make(chan struct{}, 1)}
	defer s.timer.Stop()
	s.due() // would panic in pullInventory if it started one: g has no keys nor registry
	select {
	case <-s.timer.C:
	case <-time.After(3 * time.Second):
		t.Fatal("due pull not rescheduled within 1.5 s")
	}
	if len(g.inv.pulling) != maxScheduledPulls || len(s.done) != 0 {
		t.Fatalf("pulling %d, done %d", len(g.inv.pulling), len(s.done))
	}
}
