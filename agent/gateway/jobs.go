package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// EdgeName resolves ref (a name or SHA256 fingerprint) to the connected edge's name, the
// name a job_id carries.
func (g *Gateway) EdgeName(ref string) (string, error) {
	e, err := g.resolve(ref)
	if err != nil {
		return "", err
	}
	return g.reg.nameOf(e), nil
}

// JobStart starts a detached job on edge; the edge's journal keeps it past this call.
func (g *Gateway) JobStart(ctx context.Context, edge string, p protocol.JobStartParams) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("job_start: %w", err)
	}
	return res, g.simple(ctx, edge, protocol.MethodJobStart, p, &res)
}

// JobGet reads a job's state and output from p.Since.
func (g *Gateway) JobGet(ctx context.Context, edge string, p protocol.JobGetParams) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("job_get: %w", err)
	}
	return res, g.simple(ctx, edge, protocol.MethodJobGet, p, &res)
}

// JobCancel kills a running job's process group.
func (g *Gateway) JobCancel(ctx context.Context, edge, id string) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	return res, g.simple(ctx, edge, protocol.MethodJobCancel, protocol.JobRef{ID: id}, &res)
}

// JobList lists the jobs an edge keeps, newest first.
func (g *Gateway) JobList(ctx context.Context, edge string) (protocol.JobList, error) {
	var res protocol.JobList
	return res, g.simple(ctx, edge, protocol.MethodJobList, struct{}{}, &res)
}

// Download streams up to p.MaxBytes of a file on edge into w (memory does not grow with the
// file) and checks the SHA-256 of what arrived against the edge's.
func (g *Gateway) Download(ctx context.Context, edge string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error) {
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
	payload, err := g.call(ctx, edge, protocol.MethodDownload, p, nil, onFrame)
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

// simple runs an RPC without a body or streamed frames.
func (g *Gateway) simple(ctx context.Context, edge, method string, params, res any) error {
	payload, err := g.call(ctx, edge, method, params, nil, nil)
	if err != nil {
		return err
	}
	return protocol.DecodeResponse(payload, res)
}
