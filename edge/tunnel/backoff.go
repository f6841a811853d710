package tunnel

import (
	"math/rand/v2"
	"time"
)

// backoffBase is the first retry's upper bound: the first reconnect comes within a second.
const backoffBase = time.Second

// backoff is exponential backoff with full jitter: the n-th delay is uniform in
// [0, min(max, base·2ⁿ)).
type backoff struct {
	max     time.Duration
	attempt int
	rnd     func() float64 // in [0,1); rand.Float64 outside tests
}

func newBackoff(max time.Duration) *backoff {
	if max < backoffBase {
		max = backoffBase
	}
	return &backoff{max: max, rnd: rand.Float64}
}

// ceiling is the current upper bound of the delay.
func (b *backoff) ceiling() time.Duration {
	d := backoffBase
	for i := 0; i < b.attempt && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// next returns the delay before the next attempt and advances.
func (b *backoff) next() time.Duration {
	d := time.Duration(b.rnd() * float64(b.ceiling()))
	if b.attempt < 64 {
		b.attempt++
	}
	return d
}

// reset starts over after a connection proved stable.
func (b *backoff) reset() { b.attempt = 0 }
