package gateway

import (
	"fmt"
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
			b := &penaltyBox{m: map[string]*penalty{}}
			now := time.Unix(1e9, 0)
			for i, st := range tc.steps {
				now = now.Add(st.after)
				got := time.Duration(0)
				if st.good {
					b.lasted("fp")
					got = b.left("fp", now)
				} else {
					got = b.offend("fp", st.o, now)
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

// TestPenaltyJitter: keys penalised at the same instant come back at different ones, each
// within a quarter of the penalty.
func TestPenaltyJitter(t *testing.T) {
	b := newPenaltyBox()
	now := time.Now()
	seen := map[time.Duration]bool{}
	for i := range 50 {
		fp := fmt.Sprint(i)
		d := b.offend(fp, offenceViolation, now)
		if d < violationFirst || d > violationFirst+violationFirst/4 {
			t.Fatalf("first penalty %v, want %v plus at most a quarter", d, violationFirst)
		}
		seen[d] = true
	}
	if len(seen) < 40 {
		t.Fatalf("50 keys penalised at once got only %d different penalties: no jitter", len(seen))
	}
}

func TestPenaltyHold(t *testing.T) {
	b := &penaltyBox{m: map[string]*penalty{}}
	if b.hold("fp") {
		t.Fatal("a key without a record was held")
	}
	b.offend("fp", offenceViolation, time.Now())
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
	b := &penaltyBox{m: map[string]*penalty{}}
	start := time.Unix(1e9, 0)
	for i := range maxPenalties {
		b.offend(fmt.Sprint(i), offenceViolation, start)
	}
	if d := b.offend("new", offenceViolation, start); d != 0 || len(b.m) != maxPenalties {
		t.Fatalf("full box: penalty %v, %d records", d, len(b.m))
	}
	// Once the old records are forgotten, new offenders are remembered again.
	later := start.Add(penaltyForget + penaltyMax)
	if d := b.offend("new", offenceViolation, later); d != violationFirst || len(b.m) != 1 {
		t.Fatalf("after forgetting: penalty %v, %d records", d, len(b.m))
	}
}
