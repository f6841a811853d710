package gateway

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// TestInventoryPulledAtConnectAndKept: the gateway pulls the inventory when the edge connects,
// serves get_device_info from its copy without a round trip, and asks anew on refresh.
func TestInventoryPulledAtConnectAndKept(t *testing.T) {
	key := newSigner(t)
	f := startGateway(t, authLine(key, `name="pi",labels="role=web"`), func(c *Config) { c.InventoryInterval = -1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := f.g.WatchEdges(ctx)
	e := dialEdge(t, f, key, edgeOpts{hello: protocol.Hello{Name: "pi"}})
	waitFor(t, 10*time.Second, "inventory pulled at connect", func() bool {
		inv := f.g.Inventories(true)
		return len(inv) == 1 && inv[0].Summary != nil
	})
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no WatchEdges signal on connect")
	}
	if n := e.infos.Load(); n != 1 {
		t.Fatalf("%d device_info calls after connect, want 1", n)
	}
	for range 3 {
		d, err := f.g.DeviceInfo(ctx, "pi", false)
		if err != nil || d.Hostname != "testhost" || d.Edge != "pi" || d.Labels["role"] != "web" {
			t.Fatalf("DeviceInfo = %+v, %v", d, err)
		}
		if d.Capabilities.Tools == nil || d.Capabilities.ToolVersions == nil || d.GPU.Devices == nil || d.Capabilities.FailedUnits == nil {
			t.Fatalf("nil map or slice from an edge that sent none: %+v", d)
		}
	}
	if n := e.infos.Load(); n != 1 {
		t.Fatalf("%d device_info calls after 3 cached reads, want 1", n)
	}
	if _, err := f.g.DeviceInfo(ctx, "pi", true); err != nil {
		t.Fatal(err)
	}
	if n := e.infos.Load(); n != 2 {
		t.Fatalf("%d device_info calls after a refresh, want 2", n)
	}
	e.close()
	select {
	case <-changes:
	case <-time.After(5 * time.Second):
		t.Fatal("no WatchEdges signal on disconnect")
	}
}

func TestInventoryScheduledPulls(t *testing.T) {
	f, e, _ := connected(t, protocol.Hello{}, func(c *Config) { c.InventoryInterval = 100 * time.Millisecond })
	waitFor(t, 10*time.Second, "three scheduled pulls", func() bool { return e.infos.Load() >= 3 })
	_ = f
}

// TestInventoryFirstPullYieldsToStorm: the first pull waits while at least half the handshake
// slots are taken or handshakes start at stormConnects a second, at most maxFirstPullDelay
// after connect; an edge connecting alone is pulled within a second as before.
func TestInventoryFirstPullYieldsToStorm(t *testing.T) {
	g := &Gateway{handshakes: make(chan struct{}, 64)}
	now := time.Now()
	if g.deferFirstPull(now) {
		t.Fatal("deferred with no handshake in progress")
	}
	for range 31 {
		g.handshakes <- struct{}{}
	}
	if g.deferFirstPull(now) {
		t.Fatal("deferred with 31 of 64 handshake slots taken")
	}
	g.handshakes <- struct{}{}
	if !g.deferFirstPull(now) {
		t.Fatal("not deferred with 32 of 64 handshake slots taken")
	}
	if g.deferFirstPull(now.Add(-maxFirstPullDelay)) {
		t.Fatalf("deferred more than %v after connect", maxFirstPullDelay)
	}
	one := &Gateway{handshakes: make(chan struct{}, 1)}
	if one.deferFirstPull(now) {
		t.Fatal("MaxHandshakes 1: deferred with no handshake in progress")
	}
	// A storm is also stormConnects handshakes started within a second, slots free or not.
	rate := &Gateway{handshakes: make(chan struct{}, 64)}
	for range stormConnects - 1 {
		rate.connects.add(time.Now())
	}
	if rate.deferFirstPull(now) {
		t.Fatalf("deferred after %d handshakes in a second", stormConnects-1)
	}
	rate.connects.add(time.Now())
	if !rate.deferFirstPull(now) {
		t.Fatalf("not deferred after %d handshakes in a second", stormConnects)
	}
}

func TestConnectRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name string
		adds []time.Duration // offsets from t0 of the handshakes
		at   time.Duration
		want int
	}{
		{"none", nil, 0, 0},
		{"this second", []time.Duration{0, 100 * time.Millisecond, 900 * time.Millisecond}, 950 * time.Millisecond, 3},
		{"the previous second counts", []time.Duration{0, 500 * time.Millisecond}, 1500 * time.Millisecond, 2},
		{"the larger of the two", []time.Duration{0, 1100 * time.Millisecond, 1200 * time.Millisecond, 1300 * time.Millisecond}, 1400 * time.Millisecond, 3},
		{"two seconds later: forgotten", []time.Duration{0, 100 * time.Millisecond}, 2100 * time.Millisecond, 0},
		{"long gap then one", []time.Duration{0, 0, 10 * time.Second}, 10 * time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r connectRate
			for _, d := range tt.adds {
				r.add(t0.Add(d))
			}
			if got := r.recent(t0.Add(tt.at)); got != tt.want {
				t.Errorf("recent = %d, want %d", got, tt.want)
			}
		})
	}
}

// sampleInventory is a realistic inventory (a Debian box with docker and 30 tools).
func sampleInventory(i int) *protocol.DeviceInfo {
	d := &protocol.DeviceInfo{
		Hostname: fmt.Sprintf("host-%05d", i), OS: "linux", Platform: "debian", PlatformVersion: "12.8",
		KernelVersion: "6.1.0-28-amd64", Arch: "x86_64", UptimeSeconds: 123456,
		CPU:    protocol.CPUInfo{Model: "Intel(R) Xeon(R) CPU E5-2690 v4 @ 2.60GHz", Cores: 4, LogicalCores: 8, Percent: 3.2},
		Memory: protocol.MemoryInfo{Total: 16 << 30, Available: uint64(i) << 20, UsedPercent: 40},
		Disks: []protocol.DiskInfo{{Mount: "/", Fstype: "ext4", Total: 100 << 30, Free: 50 << 30, UsedPercent: 50},
			{Mount: "/boot", Fstype: "ext4", Total: 1 << 30, Free: 500 << 20, UsedPercent: 50}},
		Network: []protocol.NetIface{{Name: "lo", Addrs: []string{"127.0.0.1/8", "::1/128"}},
			{Name: "eth0", Addrs: []string{fmt.Sprintf("10.0.%d.%d/16", i/256, i%256)}, MAC: "52:54:00:12:34:56"},
			{Name: "docker0", Addrs: []string{"172.17.0.1/16"}, MAC: "02:42:ac:11:00:01"}},
		Load:        protocol.LoadInfo{Load1: 0.5, Load5: 0.4, Load15: 0.3},
		EdgeVersion: "1.0.0", CollectedAt: "2026-01-01T00:00:00Z",
		Capabilities: protocol.Capabilities{Tools: map[string]string{}, ToolVersions: map[string]string{},
			PackageManager: "apt", InitSystem: "systemd", ContainerRuntimes: []string{"docker"},
			ContainerRuntimeVersions: map[string]string{"docker": "26.1.5"}, FailedUnits: []string{}},
		GPU:     protocol.GPUInfo{Devices: []string{}},
		Updates: protocol.UpdatesInfo{Checked: true, Pending: 12, Security: 3, CheckedAt: "2026-01-01T00:00:00Z"},
	}
	for _, tool := range []string{"sh", "bash", "git", "curl", "wget", "python3", "perl", "docker", "systemctl", "apt",
		"make", "gcc", "tar", "gzip", "unzip", "rsync", "jq", "ip", "ss", "sudo", "journalctl", "node", "npm", "go"} {
		d.Capabilities.Tools[tool] = "/usr/bin/" + tool
		d.Capabilities.ToolVersions[tool] = "1.2.3"
	}
	d.Normalize()
	return d
}

// TestInventoryStoreMemoryPerEdge measures what 10,000 stored inventories cost.
func TestInventoryStoreMemoryPerEdge(t *testing.T) {
	const n = 2000 // enough to measure; 10,000 cost n×5 (the log line extrapolates)
	s := newInventoryStore()
	never := func(string) bool { return false }
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		if err := s.put(fmt.Sprintf("SHA256:%043d", i), sampleInventory(i), never); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("inventory store: %d bytes per edge (measured on %d edges; 10,000 edges ≈ %.1f MiB)", per, n, float64(per*10000)/(1<<20))
	if per > 8<<10 {
		t.Errorf("%d bytes per edge, want at most 8 KiB", per)
	}
	d, ok, err := s.get(fmt.Sprintf("SHA256:%043d", 42))
	if err != nil || !ok || d.Hostname != "host-00042" || len(d.Network) != 3 {
		t.Fatalf("get = %+v, %v, %v", d, ok, err)
	}
	sum := s.summary(fmt.Sprintf("SHA256:%043d", 42))
	if sum == nil || !sum.HasTool("docker") || !sum.HasTool("git") || sum.HasTool("kubectl") ||
		sum.ToolVersion("docker") != "1.2.3" || sum.DiskFree != 50<<30 || sum.DiskFreeMount != "/" || sum.SecurityUpdates != 3 {
		t.Fatalf("summary = %+v", sum)
	}
	runtime.KeepAlive(s)
}

func TestInventoryStoreBounded(t *testing.T) {
	s := newInventoryStore()
	s.max = 3
	online := map[string]bool{"a": true, "b": true, "c": true}
	isOnline := func(fp string) bool { return online[fp] }
	for _, fp := range []string{"a", "b", "c"} {
		if err := s.put(fp, sampleInventory(1), isOnline); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.put("d", sampleInventory(1), isOnline); err == nil {
		t.Fatal("stored a 4th inventory with 3 connected edges in a store of 3")
	}
	online["b"] = false
	if err := s.put("d", sampleInventory(1), isOnline); err != nil || s.summary("b") != nil || s.summary("d") == nil {
		t.Fatalf("offline entry not evicted: %v", err)
	}
	s.forget([]string{"a"})
	if s.summary("a") != nil {
		t.Fatal("forget kept the entry")
	}
}

// TestInventoryStoreSharesToolLists: edges with the same tools share one copy of the list
// (and an edge keeps its own on a re-pull); a different list is its own, and the summaries
// read the same either way.
func TestInventoryStoreSharesToolLists(t *testing.T) {
	s := newInventoryStore()
	never := func(string) bool { return false }
	for _, fp := range []string{"a", "b", "a"} {
		if err := s.put(fp, sampleInventory(1), never); err != nil {
			t.Fatal(err)
		}
	}
	other := sampleInventory(2)
	other.Capabilities.Tools["kubectl"] = "/usr/bin/kubectl"
	other.Capabilities.ToolVersions["kubectl"] = "1.31"
	if err := s.put("c", other, never); err != nil {
		t.Fatal(err)
	}
	a, b, c := s.summary("a"), s.summary("b"), s.summary("c")
	if &a.Tools[0] != &b.Tools[0] || &a.ToolVersions[0] != &b.ToolVersions[0] || &a.ContainerRuntimes[0] != &b.ContainerRuntimes[0] {
		t.Error("same tools, separate lists")
	}
	if &a.Tools[0] == &c.Tools[0] || a.HasTool("kubectl") || !c.HasTool("kubectl") || c.ToolVersion("kubectl") != "1.31" {
		t.Errorf("different tools: a %v, c %v", a.Tools, c.Tools)
	}
	if !a.HasTool("docker") || a.ToolVersion("docker") != "1.2.3" || !slices.Equal(a.ContainerRuntimes, []string{"docker"}) {
		t.Errorf("summary a = %+v", a)
	}
}
