package gateway

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// maxEdgeRef bounds a name or fingerprint given to Edge.
const maxEdgeRef = 128

// Edge resolves ref (a name, case-insensitive, or a SHA256 fingerprint) to a known or
// connected edge. A known edge that is offline resolves too: its RPCs fail with
// ErrEdgeOffline, and the caller can still name it, check its labels and audit the attempt.
// An agentless key whose tunnel is up resolves to the edge its AgentlessServer serves.
// A ref that names no edge is counted as an RPC of method "resolve" with outcome
// unknown_edge.
func (g *Gateway) Edge(ref string) (Edge, error) {
	ref = strings.TrimSpace(ref)
	if e, ok := g.agentlessEdge(ref); ok {
		return e, nil
	}
	h, err := g.lookup(ref)
	if err != nil {
		g.cfg.Metrics.RPC("resolve", OutcomeUnknownEdge, 0, 0, 0)
		return nil, err
	}
	return h, nil
}

// Knows reports whether ref names a known or connected edge of this gateway, as Edge would
// resolve it, without counting a miss: for a fleet that asks several places.
func (g *Gateway) Knows(ref string) bool {
	_, err := g.lookup(strings.TrimSpace(ref))
	return err == nil
}

// lookup is Edge without the metric.
func (g *Gateway) lookup(ref string) (*handle, error) {
	switch {
	case ref == "":
		return nil, fmt.Errorf("%w: no edge given (use a name or SHA256:… fingerprint from get_status)", ErrUnknownEdge)
	case len(ref) > maxEdgeRef:
		return nil, fmt.Errorf("%w: %.64q…", ErrUnknownEdge, ref)
	}
	if e := g.reg.get(ref); e != nil {
		return g.handleOf(e.fp, g.reg.nameOf(e)), nil
	}
	lower := strings.ToLower(ref)
	set := g.keys.snapshot()
	if fp := set.byName[lower]; fp != "" {
		return g.handleOf(fp, lower), nil
	}
	// Offline edges whose name is not bound (shown under the name they last used), and keys
	// given by fingerprint: the listing knows the name get_status shows.
	for _, st := range g.Edges(false) {
		if st.Fingerprint == ref || st.Name != "" && st.Name == lower {
			return g.handleOf(st.Fingerprint, st.Name), nil
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownEdge, ref)
}

// handleOf builds the handle of the key fp, known to the caller under name ("" for an
// offline key that never had one: the fingerprint stands for it).
func (g *Gateway) handleOf(fp, name string) *handle {
	h := &handle{g: g, fp: fp, name: name, labels: map[string]string{}}
	if h.name == "" {
		h.name = fp
	}
	if k := g.keys.lookup(fp); k != nil {
		h.labels = cloneLabels(k.labels)
	}
	return h
}

// handle is the Edge of an edge that runs the companion and keeps a tunnel to this gateway.
type handle struct {
	g      *Gateway
	fp     string
	name   string
	labels map[string]string
}

var _ Edge = (*handle)(nil)

func (h *handle) Name() string              { return h.name }
func (h *handle) Fingerprint() string       { return h.fp }
func (h *handle) Labels() map[string]string { return h.labels }
func (h *handle) Connected() bool           { return h.g.reg.get(h.fp) != nil }

// tunnel is the edge's live connection, looked up by key for each RPC.
func (h *handle) tunnel() (*edge, error) {
	if e := h.g.reg.get(h.fp); e != nil {
		return e, nil
	}
	if h.name == h.fp {
		return nil, fmt.Errorf("%w: %s", ErrEdgeOffline, h.fp)
	}
	return nil, fmt.Errorf("%w: %s (%s)", ErrEdgeOffline, h.name, h.fp)
}

// Exec implements Edge.
func (h *handle) Exec(ctx context.Context, rid string, p protocol.ExecParams, stdin io.Reader,
	out func(t protocol.FrameType, b []byte)) (protocol.ExecResult, error) {
	p.Stdin = stdin != nil
	var res protocol.ExecResult
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("exec: %w", err)
	}
	onFrame := func(t protocol.FrameType, b []byte) {
		if out != nil && (t == protocol.FrameStdout || t == protocol.FrameStderr) {
			out(t, b)
		}
	}
	payload, err := h.g.call(ctx, h, rpc{id: rid, method: protocol.MethodExec, params: p, body: stdin, onFrame: onFrame})
	if err != nil {
		return res, err
	}
	return res, protocol.DecodeResponse(payload, &res)
}

// DeviceInfo implements Edge: the copy the gateway keeps (no round trip), or, with refresh or
// before the first pull, one collected anew by the edge (refresh also re-runs its slow
// probes). Labels are the ones bound to the key now.
func (h *handle) DeviceInfo(ctx context.Context, rid string, refresh bool) (protocol.DeviceInfo, error) {
	d, ok := protocol.DeviceInfo{}, false
	if _, err := h.tunnel(); err != nil {
		return d, err
	}
	var err error
	if !refresh {
		if d, ok, err = h.g.inv.get(h.fp); err != nil {
			h.g.log.Warn("stored inventory unreadable: asking the edge", "fingerprint", h.fp, "err", err)
		}
	}
	if !ok {
		if d, err = h.g.pull(ctx, h, rid, refresh); err != nil {
			return d, err
		}
	}
	d.Normalize()
	d.Edge = h.name
	d.Labels = cloneLabels(h.labels)
	return d, nil
}

// JobStart implements Edge.
func (h *handle) JobStart(ctx context.Context, rid string, p protocol.JobStartParams) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("job_start: %w", err)
	}
	return res, h.simple(ctx, rid, protocol.MethodJobStart, p, &res)
}

// JobGet implements Edge.
func (h *handle) JobGet(ctx context.Context, rid string, p protocol.JobGetParams) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("job_get: %w", err)
	}
	return res, h.simple(ctx, rid, protocol.MethodJobGet, p, &res)
}

// JobCancel implements Edge.
func (h *handle) JobCancel(ctx context.Context, rid, id string) (protocol.JobStatus, error) {
	var res protocol.JobStatus
	return res, h.simple(ctx, rid, protocol.MethodJobCancel, protocol.JobRef{ID: id}, &res)
}

// JobList implements Edge.
func (h *handle) JobList(ctx context.Context, rid string) (protocol.JobList, error) {
	var res protocol.JobList
	return res, h.simple(ctx, rid, protocol.MethodJobList, struct{}{}, &res)
}

// simple runs an RPC without a body or streamed frames and decodes its result into res.
func (h *handle) simple(ctx context.Context, rid, method string, params, res any) error {
	payload, err := h.g.call(ctx, h, rpc{id: rid, method: method, params: params})
	if err != nil {
		return err
	}
	return protocol.DecodeResponse(payload, res)
}
