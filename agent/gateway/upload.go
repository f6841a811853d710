package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Upload implements Edge: it sends exactly p.Size bytes of body to be written at p.Path, and
// returns what the edge wrote once its size and SHA-256 match what was sent (an edge's word is not
// taken for it). With p.SHA256 empty the body is hashed as it is sent, in one pass, and its
// SHA-256 follows it (protocol 2); an older edge gets the hash first, which needs a body that
// can seek back. A body that is a file (has Stat) must not change while it is sent: a file
// that grew, shrank or was rewritten fails the upload and the edge keeps nothing.
func (h *handle) Upload(ctx context.Context, rid string, p protocol.UploadParams, body io.Reader) (protocol.UploadResult, error) {
	var res protocol.UploadResult
	if body == nil {
		return res, errors.New("upload: no content")
	}
	later := p.SHA256 == ""
	p.SHA256Trailer = later
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("upload: %w", err)
	}
	src := io.LimitReader(body, p.Size)
	var d *digestBody
	if later {
		e, err := h.tunnel()
		if err != nil {
			return res, err
		}
		if e.hello.Protocol >= protocol.VersionDigestTrailer {
			d = &digestBody{r: src, check: UnchangedCheck(body)}
			src = d
		} else if p.SHA256, err = hashAndRewind(body, p.Size); err != nil {
			return res, fmt.Errorf("upload: edge %s speaks protocol %d, which needs the SHA-256 before the content: %w", h.name, e.hello.Protocol, err)
		} else {
			p.SHA256Trailer = false
		}
	}
	payload, err := h.g.call(ctx, h, rpc{id: rid, method: protocol.MethodUpload, params: p, body: src})
	if err != nil {
		return res, err
	}
	if err := protocol.DecodeResponse(payload, &res); err != nil {
		return res, err
	}
	sent := p.SHA256
	if d != nil {
		sent = d.sum
	}
	if res.Size != p.Size || !strings.EqualFold(res.SHA256, sent) {
		return res, fmt.Errorf("upload: edge %s reported %d bytes with SHA-256 %q, but %d bytes with SHA-256 %s were sent", h.name, res.Size, res.SHA256, p.Size, sent)
	}
	res.SHA256 = strings.ToLower(sent)
	return res, nil
}

// digestBody is an upload body the frameWriter hashes as it sends it, then ends with a
// FrameDigest instead of the empty FrameData.
type digestBody struct {
	r     io.Reader
	check func() error // if set, runs after the last byte, before the digest is sent
	sum   string       // the SHA-256 sent, lower-case hex, once send has returned
}

func (d *digestBody) Read(p []byte) (int, error) { return d.r.Read(p) }

// sendDepth is how many body chunks (of protocol.MaxDataFrame bytes) a digestBody upload has
// in flight at once between the sender and the hasher: a bound of about 1 MiB per upload.
const sendDepth = 4

// sendDigestBody sends d as FrameData frames, then its SHA-256 in a FrameDigest. The SHA-256
// (the slowest step, about 1 GB/s even with SHA-NI) runs in a goroutine of its own over the
// very buffers being sent, so reading, hashing and sending proceed at once instead of in
// turn. Each chunk is read straight behind room for its frame header and written as one
// frame, without another copy. A read error or a source that changed is a bodyError.
func (w *frameWriter) sendDigestBody(d *digestBody) error {
	free := make(chan []byte, sendDepth)
	for range sendDepth {
		free <- make([]byte, protocol.FrameHeaderLen+protocol.MaxDataFrame)
	}
	toHash := make(chan []byte, sendDepth)
	h := sha256.New()
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range toHash {
			h.Write(b[protocol.FrameHeaderLen:])
			free <- b[:cap(b)]
		}
	}()
	err := w.pump(bodyReader{d.r}, free, toHash)
	close(toHash)
	<-hashed
	if err != nil {
		return err
	}
	if d.check != nil {
		if err := d.check(); err != nil {
			return bodyError{err}
		}
	}
	d.sum = hex.EncodeToString(h.Sum(nil))
	return w.frame(protocol.FrameDigest, []byte(d.sum))
}

// pump reads r to its end in chunks, each into a buffer from free, passes the chunk to the
// hasher (toHash, which gives the buffer back to free) and writes it as a FrameData frame.
// The hasher only reads the buffer while it is written, and this loop takes a buffer back
// only after the write that used it returned.
func (w *frameWriter) pump(r io.Reader, free <-chan []byte, toHash chan<- []byte) error {
	for {
		b := <-free
		n, err := io.ReadFull(r, b[protocol.FrameHeaderLen:])
		if n > 0 {
			if perr := protocol.PutFrameHeader(b, protocol.FrameData, n); perr != nil {
				return perr
			}
			b = b[:protocol.FrameHeaderLen+n]
			toHash <- b
			if werr := w.encoded(b); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return nil
		case err != nil:
			return err
		}
	}
}

// encoded writes b, one whole encoded frame, unless the writer was stopped (see frame).
func (w *frameWriter) encoded(b []byte) error {
	w.lock <- struct{}{}
	defer func() { <-w.lock }()
	if w.stopped || w.broken {
		return errWriterStopped
	}
	if _, err := w.s.Write(b); err != nil {
		w.broken = true
		return err
	}
	return nil
}

// UnchangedCheck returns a check that the file behind body still has the size and
// modification time it had now, or nil when body is not a file: an upload from a file that
// grew, shrank or was rewritten while it was sent must fail rather than land half old.
func UnchangedCheck(body io.Reader) func() error {
	f, ok := body.(interface{ Stat() (fs.FileInfo, error) })
	if !ok {
		return nil
	}
	before, err := f.Stat()
	if err != nil {
		return nil
	}
	return func() error {
		after, err := f.Stat()
		if err != nil {
			return fmt.Errorf("stat the content: %w", err)
		}
		if after.Size() != before.Size() || !after.ModTime().Equal(before.ModTime()) {
			return fmt.Errorf("the file changed while it was sent (size %d → %d bytes): upload it again once it is complete",
				before.Size(), after.Size())
		}
		return nil
	}
}

// hashAndRewind hashes the next size bytes of body and seeks back to where they start.
func hashAndRewind(body io.Reader, size int64) (string, error) {
	rs, ok := body.(io.ReadSeeker)
	if !ok {
		return "", errors.New("this content cannot be read twice: upgrade mcp-ssh-edge")
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, bodyReader{io.LimitReader(rs, size)}, make([]byte, bodyBuffer))
	if err != nil {
		return "", fmt.Errorf("hash the content: %w", err)
	}
	if n != size {
		return "", fmt.Errorf("the content has %d bytes, not the announced %d", n, size)
	}
	if _, err := rs.Seek(-n, io.SeekCurrent); err != nil {
		return "", fmt.Errorf("rewind the content: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
