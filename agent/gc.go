package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	// minGCPercent is the GC target of a large gateway. An idle fleet's resident memory is its
	// live heap (mostly per-edge library state) plus the garbage made until the next GC: at
	// Go's default of 100 that is up to the live heap again, and the pages stay resident.
	// 10,000 idle edges cost 101–103 KiB each at 100, 84–87 at 50, 76–78 at 25, for the same
	// idle CPU (docs/BENCHMARKS-SCALE.md).
	minGCPercent = 25
	// gcHeadroom is the garbage a small gateway may make between two GCs, so that a gateway
	// of a few edges does not collect its 1–3 MiB heap after every few calls (at 25 % it ran
	// three times as many GCs as at Go's default of 100; docs/BENCHMARKS.md).
	gcHeadroom = 16 << 20
	// gcTuneEvery is how often the live heap is looked at.
	gcTuneEvery = 5 * time.Second
	// liveHeapMetric is the heap the last GC found reachable (runtime/metrics).
	liveHeapMetric = "/gc/heap/live:bytes"
)

// gcPercent is the GC target for a live heap of live bytes: Go's default 100 while 16 MiB
// of garbage is more than that, down to minGCPercent as the heap grows (from 64 MiB on).
func gcPercent(live uint64) int {
	if live == 0 {
		return 100
	}
	return int(min(100, max(minGCPercent, gcHeadroom*100/live)))
}

// gcTunerOn reports whether the gateway should run tuneGC: only when the operator set neither
// GOGC nor GOMEMLIMIT (read through getenv), whose choice wins.
func gcTunerOn(getenv func(string) string) bool {
	return getenv("GOGC") == "" && getenv("GOMEMLIMIT") == ""
}

// tuneGC sets the GC target from the live heap every interval until ctx ends.
func tuneGC(ctx context.Context, every time.Duration) {
	sample := []metrics.Sample{{Name: liveHeapMetric}}
	last := -1
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if p := gcPercent(sample[0].Value.Uint64()); p != last {
				debug.SetGCPercent(p)
				last = p
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
