package memory

import (
	"sync"
	"testing"
	"time"
)

// TestReleaserCoalesces: many Soon calls at once leave one release pending, which runs and
// clears within a few seconds; a later Soon schedules a new one.
func TestReleaserCoalesces(t *testing.T) {
	var r Releaser
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(r.Soon)
	}
	wg.Wait()
	if !r.pending.Load() {
		t.Fatal("no release pending after Soon")
	}
	deadline := time.Now().Add(5 * releaseDelay)
	for r.pending.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("release still pending after %v", 5*releaseDelay)
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.Soon()
	if !r.pending.Load() {
		t.Fatal("Soon after a release scheduled nothing")
	}
}
