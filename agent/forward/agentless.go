package forward

import (
	"context"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// ServeAgentless serves one agentless device (SPEC §9) the way a forward edge is served: the
// same client key, host key pinning, keepalives, redials with backoff, session limits, exec,
// SFTP and the inventory probe, but each connection is dialled through the device's own
// reverse tunnel (t.Dial: a forwarded-tcpip channel) instead of TCP. It returns at once; the
// edge is served until ctx ends (the device's connection closed) or Close is called, which
// waits for it. It is a gateway.AgentlessServer: wire it with
// gw.SetAgentlessServer(fleet.ServeAgentless). The edge is not one of the Fleet's hosts: the
// gateway lists and resolves it (kind agentless).
func (f *Fleet) ServeAgentless(ctx context.Context, t *gateway.AgentlessTunnel) gateway.AgentlessEdge {
	e := Entry{
		Name:        t.Name,
		Address:     t.RemoteAddr,
		User:        t.User,
		Labels:      cloneLabels(t.Labels),
		HostKey:     t.HostKey,
		Fingerprint: t.HostKeyFingerprint,
		Dial:        t.Dial,
		Kind:        gateway.KindAgentless,
		ID:          t.Fingerprint,
		PinSource:   "the key's agentless line in authorized_keys",
	}
	h := newHost(f, e)
	h.start(ctx)
	return &agentlessEdge{Edge: &Edge{h: h, labels: cloneLabels(t.Labels)}}
}

// agentlessEdge is an agentless device served over its reverse tunnel.
type agentlessEdge struct{ *Edge }

var _ gateway.AgentlessEdge = (*agentlessEdge)(nil)

// Status is the edge's get_status line (the gateway overrides name and labels with its key's).
func (a *agentlessEdge) Status() gateway.EdgeStatus {
	st := a.h.status()
	if !st.Connected {
		a.h.mu.Lock()
		if a.h.lastErr == "" {
			st.Problem = "reverse tunnel open; logging in to the device's sshd"
		}
		a.h.mu.Unlock()
	}
	return st
}

// Inventory is the summary of the last device info probed, or nil before the first.
func (a *agentlessEdge) Inventory() *gateway.InventorySummary {
	a.h.mu.Lock()
	defer a.h.mu.Unlock()
	if a.h.info == nil {
		return nil
	}
	s := summarize(a.h.info, a.h.infoAt)
	return &s
}

// Close stops serving the device and waits until its connection loop has ended.
func (a *agentlessEdge) Close() { a.h.stopHost() }
