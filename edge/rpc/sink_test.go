package rpc

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// TestUploadManyFrames: a body cut into many frames of odd sizes (far more than the frames the
// pipeline holds at once, some of one byte) lands whole and in order, with and without the
// digest trailer.
func TestUploadManyFrames(t *testing.T) {
	h := newHarness(t, Config{})
	dir := t.TempDir()
	body := make([]byte, 3<<20+11)
	rand.Read(body)
	sizes := []int{1, protocol.MaxDataFrame, 7, 4096, 1, protocol.MaxDataFrame - 1, 100_000}
	for _, trailer := range []bool{false, true} {
		path := filepath.Join(dir, "many")
		p := protocol.UploadParams{Path: path, Size: int64(len(body)), Mode: 0o600, Overwrite: true, SHA256Trailer: trailer}
		if !trailer {
			p.SHA256 = sum(body)
		}
		c := h.open(protocol.MethodUpload, p)
		rest := body
		for i := 0; len(rest) > 0; i++ {
			n := min(sizes[i%len(sizes)], len(rest))
			c.send(protocol.FrameData, rest[:n])
			rest = rest[n:]
		}
		if trailer {
			c.send(protocol.FrameDigest, []byte(sum(body)))
		} else {
			c.send(protocol.FrameData, nil)
		}
		var res protocol.UploadResult
		if o := c.wait(&res); o.err != nil || res.SHA256 != sum(body) {
			t.Fatalf("trailer %v: %v, result %+v", trailer, o.err, res)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, body) {
			t.Fatalf("trailer %v: the file differs from the body", trailer)
		}
		noTemps(t, dir)
	}
}

// failingWriter fails every write after the first ok bytes.
type failingWriter struct{ ok int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.ok < len(p) {
		return 0, errors.New("disk full")
	}
	w.ok -= len(p)
	return len(p), nil
}

// TestSinkWriteError: after a failed write the sink hands out no more buffers but the error,
// and finish returns it (once or twice) without waiting forever.
func TestSinkWriteError(t *testing.T) {
	k := newSink(&failingWriter{ok: 2 * protocol.MaxDataFrame})
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		var b []byte
		if b, werr = k.buffer(); werr == nil {
			k.push(b)
		}
	}
	if werr == nil || werr.Error() != "disk full" {
		t.Fatalf("buffer error %v, want disk full", werr)
	}
	for range 2 {
		if _, err := k.finish(); err == nil || err.Error() != "disk full" {
			t.Fatalf("finish error %v, want disk full", err)
		}
	}
}

// TestSinkHash: the digest is the SHA-256 of the chunks in the order they were pushed.
func TestSinkHash(t *testing.T) {
	var out bytes.Buffer
	k := newSink(&out)
	var all []byte
	for i := range 10 {
		b, err := k.buffer()
		if err != nil {
			t.Fatal(err)
		}
		n := copy(b, bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1)))
		all = append(all, b[:n]...)
		k.push(b[:n])
	}
	got, err := k.finish()
	if err != nil || got != sum(all) || !bytes.Equal(out.Bytes(), all) {
		t.Fatalf("finish = %s, %v; want %s and the same bytes written", got, err, sum(all))
	}
}
