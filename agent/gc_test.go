package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{1 << 20, 100},
		{16 << 20, 100},
		{32 << 20, 50},
		{64 << 20, 25},
		{700 << 20, 25},
		{1 << 40, 25},
	} {
		if got := gcPercent(c.live); got != c.want {
			t.Errorf("gcPercent(%d MiB) = %d, want %d", c.live>>20, got, c.want)
		}
	}
}

func TestGCTunerOn(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, true},
		{map[string]string{"GOGC": "50"}, false},
		{map[string]string{"GOGC": "off"}, false},
		{map[string]string{"GOMEMLIMIT": "512MiB"}, false},
		{map[string]string{"GOGC": "100", "GOMEMLIMIT": "1GiB"}, false},
		{map[string]string{"GODEBUG": "gctrace=1"}, true},
	} {
		if got := gcTunerOn(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("gcTunerOn with %v = %v, want %v", c.env, got, c.want)
		}
	}
}

// TestTuneGC checks that the tuner sets the target gcPercent gives for this test's heap (Go's
// default while it is small), and stops with its context.
func TestTuneGC(t *testing.T) {
	old := debug.SetGCPercent(37)
	defer debug.SetGCPercent(old)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tuneGC(ctx, time.Millisecond) }()
	m := []metrics.Sample{{Name: "/gc/gogc:percent"}, {Name: liveHeapMetric}}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if metrics.Read(m); m[0].Value.Uint64() != 37 {
			break
		}
	}
	cancel()
	<-done
	got, want := int(m[0].Value.Uint64()), gcPercent(m[1].Value.Uint64())
	if got != want {
		t.Fatalf("GC percent with a live heap of %d bytes = %d, want %d", m[1].Value.Uint64(), got, want)
	}
}
