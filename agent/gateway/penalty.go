package gateway

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Penalties slow down an authorized key that misbehaves, as OpenSSH's PerSourcePenalties do
// for addresses, but per key: the gateway knows which device misbehaved, and a fleet's edges
// often share one NAT address. Every reconnect costs the gateway a key exchange; without a
// penalty a compromised device can make it do hundreds a second.
const (
	// The first penalty: a protocol violation (which no honest edge commits) draws
	// violationFirst, a reconnect after the grace reconnectFirst. Each further offence
	// doubles the penalty, up to penaltyMax.
	violationFirst = 10 * time.Second
	reconnectFirst = time.Second
	penaltyMax     = time.Minute
	// shortSession: a tunnel that ends sooner (or never opens) counts as a reconnect.
	shortSession = 2 * time.Second
	// shortGrace reconnects in a row are forgiven: an honest edge on a bad link reconnects too.
	shortGrace = 1
	// penaltyForget: a key with no offence for this long starts afresh.
	penaltyForget = 10 * time.Minute
	// maxPenalties bounds the keys remembered; beyond it, new offenders go unpunished
	// until old records are forgotten.
	maxPenalties = 1 << 16
)

// Source penalties: once sourceKeys distinct keys connecting from one address have drawn
// penalties (each within penaltyForget of the last), the address itself is penalized for
// sourcePenalty after the latest: its connections are closed as they are accepted, before the
// key exchange that makes a connection cost something, and its handshakes under way end at
// their next packet (handshakeConn). Per key alone, a hundred compromised devices behind one
// address still cost a key exchange each per penalty, and their first rounds come all at
// once. A tunnel already established from the address is untouched; an honest edge behind
// the same address that reconnects meanwhile is refused until the penalty ends, and retries
// with its backoff (as behind OpenSSH's PerSourcePenalties).
const (
	sourceKeys    = 8
	sourcePenalty = 10 * time.Second
)

// offence is what an authorized key did wrong.
type offence int

const (
	// offenceViolation is a protocol violation: a bad hello, a stream opened by the edge.
	offenceViolation offence = iota
	// offenceShort is a tunnel that ended within shortSession, or a connection that
	// authenticated and never opened one.
	offenceShort
)

// penaltyBox remembers the offences of authorized keys, by fingerprint, and of the addresses
// they connect from, and which of the events they caused were reported lately.
type penaltyBox struct {
	mu      sync.Mutex
	m       map[string]*penalty
	sources map[netip.Addr]*source
	jitter  func(time.Duration) time.Duration // added to each penalty; nil in tests
	// sourcesUntil is the latest end of any address's penalty (Unix ns): until then
	// sourceLeft looks the address up, after it answers without the lock. It is read on
	// every read of every handshake (handshakeConn).
	sourcesUntil atomic.Int64

	// One de-duplication per kind of event (admission.offend, admission.refused): a key's
	// penalty is audited once a minute, a refusal once per key, address and reason a minute.
	penalizedEvents *failLimiter
	refusedEvents   *failLimiter
}

// penalty is one key's record.
type penalty struct {
	strikes int       // offences that drew a penalty since the key was last forgiven
	short   int       // short sessions in a row
	until   time.Time // end of the penalty in force
	last    time.Time // last offence
	held    bool      // a connection of this key is held (penaltyBox.hold)
}

// source is one address's record: the keys penalized from it, up to sourceKeys.
type source struct {
	keys  map[string]struct{}
	until time.Time // end of the address's penalty; zero before sourceKeys were reached
	last  time.Time // last key penalty from the address
}

// newPenaltyBox adds up to a quarter to every penalty, so that keys penalized together (a
// fleet of compromised devices) do not all come back in the same instant.
func newPenaltyBox() *penaltyBox {
	b := newExactPenaltyBox()
	b.jitter = func(d time.Duration) time.Duration { return rand.N(d/4 + 1) }
	return b
}

// newExactPenaltyBox is a penalty box without jitter: a penalty is exactly the first one,
// doubled for each further offence (what tests compare against).
func newExactPenaltyBox() *penaltyBox {
	return &penaltyBox{m: map[string]*penalty{}, sources: map[netip.Addr]*source{},
		penalizedEvents: newFailLimiter(time.Minute), refusedEvents: newFailLimiter(time.Minute)}
}

// offend records an offence of fp, connected from addr, at now. It returns the key's penalty
// in force after it (0 for a forgiven short session), and whether the offence started a
// penalty of the address (sourceKeys reached).
func (b *penaltyBox) offend(fp string, addr net.Addr, o offence, now time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.offendKey(fp, o, now)
	if d == 0 {
		return 0, false
	}
	return d, b.offendSource(addrIP(addr), fp, now)
}

// offendKey is offend for the key alone. Called with mu held.
func (b *penaltyBox) offendKey(fp string, o offence, now time.Time) time.Duration {
	p := b.m[fp]
	if p == nil {
		if len(b.m) >= maxPenalties {
			b.forget(now)
			if len(b.m) >= maxPenalties {
				return 0
			}
		}
		p = &penalty{}
		b.m[fp] = p
	}
	if now.Sub(p.last) > penaltyForget {
		p.strikes, p.short = 0, 0
	}
	p.last = now
	if o == offenceShort {
		if p.short++; p.short <= shortGrace {
			return max(p.until.Sub(now), 0)
		}
	}
	p.strikes++
	first := reconnectFirst
	if o == offenceViolation {
		first = violationFirst
	}
	d := first
	for i := 1; i < p.strikes && d < penaltyMax; i++ {
		d *= 2
	}
	d = min(d, penaltyMax)
	if b.jitter != nil {
		d += b.jitter(d)
	}
	p.until = maxTime(p.until, now.Add(d))
	return p.until.Sub(now)
}

// offendSource counts fp's penalty against ip and reports whether that started the
// address's penalty (a further one from a penalized address extends it). Called with mu held.
func (b *penaltyBox) offendSource(ip netip.Addr, fp string, now time.Time) bool {
	if !ip.IsValid() {
		return false
	}
	s := b.sources[ip]
	if s == nil {
		if len(b.sources) >= maxPenalties {
			b.forget(now)
			if len(b.sources) >= maxPenalties {
				return false
			}
		}
		s = &source{keys: map[string]struct{}{}}
		b.sources[ip] = s
	}
	if now.Sub(s.last) > penaltyForget {
		clear(s.keys)
	}
	s.last = now
	if len(s.keys) < sourceKeys {
		if s.keys[fp] = struct{}{}; len(s.keys) < sourceKeys {
			return false
		}
	}
	started := !now.Before(s.until)
	s.until = now.Add(sourcePenalty)
	if u := s.until.UnixNano(); u > b.sourcesUntil.Load() {
		b.sourcesUntil.Store(u) // under mu: no concurrent store
	}
	return started
}

// sourceLeft is how long the penalty of the address of addr still runs at now (0: none).
func (b *penaltyBox) sourceLeft(addr net.Addr, now time.Time) time.Duration {
	if now.UnixNano() >= b.sourcesUntil.Load() {
		return 0
	}
	ip := addrIP(addr)
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.sources[ip]; s != nil {
		return max(s.until.Sub(now), 0)
	}
	return 0
}

// addrIP is the IP address of a TCP peer (IPv4-mapped IPv6 unmapped), or the zero Addr.
func addrIP(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// lasted records that a tunnel of fp lasted shortSession or longer: its reconnects are no
// longer in a row.
func (b *penaltyBox) lasted(fp string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.m[fp]; p != nil {
		p.short = 0
	}
}

// left is how long fp's penalty still runs at now (0: none).
func (b *penaltyBox) left(fp string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.m[fp]; p != nil {
		return max(p.until.Sub(now), 0)
	}
	return 0
}

// hold marks one connection of fp as held; it reports false if one already is, so that a
// penalized key cannot park connections without bound. unhold ends it.
func (b *penaltyBox) hold(fp string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.m[fp]
	if p == nil || p.held {
		return false
	}
	p.held = true
	return true
}

func (b *penaltyBox) unhold(fp string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p := b.m[fp]; p != nil {
		p.held = false
	}
}

// forget drops the records that no longer matter: no penalty in force, nothing held, and
// no offence for penaltyForget. Called with mu held.
func (b *penaltyBox) forget(now time.Time) {
	for fp, p := range b.m {
		if !p.held && now.After(p.until) && now.Sub(p.last) > penaltyForget {
			delete(b.m, fp)
		}
	}
	for ip, s := range b.sources {
		if now.After(s.until) && now.Sub(s.last) > penaltyForget {
			delete(b.sources, ip)
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
