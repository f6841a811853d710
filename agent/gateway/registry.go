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
	slots   chan struct{} // one token per RPC running on the edge (Hello.MaxConcurrent)
	waiting atomic.Int64  // calls queued for a slot
	running atomic.Int64  // calls holding a slot

	lastSeen  atomic.Int64 // unix nanoseconds
	name      string       // guarded by registry.mu (a bound name can take it over)
	closeOnce sync.Once
}

func newEdge(fp string, hello protocol.Hello, conn ssh.Conn, sess *yamux.Session) *edge {
	now := time.Now()
	e := &edge{
		fp: fp, hello: hello, remote: conn.RemoteAddr().String(), since: now, conn: conn, sess: sess,
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
		e.sess.Close()
		e.conn.Close()
	})
}

// seenRecord keeps what a gone edge last showed, for get_status of offline edges.
type seenRecord struct {
	name     string
	hello    protocol.Hello
	remote   string
	lastSeen time.Time
}

// registry holds the connected edges, keyed by key fingerprint, with unique names.
type registry struct {
	mu     sync.Mutex
	byFP   map[string]*edge
	byName map[string]*edge
	seen   map[string]seenRecord // fingerprint → last connection, for keys still authorized
}

func newRegistry() *registry {
	return &registry{byFP: map[string]*edge{}, byName: map[string]*edge{}, seen: map[string]seenRecord{}}
}

// boundFunc reports the fingerprint a name is bound to in authorized_keys, or "".
type boundFunc func(name string) string

// add registers e under a unique name and returns the stale session of the same key, if any,
// for the caller to close. A bound name always wins: a connected edge that merely asked for
// it is renamed to its fallback name.
func (r *registry) add(e *edge, bound string, boundTo boundFunc) (evicted *edge) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old := r.byFP[e.fp]; old != nil {
		delete(r.byFP, old.fp)
		delete(r.byName, old.name)
		evicted = old
	}
	if bound != "" {
		if other := r.byName[bound]; other != nil {
			delete(r.byName, bound)
			other.name = r.pickName(other.hello.Name, other.fp, boundTo, bound)
			r.byName[other.name] = other
		}
		e.name = bound
	} else {
		e.name = r.pickName(e.hello.Name, e.fp, boundTo, "")
	}
	r.byFP[e.fp] = e
	r.byName[e.name] = e
	return evicted
}

// pickName implements SPEC §5 for a key without a bound name: the requested name if valid and
// free, else `<name>-<fingerprint prefix>` ("edge" as base for an invalid request). Callers
// hold r.mu. avoid is a name that must not be chosen (being taken over).
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

// remove drops e if it is still the current session of its key and remembers it as seen.
func (r *registry) remove(e *edge) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byFP[e.fp] == e {
		delete(r.byFP, e.fp)
		delete(r.byName, e.name)
	}
	r.seen[e.fp] = seenRecord{name: e.name, hello: e.hello, remote: e.remote, lastSeen: time.Unix(0, e.lastSeen.Load())}
}

// get finds a connected edge by fingerprint or (case-insensitive) name.
func (r *registry) get(ref string) *edge {
	r.mu.Lock()
	defer r.mu.Unlock()
	if strings.HasPrefix(ref, "SHA256:") {
		return r.byFP[ref]
	}
	return r.byName[strings.ToLower(ref)]
}

// nameOf returns e's current name.
func (r *registry) nameOf(e *edge) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return e.name
}

// all returns the connected edges.
func (r *registry) all() []*edge {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*edge, 0, len(r.byFP))
	for _, e := range r.byFP {
		out = append(out, e)
	}
	return out
}

// closeKeys closes the connections of the given fingerprints (keys removed from the file) and
// forgets what was seen of them.
// It returns the names of the edges it closed.
func (r *registry) closeKeys(fps []string) []string {
	r.mu.Lock()
	var closed []*edge
	var names []string
	for _, fp := range fps {
		if e := r.byFP[fp]; e != nil {
			closed = append(closed, e)
			names = append(names, e.name)
		}
		delete(r.seen, fp)
	}
	r.mu.Unlock()
	for _, e := range closed {
		e.close()
	}
	return names
}

// status describes a connected edge; labels are the ones bound to its key now.
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
	}
}

func cloneLabels(l map[string]string) map[string]string {
	if l == nil {
		return map[string]string{}
	}
	return maps.Clone(l)
}
