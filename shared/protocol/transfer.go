package protocol

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Helpers for bulk transfers that pipeline reading, hashing and writing: the data of a frame
// goes into a buffer the caller owns, so it can hand that buffer to another goroutine (a
// hasher, a file writer) while the next frame is read into another one. The wire format is
// the one of WriteFrame and Reader.

// PutFrameHeader encodes the header of a frame of type t with an n-byte payload into the
// first FrameHeaderLen bytes of dst, which the payload must follow: a sender reads its data
// straight into dst[FrameHeaderLen:] and writes dst[:FrameHeaderLen+n] without another copy.
func PutFrameHeader(dst []byte, t FrameType, n int) error {
	max := t.maxLen()
	if max < 0 {
		return fmt.Errorf("%w: %d", ErrUnknownFrame, byte(t))
	}
	if n < 0 || n > max {
		return fmt.Errorf("%w: %s frame of %d bytes (max %d)", ErrFrameTooLarge, t, n, max)
	}
	if len(dst) < headerLen {
		return fmt.Errorf("protocol: frame header needs %d bytes, buffer has %d", headerLen, len(dst))
	}
	dst[0] = byte(t)
	binary.BigEndian.PutUint32(dst[1:headerLen], uint32(n))
	return nil
}

// NextInto reads one frame like Next, but the payload of a FrameData frame that fits in buf
// is read into buf (and the returned payload aliases it); any other frame's payload is valid
// until the next call, as with Next. A buffer of MaxDataFrame bytes holds every data frame.
func (fr *Reader) NextInto(buf []byte) (FrameType, []byte, error) {
	if _, err := io.ReadFull(fr.r, fr.hdr[:1]); err != nil {
		return 0, nil, err
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[1:]); err != nil {
		return 0, nil, noEOF(err)
	}
	t := FrameType(fr.hdr[0])
	n := binary.BigEndian.Uint32(fr.hdr[1:])
	max := t.maxLen()
	if max < 0 {
		return 0, nil, fmt.Errorf("%w: %d", ErrUnknownFrame, fr.hdr[0])
	}
	if uint64(n) > uint64(max) {
		return 0, nil, fmt.Errorf("%w: %s frame of %d bytes (max %d)", ErrFrameTooLarge, t, n, max)
	}
	var p []byte
	if t == FrameData && n > 0 && uint64(n) <= uint64(len(buf)) {
		p = buf[:n]
	} else {
		if cap(fr.buf) < int(n) {
			fr.buf = make([]byte, n)
		}
		p = fr.buf[:n]
	}
	if _, err := io.ReadFull(fr.r, p); err != nil {
		return 0, nil, noEOF(err)
	}
	return t, p, nil
}
