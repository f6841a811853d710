package protocol

import (
	"bytes"
	"errors"
	"testing"
)

// TestNextInto: a data frame that fits goes into the caller's buffer; other frames, and a data
// frame larger than the buffer, into the reader's own, as with Next.
func TestNextInto(t *testing.T) {
	var wire bytes.Buffer
	WriteFrame(&wire, FrameData, []byte("hello"))
	WriteFrame(&wire, FrameDigest, []byte("abc"))
	WriteFrame(&wire, FrameData, []byte("too long for buf"))
	WriteFrame(&wire, FrameData, nil)
	fr := NewReader(&wire)
	buf := make([]byte, 8)
	for i, want := range []struct {
		t       FrameType
		p       string
		inBuf   bool
		checked bool
	}{{FrameData, "hello", true, true}, {FrameDigest, "abc", false, true}, {FrameData, "too long for buf", false, true}, {FrameData, "", false, false}} {
		typ, p, err := fr.NextInto(buf)
		if err != nil || typ != want.t || string(p) != want.p {
			t.Fatalf("frame %d: %s %q %v, want %s %q", i, typ, p, err, want.t, want.p)
		}
		if inBuf := len(p) > 0 && &p[0] == &buf[0]; want.checked && inBuf != want.inBuf {
			t.Errorf("frame %d: payload in the caller's buffer %v, want %v", i, inBuf, want.inBuf)
		}
	}
}

// TestPutFrameHeader: the header matches WriteFrame's, and bounds are enforced.
func TestPutFrameHeader(t *testing.T) {
	payload := []byte("some data")
	b := make([]byte, FrameHeaderLen+len(payload))
	copy(b[FrameHeaderLen:], payload)
	if err := PutFrameHeader(b, FrameData, len(payload)); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	WriteFrame(&want, FrameData, payload)
	if !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("frame %x, want %x", b, want.Bytes())
	}
	if err := PutFrameHeader(b, FrameData, MaxDataFrame+1); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized: %v", err)
	}
	if err := PutFrameHeader(b, FrameType(99), 1); !errors.Is(err, ErrUnknownFrame) {
		t.Errorf("unknown type: %v", err)
	}
	if err := PutFrameHeader(b[:3], FrameData, 1); err == nil {
		t.Error("short buffer accepted")
	}
}
