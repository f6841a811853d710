package gateway

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
)

// Bounds of what refusals of unauthenticated peers (unknown keys whose signature verified,
// wrong enrolment secrets) may write to the audit log and stderr. Any peer can cause them,
// so they are counted per source and interval, and only the first of each kind from each
// source (and no more than refusalLines in all) is written one by one; the rest is summed up in one
// auth_failure_summary line per interval. A flood thus writes at most
// refusalLines + 1 lines per interval, whatever its rate and number of sources.
const (
	defaultRefusalInterval = time.Minute
	refusalLinesPerSource  = 1
	refusalLines           = 8
	// maxRefusalSources bounds the sources counted one by one in an interval; the others
	// are counted together.
	maxRefusalSources = 4096
	// refusalTop is how many sources a summary names.
	refusalTop = 5
)

// sourcePrefix is the network a peer is counted in, as OpenSSH's PerSource* settings do: an
// IPv4 address (/32), an IPv6 /64 (what one host or site is usually given). The zero Prefix
// for a peer that is not TCP.
func sourcePrefix(a net.Addr) netip.Prefix {
	ip := addrIP(a)
	switch {
	case !ip.IsValid():
		return netip.Prefix{}
	case ip.Is4():
		return netip.PrefixFrom(ip, 32)
	default:
		p, _ := ip.Prefix(64)
		return p
	}
}

// refusalLog counts refusals per source and interval (see refusalLines).
type refusalLog struct {
	mu       sync.Mutex
	interval time.Duration
	start    time.Time            // of the current interval
	written  int                  // lines written one by one this interval
	bySource map[netip.Prefix]int // refusals this interval
	firsts   map[refusalKey]int   // refusals written one by one this interval, per source and kind
	unlogged map[netip.Prefix]int // of those, not written one by one
	others   int                  // unlogged refusals from sources beyond maxRefusalSources
	total    int                  // unlogged refusals this interval
}

// refusalSummary is one interval's unlogged refusals; zero Count when there were none.
type refusalSummary struct {
	Count, Sources int
	Top            []sourceCount // the sources with the most, at most refusalTop
	Others         int           // refusals from sources not counted one by one
	Interval       time.Duration
}

// refusalKey is one kind of refusal from one source.
type refusalKey struct {
	src  netip.Prefix
	kind string
}

type sourceCount struct {
	src netip.Prefix
	n   int
}

func newRefusalLog(interval time.Duration) *refusalLog {
	return &refusalLog{interval: interval, bySource: map[netip.Prefix]int{}, firsts: map[refusalKey]int{},
		unlogged: map[netip.Prefix]int{}}
}

// note counts a refusal of a kind from src at now. It reports whether the refusal is to be written
// one by one, and the summary of the interval that ended before now, if one did, to be
// written first.
func (r *refusalLog) note(src netip.Prefix, kind string, now time.Time) (bool, refusalSummary) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sum := r.rollLocked(now, false)
	n, known := r.bySource[src]
	if !known && len(r.bySource) >= maxRefusalSources {
		r.others++
		r.total++
		return false, sum
	}
	r.bySource[src] = n + 1
	k := refusalKey{src, kind}
	if r.firsts[k] < refusalLinesPerSource && r.written < refusalLines {
		r.firsts[k]++
		r.written++
		return true, sum
	}
	r.unlogged[src]++
	r.total++
	return false, sum
}

// flush ends the interval if it is over at now (or, with force, in any case) and returns
// its summary.
func (r *refusalLog) flush(now time.Time, force bool) refusalSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rollLocked(now, force)
}

// rollLocked starts a new interval when the current one is over (or force) and returns the
// summary of the one it ended. Called with mu held.
func (r *refusalLog) rollLocked(now time.Time, force bool) refusalSummary {
	if r.start.IsZero() {
		r.start = now
	}
	if !force && now.Sub(r.start) < r.interval {
		return refusalSummary{}
	}
	sum := refusalSummary{Count: r.total, Sources: len(r.unlogged), Others: r.others, Interval: now.Sub(r.start).Round(time.Second)}
	if r.total > 0 {
		for src, n := range r.unlogged {
			sum.Top = append(sum.Top, sourceCount{src, n})
		}
		slices.SortFunc(sum.Top, func(a, b sourceCount) int {
			if c := cmp.Compare(b.n, a.n); c != 0 {
				return c
			}
			return a.src.Addr().Compare(b.src.Addr())
		})
		sum.Top = sum.Top[:min(len(sum.Top), refusalTop)]
	}
	r.start, r.written, r.others, r.total = now, 0, 0, 0
	clear(r.bySource)
	clear(r.firsts)
	clear(r.unlogged)
	return sum
}

// String is the summary as the audit line's error field says it.
func (s refusalSummary) String() string {
	var top []string
	for _, sc := range s.Top {
		top = append(top, fmt.Sprintf("%s: %d", sc.src, sc.n))
	}
	if s.Others > 0 {
		top = append(top, fmt.Sprintf("more sources: %d", s.Others))
	}
	return fmt.Sprintf("%d refused authentication attempts (unknown keys, wrong enrolment secrets) from %d source(s) in the last %s, not logged one by one (%s)",
		s.Count, s.Sources, s.Interval, strings.Join(top, ", "))
}

// refuseUnauthenticated logs and audits a refusal of a peer that did not authenticate, as
// the refusal log lets it: e is the audit line, msg the log message.
func (g *Gateway) refuseUnauthenticated(remote net.Addr, e audit.Event, msg string) {
	one, sum := g.refusals.note(sourcePrefix(remote), msg, time.Now())
	g.writeRefusalSummary(sum)
	if !one {
		return
	}
	g.log.Warn(msg, "fingerprint", e.Fingerprint, "remote_addr", e.RemoteAddr, "reason", e.Error)
	g.cfg.Audit.Write(e)
}

// writeRefusalSummary logs and audits an interval's unlogged refusals, if there were any.
func (g *Gateway) writeRefusalSummary(s refusalSummary) {
	if s.Count == 0 {
		return
	}
	e := audit.Event{Event: "auth_failure_summary", Outcome: "refused", Error: s.String()}
	if s.Sources == 1 && s.Others == 0 {
		e.RemoteAddr = s.Top[0].src.String()
	}
	g.log.Warn("refused authentication attempts not logged one by one", "count", s.Count, "sources", s.Sources,
		"interval", s.Interval, "summary", e.Error)
	g.cfg.Audit.Write(e)
}

// flushRefusals writes each interval's summary when it ends, even when no refusal follows
// to carry it, until stop is closed; then the last one.
func (g *Gateway) flushRefusals(stop <-chan struct{}) {
	t := time.NewTicker(g.refusals.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			g.writeRefusalSummary(g.refusals.flush(time.Now(), true))
			return
		case now := <-t.C:
			g.writeRefusalSummary(g.refusals.flush(now, false))
		}
	}
}
