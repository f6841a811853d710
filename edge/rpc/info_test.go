package rpc

import (
	"bytes"
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// uname runs `uname flag` on this machine.
func uname(t *testing.T, flag string) string {
	t.Helper()
	out, err := exec.Command("uname", flag).Output()
	if err != nil {
		t.Skipf("uname %s: %v", flag, err)
	}
	return strings.TrimSpace(string(out))
}

// procField reads "Key: value kB"-style fields and the first number of one-line files.
func procNumbers(t *testing.T, path string) []float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("%s: %v", path, err)
	}
	var out []float64
	for _, f := range strings.Fields(string(b)) {
		if v, err := strconv.ParseFloat(f, 64); err == nil {
			out = append(out, v)
		}
	}
	return out
}

func memTotalKiB(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Skip(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			return v
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// TestInventoryMatchesThisMachine cross-checks the inventory against /proc and uname.
func TestInventoryMatchesThisMachine(t *testing.T) {
	h := newHarness(t, Config{ProbeTimeout: 2 * time.Second})
	var d protocol.DeviceInfo
	if o := h.open(protocol.MethodDeviceInfo, protocol.DeviceInfoParams{Refresh: true}).wait(&d); o.err != nil {
		t.Fatalf("device_info: %v", o.err)
	}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	logical := bytes.Count(cpuinfo, []byte("\nprocessor\t")) + map[bool]int{true: 1}[bytes.HasPrefix(cpuinfo, []byte("processor\t"))]
	uptime := procNumbers(t, "/proc/uptime")[0]
	loadavg := procNumbers(t, "/proc/loadavg")[0]

	checks := []struct {
		what      string
		got, want string
	}{
		{"hostname (uname -n)", d.Hostname, uname(t, "-n")},
		{"kernel_version (uname -r)", d.KernelVersion, uname(t, "-r")},
		{"arch (uname -m)", d.Arch, uname(t, "-m")},
		{"os (uname -s)", d.OS, strings.ToLower(uname(t, "-s"))},
		{"memory.total (/proc/meminfo)", strconv.FormatUint(d.Memory.Total, 10), strconv.FormatUint(memTotalKiB(t)*1024, 10)},
		{"cpu.logical_cores (/proc/cpuinfo)", strconv.Itoa(d.CPU.LogicalCores), strconv.Itoa(logical)},
		{"edge", d.Edge, "edge1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
		}
	}
	if math.Abs(float64(d.UptimeSeconds)-uptime) > 30 {
		t.Errorf("uptime_seconds = %d, /proc/uptime says %.0f", d.UptimeSeconds, uptime)
	}
	if math.Abs(d.Load.Load1-loadavg) > 4 {
		t.Errorf("load1 = %.2f, /proc/loadavg says %.2f", d.Load.Load1, loadavg)
	}
	if d.Memory.Available == 0 || d.Memory.Available > d.Memory.Total {
		t.Errorf("memory.available = %d of %d", d.Memory.Available, d.Memory.Total)
	}
	if len(d.Disks) == 0 {
		t.Errorf("no disks")
	}
	for _, m := range []map[string]string{d.Capabilities.Tools, d.Capabilities.ToolVersions, d.Capabilities.ContainerRuntimeVersions, d.Labels} {
		if m == nil {
			t.Errorf("nil map in %+v", d.Capabilities)
		}
	}
	if d.Capabilities.FailedUnits == nil || d.GPU.Devices == nil {
		t.Errorf("nil slice: failed_units %v, gpu.devices %v", d.Capabilities.FailedUnits, d.GPU.Devices)
	}
	if p, ok := d.Capabilities.Tools["sh"]; !ok || !filepath.IsAbs(p) {
		t.Errorf("tools[sh] = %q, want an absolute path", p)
	}
	if d.Capabilities.PackageManager != "" && d.Updates.Checked && d.Updates.CheckedAt == "" {
		t.Errorf("updates checked without checked_at: %+v", d.Updates)
	}
	t.Logf("package manager %q: updates %+v; tool versions %v", d.Capabilities.PackageManager, d.Updates, d.Capabilities.ToolVersions)
}

// writeTool puts an executable shell script named name in dir.
func writeTool(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestToolVersionsFakeAndHanging probes a fake git (known version) and a node whose --version
// hangs (in a child that keeps the pipe open), found before the system directories by the
// test's tool lookup: git's version arrives, node is cut off at the probe timeout, and the
// rest of the inventory still arrives promptly.
func TestToolVersionsFakeAndHanging(t *testing.T) {
	dir := t.TempDir()
	writeTool(t, dir, "git", `echo "git version 9.8.7-fake"`)
	writeTool(t, dir, "node", `sleep 30; echo v1.0.0`)
	writeTool(t, dir, "docker", `echo "Docker version 99.1.2+test, build abc"`)
	h := newHarness(t, Config{ProbeTimeout: 300 * time.Millisecond, InventorySlowInterval: time.Hour})
	h.srv.lookTool = func(name string) (string, bool) {
		if p := filepath.Join(dir, name); exists(p) {
			return p, true
		}
		return lookSystemTool(name)
	}
	start := time.Now()
	var d protocol.DeviceInfo
	if o := h.open(protocol.MethodDeviceInfo, protocol.DeviceInfoParams{Refresh: true}).wait(&d); o.err != nil {
		t.Fatalf("device_info: %v", o.err)
	}
	took := time.Since(start)
	caps := d.Capabilities
	if caps.Tools["git"] != filepath.Join(dir, "git") || caps.ToolVersions["git"] != "9.8.7-fake" {
		t.Errorf("git: path %q version %q; want %s, 9.8.7-fake", caps.Tools["git"], caps.ToolVersions["git"], filepath.Join(dir, "git"))
	}
	if caps.Tools["node"] == "" {
		t.Errorf("node not in tools: %v", caps.Tools)
	}
	if v, ok := caps.ToolVersions["node"]; ok {
		t.Errorf("hanging node --version reported version %q; want it cut off", v)
	}
	if caps.ContainerRuntimeVersions["docker"] != "99.1.2+test" {
		t.Errorf("container_runtime_versions = %v, want docker 99.1.2+test", caps.ContainerRuntimeVersions)
	}
	if d.Hostname == "" || d.Memory.Total == 0 {
		t.Errorf("rest of the inventory missing: %+v", d)
	}
	// Generous bound: the hanging probe is cut at 300 ms (+500 ms pipe grace); the package
	// manager check may take a few seconds on a slow machine.
	if took > 20*time.Second {
		t.Errorf("device_info took %v with a hanging tool", took)
	}

	// The slow tier is cached: a second, non-refresh call does not run the probes again.
	writeTool(t, dir, "git", `echo "git version 1.0.0"`)
	var d2 protocol.DeviceInfo
	if o := h.open(protocol.MethodDeviceInfo, protocol.DeviceInfoParams{}).wait(&d2); o.err != nil {
		t.Fatal(o.err)
	}
	if d2.Capabilities.ToolVersions["git"] != "9.8.7-fake" {
		t.Errorf("cached git version = %q, want 9.8.7-fake", d2.Capabilities.ToolVersions["git"])
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"git version 2.39.5\n", "2.39.5"},
		{"Python 3.11.2", "3.11.2"},
		{"v20.19.2\n", "20.19.2"},
		{"go version go1.26.0 linux/amd64", "1.26.0"},
		{"Docker version 26.1.5+dfsg1, build a72d7cd", "26.1.5+dfsg1"},
		{"systemd 252 (252.39-1~deb12u1)\n+PAM +AUDIT", "252.39-1~deb12u1"},
		{"\nThis is perl 5, version 36, subversion 0 (v5.36.0)", "5.36.0"},
		{"BusyBox 1", "1"},
		{"\n\npodman version 4.3.1", "4.3.1"},
		{"GNU Make 4.3", "4.3"},
		{"curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1", "7.88.1"},
		{"jq-1.6", "1.6"},
		{"something without digits", "something without digits"},
		{"", ""},
	} {
		if got := parseVersion(tc.in); got != tc.want {
			t.Errorf("parseVersion(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestRunProbeCutsOffHangingChild(t *testing.T) {
	start := time.Now()
	_, _, err := runProbe(context.Background(), 200*time.Millisecond, "/bin/sh", "-c", "sleep 30 & sleep 30")
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v; want a cut-off within seconds", err, time.Since(start))
	}
}

func TestCollectGPU(t *testing.T) {
	root := t.TempDir()
	mk := func(path, content string) {
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if present, devs := collectGPU(root); present || len(devs) != 0 {
		t.Fatalf("empty root: present %v devices %v", present, devs)
	}
	mk("sys/class/drm/card0/device/vendor", "0x1234\n") // QEMU VGA: a display, not a GPU
	mk("sys/class/drm/card0-Virtual-1/status", "connected\n")
	if present, devs := collectGPU(root); present || len(devs) != 1 {
		t.Fatalf("virtual display: present %v devices %v", present, devs)
	}
	mk("sys/class/drm/card1/device/vendor", "0x10de\n")
	mk("proc/driver/nvidia/gpus/0000:01:00.0/information", "Model: \t NVIDIA A2\nIRQ: 42\n")
	present, devs := collectGPU(root)
	if !present || len(devs) != 2 || devs[0] != "nvidia: NVIDIA A2" {
		t.Fatalf("nvidia: present %v devices %q", present, devs)
	}
}
