package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// summary is the latency distribution of one timed loop.
type summary struct {
	n                   int
	p50, p90, p99, mean time.Duration
}

// summarize computes nearest-rank percentiles and the mean of samples (any order; not
// modified). Zero samples give a zero summary.
func summarize(samples []time.Duration) summary {
	if len(samples) == 0 {
		return summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var total time.Duration
	for _, d := range s {
		total += d
	}
	return summary{
		n:    len(s),
		p50:  percentile(s, 50),
		p90:  percentile(s, 90),
		p99:  percentile(s, 99),
		mean: total / time.Duration(len(s)),
	}
}

// percentile is the nearest-rank p-th percentile of sorted, non-empty samples.
func percentile(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// ms formats d in milliseconds with three decimals.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
}

// mibPerSec is bytes moved in d, in MiB/s.
func mibPerSec(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / (1 << 20) / d.Seconds()
}

// median of non-empty values (any order; not modified).
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
