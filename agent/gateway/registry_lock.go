package gateway

import (
	"strings"
	"sync"
	"time"
)

// registry holds the connected edges, keyed by key fingerprint, with unique names.
//
// One mutex guards it: the three maps and the name of every edge in them (a bound name can
// take a connected edge's name over, renaming it). Every method below takes it for the whole
// of one change, so that byFP and byName always agree; Gateway.Edges takes it to read the
// maps in one go; pickName and status run with it held. Under it the registry only takes
// the key store's read lock (boundTo), never the other way round: the key store tells of
// changes outside its locks. Nothing that can block (closing a connection, writing the audit
// log) happens under it: closeKeys closes after unlocking, add hands the stale session back
// for its caller to close.
type registry struct {
	mu     sync.Mutex
	byFP   map[string]*edge
	byName map[string]*edge
	seen   map[string]seenRecord // fingerprint → last connection, for keys still authorized
}

func newRegistry() *registry {
	return &registry{byFP: map[string]*edge{}, byName: map[string]*edge{}, seen: map[string]seenRecord{}}
}

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
