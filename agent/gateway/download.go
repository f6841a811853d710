package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Download implements Edge: it streams the file into w as it arrives (memory does not grow
// with the file) and checks the SHA-256 of what arrived against the edge's.
func (h *handle) Download(ctx context.Context, rid string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error) {
	var res protocol.DownloadResult
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("download: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cw := &checkedWriter{w: w}
	onFrame := func(t protocol.FrameType, b []byte) {
		if t != protocol.FrameData || cw.err != nil {
			return
		}
		if cw.n+int64(len(b)) > p.MaxBytes {
			cw.err = errors.New("the edge sent more than max_bytes")
		} else {
			cw.write(b)
		}
		if cw.err != nil {
			cancel(cw.err)
		}
	}
	payload, err := h.g.call(ctx, h, rpc{id: rid, method: protocol.MethodDownload, params: p, onFrame: onFrame})
	if cw.err != nil {
		return res, fmt.Errorf("download of %s: %w", p.Path, cw.err)
	}
	if err != nil {
		return res, err
	}
	if err := protocol.DecodeResponse(payload, &res); err != nil {
		return res, err
	}
	if res.Sent != cw.n || res.SHA256 != cw.sum() {
		return res, fmt.Errorf("download of %s: received %d bytes with SHA-256 %s, the edge sent %d with %s",
			p.Path, cw.n, cw.sum(), res.Sent, res.SHA256)
	}
	return res, nil
}
