package gateway

import (
	"math/rand/v2"
	"net/netip"
	"sync"
)

// StartupLimits is OpenSSH's MaxStartups start:rate:full for the gateway: once Start
// connections are unauthenticated at once (accepted, and neither authenticated nor closed
// yet), a new one is dropped with probability Rate percent, rising linearly to 100 % at
// Full. Dropping early and at random, rather than only once full, keeps a flood of
// connections from holding every place while most honest edges still get in on a retry.
type StartupLimits struct {
	Start, Rate, Full int
}

// Default StartupLimits: a reconnect storm of 10,000 edges queues for handshake slots
// (defaultAdmissionWait) rather than being dropped; random drop begins beyond it (at 4096,
// the start before 2026-12-03, the storm lost edges to the drop and their backoff: 10,000
// edges back in 30-35 s instead of 11.5 s, docs/BENCHMARKS-SCALE.md). The peers
// in a flood that are silent cost only a goroutine and a socket until the version deadline
// (Config.KexTimeout): they never hold a handshake slot.
const (
	defaultStartupsStart = 12288
	defaultStartupsRate  = 30
	defaultStartupsFull  = 16384
)

// Why startupGate.enter dropped a connection.
const (
	dropNone      = ""
	dropPerSource = "too many unauthenticated connections from this source (PerSourceMaxStartups)"
	dropFull      = "too many unauthenticated connections (MaxStartups full)"
	dropRandom    = "early random drop: many unauthenticated connections (MaxStartups)"
)

// startupGate counts the unauthenticated connections, in all and per source (sourcePrefix),
// as OpenSSH's MaxStartups and PerSourceMaxStartups do.
type startupGate struct {
	mu        sync.Mutex
	total     int
	bySource  map[netip.Prefix]int
	perSource int
	limits    StartupLimits
	rnd       func(n int) int // uniform in [0, n): rand.N; tests replace it
}

func newStartupGate(perSource int, l StartupLimits) *startupGate {
	return &startupGate{bySource: map[netip.Prefix]int{}, perSource: perSource, limits: l, rnd: rand.N[int]}
}

// enter counts a new connection from src, or reports why it is dropped.
func (s *startupGate) enter(src netip.Prefix) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bySource[src] >= s.perSource {
		return dropPerSource
	}
	if why := s.randomDrop(); why != dropNone {
		return why
	}
	s.total++
	s.bySource[src]++
	return dropNone
}

// randomDrop applies the MaxStartups rule to one more connection. Called with mu held.
func (s *startupGate) randomDrop() string {
	l := s.limits
	switch {
	case s.total >= l.Full:
		return dropFull
	case s.total < l.Start:
		return dropNone
	}
	p := l.Rate + (100-l.Rate)*(s.total-l.Start)/max(l.Full-l.Start, 1)
	if s.rnd(100) < p {
		return dropRandom
	}
	return dropNone
}

// leave uncounts a connection from src that entered.
func (s *startupGate) leave(src netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.bySource[src]--; s.bySource[src] <= 0 {
		delete(s.bySource, src)
	}
}

// counts reports the unauthenticated connections in all and from src.
func (s *startupGate) counts(src netip.Prefix) (total, fromSrc int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, s.bySource[src]
}
