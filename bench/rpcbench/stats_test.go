package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	ms := time.Millisecond
	seq := func(n int) []time.Duration {
		var s []time.Duration
		for i := n; i >= 1; i-- { // reversed: summarize must sort
			s = append(s, time.Duration(i)*ms)
		}
		return s
	}
	tests := []struct {
		name          string
		in            []time.Duration
		p50, p90, p99 time.Duration
		mean          time.Duration
	}{
		{"empty", nil, 0, 0, 0, 0},
		{"one", []time.Duration{7 * ms}, 7 * ms, 7 * ms, 7 * ms, 7 * ms},
		{"1..10", seq(10), 5 * ms, 9 * ms, 10 * ms, 5500 * time.Microsecond},
		{"1..200", seq(200), 100 * ms, 180 * ms, 198 * ms, 100500 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := summarize(tt.in)
			if got.p50 != tt.p50 || got.p90 != tt.p90 || got.p99 != tt.p99 || got.mean != tt.mean {
				t.Fatalf("got p50 %v p90 %v p99 %v mean %v; want %v %v %v %v",
					got.p50, got.p90, got.p99, got.mean, tt.p50, tt.p90, tt.p99, tt.mean)
			}
			if got.n != len(tt.in) {
				t.Fatalf("n = %d, want %d", got.n, len(tt.in))
			}
		})
	}
}

func TestMedianAndRate(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want float64
	}{
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"one", []float64{9}, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := median(tt.in); got != tt.want {
				t.Fatalf("median = %v, want %v", got, tt.want)
			}
		})
	}
	if got := mibPerSec(32<<20, 2*time.Second); got != 16 {
		t.Fatalf("mibPerSec = %v, want 16", got)
	}
	if got := mibPerSec(1, 0); got != 0 {
		t.Fatalf("mibPerSec over 0 s = %v, want 0", got)
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"normal", "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    9216 kB\nThreads:\t4\n", 9216 << 10, false},
		{"missing", "Name:\tx\n", 0, true},
		{"garbage", "VmRSS:\tlots kB\n", 0, true},
		{"wrong unit", "VmRSS:\t12 MB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmRSS([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseVmRSS = %d, %v; want %d, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"normal", "42 (mcp-ssh-edge) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 1 2 3", 3 * time.Second, false},
		{"name with spaces and parens", "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0", 30 * time.Millisecond, false},
		{"short", "7 (x) R 1 2", 0, true},
		{"no parens", "7 x R", 0, true},
		{"garbage", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 a b", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseStatCPU = %v, %v; want %v, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseMachineBusy(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		// user nice system idle iowait irq softirq steal: busy = 100+1+50+2+3+4 = 160 ticks
		{"normal", "cpu  100 1 50 9000 70 2 3 4 0 0\ncpu0 50 0 25 4500 35 1 1 2 0 0\n", 1600 * time.Millisecond, false},
		{"per-cpu line first", "cpu0 1 2 3 4 5 6 7 8\n", 0, true},
		{"short", "cpu 1 2 3\n", 0, true},
		{"garbage", "cpu 1 2 x 4 5 6 7 8\n", 0, true},
		{"empty", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMachineBusy([]byte(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("parseMachineBusy = %v, %v; want %v, err %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestAlternateBlocks: each loop gets n timed calls after its warm-up, in blocks that take
// turns, each block entered through its hook.
func TestAlternateBlocks(t *testing.T) {
	var order []string
	var calls, enters [2]int
	mk := func(i int, name string) loop {
		return loop{name: name,
			enter: func() error { enters[i]++; order = append(order, name); return nil },
			call:  func(context.Context) error { calls[i]++; return nil }}
	}
	const warmup, n = 3, 25 // 25 over 10 blocks: 2 a block, the last block takes the rest
	res, err := alternateBlocks(context.Background(), [2]loop{mk(0, "a"), mk(1, "b")}, warmup, n)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if len(res[i]) != n || calls[i] != warmup+n || enters[i] != alternateBlockCount+1 {
			t.Errorf("loop %d: %d timed, %d calls, %d enters; want %d, %d, %d", i, len(res[i]), calls[i], enters[i], n, warmup+n, alternateBlockCount+1)
		}
	}
	for i, name := range order {
		if want := []string{"a", "b"}[i%2]; name != want {
			t.Fatalf("block %d was %s, want %s (order %v)", i, name, want, order)
		}
	}
	failing := loop{name: "x", call: func(context.Context) error { return errors.New("boom") }}
	if _, err := alternateBlocks(context.Background(), [2]loop{mk(0, "a"), failing}, 0, n); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("a failing call: err = %v", err)
	}
}
