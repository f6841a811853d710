package memory

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReleaserCoalesces: a hundred Soon calls at once give exactly one release, about a
// second later; a Soon after it gives a second one.
func TestReleaserCoalesces(t *testing.T) {
	var freed atomic.Int64
	r := Releaser{free: func() { freed.Add(1) }}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(r.Soon)
	}
	wg.Wait()
	waitFreed := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(5 * releaseDelay)
		for freed.Load() < want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(2 * releaseDelay) // a second release, if one was wrongly scheduled, runs by now
		if got := freed.Load(); got != want {
			t.Fatalf("%d releases, want %d", got, want)
		}
	}
	waitFreed(1)
	r.Soon()
	waitFreed(2)
}
