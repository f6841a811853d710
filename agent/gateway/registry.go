package gateway

import (
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// edge is one connected edge: its identity, what it said in its Hello, and the tunnel.
type edge struct {
	fp      string
	hello   protocol.Hello
	remote  string
	since   time.Time
	conn    ssh.Conn
	sess    *yamux.Session
	streams *streamWatch  // what sess reads: tells when the edge opens a stream
	slots   chan struct{} // one token per RPC running on the edge (Hello.MaxConcurrent)
	waiting atomic.Int64  // calls queued for a slot
	running atomic.Int64  // calls holding a slot

	lastSeen  atomic.Int64 // unix nanoseconds
	name      string       // guarded by registry.mu (a bound name can take it over)
	closeOnce sync.Once
}

func newEdge(fp string, hello protocol.Hello, conn ssh.Conn, sess *yamux.Session, streams *streamWatch) *edge {
	now := time.Now()
	e := &edge{
		fp: fp, hello: hello, remote: conn.RemoteAddr().String(), since: now, conn: conn, sess: sess, streams: streams,
		slots: make(chan struct{}, hello.MaxConcurrent),
	}
	e.lastSeen.Store(now.UnixNano())
	return e
}

// touch records that the edge proved to be alive.
func (e *edge) touch() { e.lastSeen.Store(time.Now().UnixNano()) }

// gone is closed once the tunnel is down: calls waiting on it return ErrDisconnected.
func (e *edge) gone() <-chan struct{} { return e.sess.CloseChan() }

// close tears the tunnel and the SSH connection down; safe to call many times.
func (e *edge) close() {
	e.closeOnce.Do(func() {
		// The connection first: yamux's Close waits for its reader, which only a closed
		// connection ends when the peer is frozen or gone without a word (a half-open TCP
		// connection), and a caller of close would wait with it.
		e.conn.Close()
		e.sess.Close()
	})
}

// seenRecord keeps what a gone edge last showed, for get_status of offline edges.
type seenRecord struct {
	name     string
	hello    protocol.Hello
	remote   string
	lastSeen time.Time
}

// boundFunc reports the fingerprint a name is bound to in authorized_keys, or "".
type boundFunc func(name string) string

// pickName names an edge whose key has no bound name: the requested name if valid and free
// (not used by a connected edge nor bound to another key), else `<name>-<fingerprint prefix>`,
// with "edge" as the base for an invalid request; names never collide. Callers hold r.mu.
// avoid is a name that must not be chosen (being taken over).
func (r *registry) pickName(requested, fp string, boundTo boundFunc, avoid string) string {
	free := func(n string) bool {
		if n == avoid || r.byName[n] != nil {
			return false
		}
		b := boundTo(n)
		return b == "" || b == fp
	}
	base := strings.ToLower(strings.TrimSpace(requested))
	if protocol.ValidName(base) {
		if free(base) {
			return base
		}
	} else {
		base = "edge"
	}
	id := fpID(fp)
	for _, n := range []int{8, 12, 16, 24, len(id)} {
		suffix := id[:min(n, len(id))]
		cand := base[:min(len(base), protocol.MaxNameLen-1-len(suffix))] + "-" + suffix
		if free(cand) {
			return cand
		}
	}
	for i := 2; ; i++ { // only reachable with colliding fingerprint prefixes
		suffix := id[:min(8, len(id))] + "-" + strconv.Itoa(i)
		cand := base[:min(len(base), protocol.MaxNameLen-1-len(suffix))] + "-" + suffix
		if free(cand) {
			return cand
		}
	}
}

// fpID is the fingerprint's base64 part, lower-cased, with '+' and '/' mapped to '-' and '_'
// so that it fits a name.
func fpID(fp string) string {
	s := strings.ToLower(strings.TrimPrefix(fp, "SHA256:"))
	return strings.NewReplacer("+", "-", "/", "_").Replace(s)
}

// status describes a connected edge; labels are the ones bound to its key now. Callers hold
// r.mu (it reads the edge's name).
func (r *registry) status(e *edge, labels map[string]string) EdgeStatus {
	return EdgeStatus{
		Name:           e.name,
		Fingerprint:    e.fp,
		Connected:      true,
		Labels:         cloneLabels(labels),
		ReportedLabels: cloneLabels(e.hello.Labels),
		RemoteAddr:     e.remote,
		ConnectedSince: e.since,
		LastSeen:       time.Unix(0, e.lastSeen.Load()),
		EdgeVersion:    e.hello.Version,
		OS:             e.hello.OS,
		Arch:           e.hello.Arch,
		InFlight:       int(e.running.Load() + e.waiting.Load()),
		Kind:           KindCompanion,
	}
}

func cloneLabels(l map[string]string) map[string]string {
	if l == nil {
		return map[string]string{}
	}
	return maps.Clone(l)
}
