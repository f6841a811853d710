package e2e

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// Size of the fixed attack: authorized but malicious edges, and rounds each.
const (
	attackEdges  = 100
	attackRounds = 4
)

// rssKiB reads VmRSS and VmHWM of pid.
func rssKiB(t *testing.T, pid int) (rss, hwm int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read gateway memory: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm
}

// p99 of durations (the maximum below 100 samples).
func p99(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

// TestMaliciousEdges: 100 authorized but hostile edges lie in their hello (the healthy edge's
// name, role=db), send oversized hellos, garbage and oversized frames, open streams towards
// the gateway and flood reconnects. The gateway's memory grows by at most 64 MiB, a healthy
// edge's run_command p99 stays near its quiet value, the liars get neither the name nor the
// role, and the audit log records the refusals and the penalties of keys and of their address.
func TestMaliciousEdges(t *testing.T) {
	if testing.Short() {
		t.Skip("attack test skipped in -short")
	}
	f := newFixture(t)
	healthy := f.newEdgeKey(t)
	f.authorize(t, healthy, "healthy", "role=web")
	seed := make([]byte, 32)
	rand.Read(seed)
	attackers, lines, err := localfleet.NewAttackers(seed, attackEdges, "healthy")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AuthorizeLines(lines); err != nil {
		t.Fatal(err)
	}
	g := f.startGateway(t, map[string]string{"LOG_LEVEL": "info"})
	pidB, err := os.ReadFile(filepath.Join(f.StateDir, "gateway.lock"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidB)))
	f.startEdge(t, healthy, g.addr, nil)
	g.waitConnected(t, healthy.Fingerprint, nil)

	const samples = 40
	measure := func() []time.Duration {
		var d []time.Duration
		for range samples {
			start := time.Now()
			r := g.call(t, "run_command", map[string]any{"edge": "healthy", "argv": []string{"true"}})
			if r.IsError {
				t.Errorf("healthy run_command failed: %s", r.Text)
			}
			d = append(d, time.Since(start))
		}
		return d
	}
	quiet := p99(measure())
	rssBefore, _ := rssKiB(t, pid)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, m := range attackers {
		wg.Go(func() {
			for r := range attackRounds {
				select {
				case <-stop:
					return
				default:
				}
				m.Attack(g.addr, f.HostKey, i+r)
			}
		})
	}
	loaded := p99(measure())
	close(stop)
	wg.Wait()
	rssAfter, hwm := rssKiB(t, pid)
	t.Logf("gateway RSS %d KiB before, %d KiB after, peak %d KiB (growth %d KiB); run_command p99 quiet %v, under attack %v",
		rssBefore, rssAfter, hwm, hwm-rssBefore, quiet, loaded)
	if growth := hwm - rssBefore; growth > 64<<10 {
		t.Errorf("gateway memory grew by %d KiB under attack, more than 64 MiB", growth)
	}
	// The healthy edge keeps being served. The 2× target is measured without -race by `make
	// bench` (row g, docs/BENCHMARKS.md); here, under -race beside the parallel tests on a
	// shared machine, only starvation is an error.
	if bound := 20*quiet + 2*time.Second; loaded > bound {
		t.Errorf("healthy p99 under attack %v > %v (quiet %v)", loaded, bound, quiet)
	}

	st := g.status(t, map[string]any{"limit": 1000})
	for _, e := range st.Edges {
		if e.Fingerprint == healthy.Fingerprint {
			if e.Name != "healthy" || !e.Connected || e.Labels["role"] != "web" {
				t.Errorf("healthy edge after the attack: %+v", e)
			}
			continue
		}
		if e.Name == "healthy" || e.Labels["role"] == "db" {
			t.Errorf("a liar got the name or the role: %+v", e)
		}
	}
	audit := g.auditLog()
	for _, want := range []string{"edge opened a stream", "tunnel refused", `"event":"edge_penalized"`, `"event":"source_penalized"`} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit log has no %s line", want)
		}
	}
}
