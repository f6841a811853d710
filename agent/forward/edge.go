package forward

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// CodeUnsupported is the protocol error code of a call a forward edge cannot serve (jobs,
// run_as): the device runs no companion.
const CodeUnsupported = protocol.CodeUnsupported

// Edge is a forward edge resolved for one tool call: a gateway.Edge served over plain SSH
// exec and SFTP. It holds the host's identity (name and pinned host key); each call uses the
// host's live connection, so a call after a reconnect reaches the same device.
type Edge struct {
	h      *host
	labels map[string]string
}

var _ gateway.Edge = (*Edge)(nil)

// Name implements gateway.Edge.
func (e *Edge) Name() string { return e.h.entry.Name }

// Fingerprint implements gateway.Edge: the pinned host key's SHA256 fingerprint (an agentless
// edge's: its authorized key's).
func (e *Edge) Fingerprint() string { return e.h.entry.id() }

// Labels implements gateway.Edge: the labels of the forward edges file, never nil.
func (e *Edge) Labels() map[string]string { return e.labels }

// Connected implements gateway.Edge.
func (e *Edge) Connected() bool { return e.h.connected() }

// Kind is forward.Kind, or gateway.KindAgentless for an agentless edge.
func (e *Edge) Kind() string { return e.h.entry.kind() }

func (e *Edge) noJobs() error {
	return protocol.Errorf(CodeUnsupported,
		"jobs need the mcp-ssh-edge companion on this device: %s is a forward edge reached over plain SSH; use run_command with a larger timeout_seconds instead",
		e.h.entry.Name)
}

// JobStart implements gateway.Edge: forward edges have no job journal.
func (e *Edge) JobStart(context.Context, string, protocol.JobStartParams) (protocol.JobStatus, error) {
	return protocol.JobStatus{}, e.noJobs()
}

// JobGet implements gateway.Edge: forward edges have no job journal.
func (e *Edge) JobGet(context.Context, string, protocol.JobGetParams) (protocol.JobStatus, error) {
	return protocol.JobStatus{}, e.noJobs()
}

// JobCancel implements gateway.Edge: forward edges have no job journal.
func (e *Edge) JobCancel(context.Context, string, string) (protocol.JobStatus, error) {
	return protocol.JobStatus{}, e.noJobs()
}

// JobList implements gateway.Edge: forward edges have no job journal.
func (e *Edge) JobList(context.Context, string) (protocol.JobList, error) {
	return protocol.JobList{}, e.noJobs()
}

// begin finds the live connection and takes a session slot for one call.
func (e *Edge) begin(ctx context.Context) (*conn, func(), error) {
	c, err := e.h.current()
	if err != nil {
		return nil, nil, err
	}
	release, err := e.h.acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	return c, release, nil
}

// lost turns an error met while c was in use into gateway.ErrDisconnected when c is gone.
// A device's own answer (a protocol error other than CodeIO) is returned at once.
func (e *Edge) lost(c *conn, what string, err error) error {
	if pe := (*protocol.Error)(nil); errors.As(err, &pe) && pe.Code != protocol.CodeIO {
		return err
	}
	select {
	case <-c.closed:
	case <-time.After(500 * time.Millisecond): // the reader may see the end before Wait does
		return err
	}
	return fmt.Errorf("%w: %s (forward, %s): SSH connection lost during %s: %v", gateway.ErrDisconnected,
		e.h.entry.Name, e.h.entry.Address, what, err)
}
