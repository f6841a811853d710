package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// FrameType says what a frame's payload is.
type FrameType byte

// Frame types. Values are part of the wire format: never renumber them.
const (
	FrameRequest FrameType = 1 // gateway → edge: JSON Request, first frame of every stream
	FrameData    FrameType = 2 // raw bytes: stdin or file content; an empty one ends the body
	FrameStdout  FrameType = 3 // edge → gateway: process standard output
	FrameStderr  FrameType = 4 // edge → gateway: process standard error
	FrameResult  FrameType = 5 // edge → gateway: JSON Response, last frame of every stream
	FrameCancel  FrameType = 6 // gateway → edge: stop the work (empty payload)
	// FrameDigest (protocol 2) ends an upload body that announced sha256_trailer, in place of
	// the empty FrameData: its payload is the body's SHA-256 in lower-case hex.
	FrameDigest FrameType = 7
)

// Size bounds. A frame above its bound is a protocol error, never an allocation.
const (
	MaxJSONFrame = 1 << 20   // request and result frames
	MaxDataFrame = 256 << 10 // data, stdout and stderr frames
	headerLen    = 5
)

// ErrFrameTooLarge reports a frame whose declared length exceeds the bound of its type.
var ErrFrameTooLarge = errors.New("protocol: frame too large")

// ErrUnknownFrame reports a frame type this version does not define.
var ErrUnknownFrame = errors.New("protocol: unknown frame type")

func (t FrameType) String() string {
	switch t {
	case FrameRequest:
		return "request"
	case FrameData:
		return "data"
	case FrameStdout:
		return "stdout"
	case FrameStderr:
		return "stderr"
	case FrameResult:
		return "result"
	case FrameCancel:
		return "cancel"
	case FrameDigest:
		return "digest"
	}
	return fmt.Sprintf("frame(%d)", byte(t))
}

// maxLen is the largest payload a frame of type t may carry, or -1 for an unknown type.
func (t FrameType) maxLen() int {
	switch t {
	case FrameRequest, FrameResult:
		return MaxJSONFrame
	case FrameData, FrameStdout, FrameStderr:
		return MaxDataFrame
	case FrameCancel:
		return 0
	case FrameDigest:
		return 64
	}
	return -1
}

// WriteFrame writes one frame. Payloads larger than MaxDataFrame for data-like types must be
// split by the caller (see DataWriter).
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	max := t.maxLen()
	if max < 0 {
		return fmt.Errorf("%w: %d", ErrUnknownFrame, byte(t))
	}
	if len(payload) > max {
		return fmt.Errorf("%w: %s frame of %d bytes (max %d)", ErrFrameTooLarge, t, len(payload), max)
	}
	var hdr [headerLen]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if len(payload) == 0 {
		_, err := w.Write(hdr[:])
		return err
	}
	// One write per frame: yamux turns every Write into a frame of its own.
	buf := make([]byte, headerLen+len(payload))
	copy(buf, hdr[:])
	copy(buf[headerLen:], payload)
	_, err := w.Write(buf)
	return err
}

// Reader reads frames from a stream, reusing one buffer for data frames.
type Reader struct {
	r   io.Reader
	hdr [headerLen]byte
	buf []byte
}

// NewReader returns a frame reader over r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next reads one frame. The payload is valid until the next call. It returns io.EOF only on
// a clean end between frames, io.ErrUnexpectedEOF inside one.
func (fr *Reader) Next() (FrameType, []byte, error) { return fr.NextInto(nil) }

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// DataWriter is an io.Writer that sends what it is given as frames of type T, split at
// MaxDataFrame. It lets io.Copy stream a body or process output onto a stream.
type DataWriter struct {
	W io.Writer
	T FrameType
}

// Write sends p as one or more frames.
func (d DataWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), MaxDataFrame)
		if err := WriteFrame(d.W, d.T, p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}
