package protocol

import (
	"encoding/binary"
	"io"
	"sync"
)

// yamux writes each data frame as two writes, its 12-byte header and then its body, and over
// an SSH channel each write is an SSH packet of its own (encrypted, sent, and waited for).
// Coalesce joins the header of a small data frame with its body into one write: the bytes on
// the wire are the same, in half the packets, which is most of what a short RPC sends.

// Layout of a yamux v0 header (hashicorp/yamux const.go).
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// coalesceMax bounds the bodies joined to their header (requests, results, short output):
	// for larger ones the header's packet is a small part of the cost, and joining would copy.
	coalesceMax = 4 << 10
	// keepMax bounds the buffer a connection keeps between frames (10,000 idle edges each
	// keep one); a larger frame's buffer is dropped after its write.
	keepMax = 512 + yamuxHeaderSize
)

// Coalesce wraps a yamux session's connection so that the header and body of a small data
// frame go out in one Write. It relies on yamux writing from one goroutine (its send loop),
// header then body; every other write passes straight through.
func Coalesce(c io.ReadWriteCloser) io.ReadWriteCloser { return &coalescer{ReadWriteCloser: c} }

type coalescer struct {
	io.ReadWriteCloser
	mu  sync.Mutex
	hdr [yamuxHeaderSize]byte
	n   int    // bytes of the body the held header announces; 0: none held
	buf []byte // header + body of the frame being joined
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n > 0 {
		held := c.n
		c.n = 0
		if len(p) != held {
			// Not the body announced: send the header on its own first, as yamux meant to.
			if _, err := c.ReadWriteCloser.Write(c.hdr[:]); err != nil {
				return 0, err
			}
			return c.ReadWriteCloser.Write(p)
		}
		c.buf = append(append(c.buf[:0], c.hdr[:]...), p...)
		n, err := c.ReadWriteCloser.Write(c.buf)
		if cap(c.buf) > keepMax {
			c.buf = nil
		}
		return max(0, n-yamuxHeaderSize), err
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData {
		if n := binary.BigEndian.Uint32(p[8:12]); n > 0 && n <= coalesceMax {
			copy(c.hdr[:], p)
			c.n = int(n)
			return len(p), nil
		}
	}
	return c.ReadWriteCloser.Write(p)
}
