package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
)

// checkedWriter hashes and counts what it writes; the first write error sticks.
type checkedWriter struct {
	w   io.Writer
	h   hash.Hash
	n   int64
	err error
}

func (c *checkedWriter) write(b []byte) {
	if c.h == nil {
		c.h = sha256.New()
	}
	if _, err := c.w.Write(b); err != nil {
		c.err = err
		return
	}
	c.h.Write(b)
	c.n += int64(len(b))
}

// sum is the lower-case hex SHA-256 of what was written.
func (c *checkedWriter) sum() string {
	if c.h == nil {
		c.h = sha256.New()
	}
	return hex.EncodeToString(c.h.Sum(nil))
}
