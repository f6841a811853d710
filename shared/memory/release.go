// Package memory hands the memory a burst of work freed back to the operating system soon
// after the burst, so that both binaries return to their idle footprint after a large
// transfer instead of waiting for the next GC cycle (up to two minutes when idle) and the
// runtime's gradual background scavenger.
package memory

import (
	"runtime/debug"
	"sync/atomic"
	"time"
)

// BigTransfer is the size from which a transfer is worth a release afterwards.
const BigTransfer = 8 << 20

// releaseDelay lets the caller's own buffers become garbage first (for the gateway, mcp-go
// holds a request's JSON until the handler has returned).
const releaseDelay = time.Second

// Releaser runs debug.FreeOSMemory once, a second after Soon, however often Soon is called
// meanwhile. The zero value is ready to use.
type Releaser struct {
	pending atomic.Bool
	free    func() // debug.FreeOSMemory when nil; a counter in tests
}

// Soon schedules a release unless one is already pending.
func (r *Releaser) Soon() {
	if r.pending.CompareAndSwap(false, true) {
		time.AfterFunc(releaseDelay, func() {
			r.pending.Store(false)
			if r.free != nil {
				r.free()
				return
			}
			debug.FreeOSMemory()
		})
	}
}
