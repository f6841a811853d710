package gateway

import (
	"fmt"
	"net"
	"testing"
	"time"
)

func TestPenaltyBox(t *testing.T) {
	const v, s = offenceViolation, offenceShort
	type step struct {
		after time.Duration // since the previous step
		o     offence
		good  bool          // a tunnel that lasted, instead of an offence
		want  time.Duration // penalty in force after the step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"violations double the penalty up to the cap", []step{
			{0, v, false, violationFirst}, {0, v, false, 2 * violationFirst}, {0, v, false, 4 * violationFirst},
			{0, v, false, penaltyMax}, {0, v, false, penaltyMax},
		}},
		{"reconnects in a row are forgiven once, then double", []step{
			{0, s, false, 0}, {0, s, false, reconnectFirst}, {0, s, false, 2 * reconnectFirst}, {0, s, false, 4 * reconnectFirst},
		}},
		{"a tunnel that lasted ends the streak", []step{
			{0, s, false, 0}, {0, 0, true, 0}, {0, s, false, 0}, {0, s, false, reconnectFirst},
		}},
		{"a penalty runs out", []step{
			{0, s, false, 0}, {0, s, false, reconnectFirst}, {reconnectFirst + time.Millisecond, 0, true, 0},
		}},
		{"a forgiven reconnect keeps the penalty in force", []step{
			{0, v, false, violationFirst}, {time.Second, 0, true, violationFirst - time.Second},
			{0, s, false, violationFirst - time.Second},
		}},
		{"a key quiet for penaltyForget starts afresh", []step{
			{0, v, false, violationFirst}, {0, v, false, 2 * violationFirst},
			{penaltyForget + time.Second, v, false, violationFirst},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newExactPenaltyBox()
			now := time.Unix(1e9, 0)
			for i, st := range tc.steps {
				now = now.Add(st.after)
				got := time.Duration(0)
				if st.good {
					b.lasted("fp")
					got = b.left("fp", now)
				} else {
					got, _ = b.offend("fp", nil, st.o, now)
				}
				if got != st.want {
					t.Fatalf("step %d: penalty %v, want %v", i, got, st.want)
				}
				if left := b.left("fp", now); left != got {
					t.Fatalf("step %d: left %v, offend said %v", i, left, got)
				}
			}
		})
	}
}

// TestPenaltyJitter: keys penalized at the same instant come back at different ones, each
// within a quarter of the penalty.
func TestPenaltyJitter(t *testing.T) {
	b := newPenaltyBox()
	now := time.Now()
	seen := map[time.Duration]bool{}
	for i := range 50 {
		fp := fmt.Sprint(i)
		d, _ := b.offend(fp, nil, offenceViolation, now)
		if d < violationFirst || d > violationFirst+violationFirst/4 {
			t.Fatalf("first penalty %v, want %v plus at most a quarter", d, violationFirst)
		}
		seen[d] = true
	}
	if len(seen) < 40 {
		t.Fatalf("50 keys penalized at once got only %d different penalties: no jitter", len(seen))
	}
}

func TestPenaltyHold(t *testing.T) {
	b := newExactPenaltyBox()
	if b.hold("fp") {
		t.Fatal("a key without a record was held")
	}
	b.offend("fp", nil, offenceViolation, time.Now())
	if !b.hold("fp") {
		t.Fatal("first hold refused")
	}
	if b.hold("fp") {
		t.Fatal("a second connection of the key was held at the same time")
	}
	b.unhold("fp")
	if !b.hold("fp") {
		t.Fatal("hold refused after unhold")
	}
}

func TestPenaltyBoxBounded(t *testing.T) {
	b := newExactPenaltyBox()
	start := time.Unix(1e9, 0)
	for i := range maxPenalties {
		b.offend(fmt.Sprint(i), nil, offenceViolation, start)
	}
	if d, _ := b.offend("new", nil, offenceViolation, start); d != 0 || len(b.m) != maxPenalties {
		t.Fatalf("full box: penalty %v, %d records", d, len(b.m))
	}
	// Once the old records are forgotten, new offenders are remembered again.
	later := start.Add(penaltyForget + penaltyMax)
	if d, _ := b.offend("new", nil, offenceViolation, later); d != violationFirst || len(b.m) != 1 {
		t.Fatalf("after forgetting: penalty %v, %d records", d, len(b.m))
	}
	// One key offending from ever new addresses (IPv6 has plenty) fills the sources only
	// up to the bound.
	ip6 := func(i int) net.Addr {
		b := [16]byte{0x20, 0x01, 0x0d, 0xb8, 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}
		return &net.TCPAddr{IP: b[:], Port: 1}
	}
	for i := range maxPenalties + 1 {
		b.offend("roamer", ip6(i), offenceViolation, later)
	}
	if len(b.sources) != maxPenalties {
		t.Fatalf("%d source records, want the bound %d", len(b.sources), maxPenalties)
	}
}

// TestSourcePenalty: an address is penalized once sourceKeys distinct keys from it drew
// penalties; other addresses, forgiven offences and a key offending twice do not count.
func TestSourcePenalty(t *testing.T) {
	a := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1000}
	a2 := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 2000} // same address, another port
	other := &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 1000}
	mapped := &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.1"), Port: 3000}
	b := newExactPenaltyBox()
	now := time.Unix(1e9, 0)
	for i := range sourceKeys - 1 {
		if _, started := b.offend(fmt.Sprint(i), a, offenceViolation, now); started {
			t.Fatalf("source penalized after %d keys", i+1)
		}
		b.offend(fmt.Sprint(i), a2, offenceViolation, now) // the same key twice counts once
		b.offend(fmt.Sprint(i), other, offenceShort, now)  // forgiven: no penalty, not counted
	}
	if b.sourceLeft(a, now) != 0 {
		t.Fatal("source penalized before sourceKeys keys")
	}
	if _, started := b.offend("last", a2, offenceViolation, now); !started {
		t.Fatalf("source not penalized after %d keys", sourceKeys)
	}
	for _, addr := range []net.Addr{a, a2, mapped} {
		if got := b.sourceLeft(addr, now); got != sourcePenalty {
			t.Errorf("sourceLeft(%v) = %v, want %v", addr, got, sourcePenalty)
		}
	}
	if got := b.sourceLeft(other, now); got != 0 {
		t.Errorf("another address is penalized for %v", got)
	}
	later := now.Add(time.Second)
	if _, started := b.offend("again", a, offenceViolation, later); started {
		t.Error("a further key penalty restarted (rather than extended) the source penalty")
	}
	if got := b.sourceLeft(a, later); got != sourcePenalty {
		t.Errorf("after a further key penalty: %v, want %v", got, sourcePenalty)
	}
	if got := b.sourceLeft(a, later.Add(sourcePenalty)); got != 0 {
		t.Errorf("the penalty did not run out: %v", got)
	}
	if got := b.sourceLeft(nil, now); got != 0 {
		t.Errorf("a connection without an IP address is penalized: %v", got)
	}
}
