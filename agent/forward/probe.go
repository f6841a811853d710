package forward

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// probeTools are the tools DeviceInfo looks for on PATH (the companion's list).
var probeTools = []string{
	"sh", "bash", "busybox", "git", "curl", "wget", "python3", "python", "perl", "go", "node", "npm",
	"docker", "podman", "kubectl", "systemctl", "apt", "dnf", "yum", "zypper", "apk", "pacman", "opkg",
	"make", "gcc", "tar", "gzip", "unzip", "rsync", "jq", "ip", "ss", "sudo", "journalctl",
	"containerd", "nerdctl", "ctr", "crictl", "lxc",
}

var (
	packageManagers   = []string{"apt", "dnf", "yum", "zypper", "apk", "pacman", "opkg"}
	containerRuntimes = []string{"docker", "podman", "containerd", "nerdctl", "ctr", "crictl", "lxc"}
)

// Pseudo, in-memory and network filesystems are not disks.
var skipFstypes = map[string]bool{
	"proc": true, "sysfs": true, "tmpfs": true, "devtmpfs": true, "devpts": true, "cgroup": true,
	"cgroup2": true, "securityfs": true, "debugfs": true, "tracefs": true, "pstore": true,
	"bpf": true, "mqueue": true, "hugetlbfs": true, "configfs": true, "fusectl": true,
	"autofs": true, "binfmt_misc": true, "rpc_pipefs": true, "nsfs": true, "ramfs": true,
	"squashfs": true, "efivarfs": true, "selinuxfs": true, "nfs": true, "nfs4": true, "nfsd": true,
	"cifs": true, "smb": true, "smb3": true, "smbfs": true, "9p": true, "ceph": true,
	"glusterfs": true, "afs": true, "none": true, "overlay": true, "": true,
}

// probeTimeout bounds one probe; probeMaxOutput bounds what it may print.
const (
	probeTimeout   = 30 * time.Second
	probeMaxOutput = 1 << 20
)

// ProbeScript is the read-only script DeviceInfo runs with /bin/sh: it only reads /proc,
// /sys and /etc files and runs uname, df, ip and command -v. Each section starts with a
// line "@@name".
func ProbeScript() string {
	var b strings.Builder
	b.WriteString(`export LC_ALL=C
echo @@hostname; cat /proc/sys/kernel/hostname 2>/dev/null || uname -n
echo @@os-release; cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
echo @@uname; uname -s; uname -r; uname -m
echo @@meminfo; cat /proc/meminfo 2>/dev/null
echo @@loadavg; cat /proc/loadavg 2>/dev/null
echo @@uptime; cat /proc/uptime 2>/dev/null
echo @@stat; grep '^cpu ' /proc/stat 2>/dev/null
echo @@cpuinfo; grep -E '^(processor|model name|Hardware|Processor|cpu model|physical id|core id)[[:space:]]*:' /proc/cpuinfo 2>/dev/null
echo @@mounts; cat /proc/mounts 2>/dev/null
echo @@df; df -P -k 2>/dev/null
echo @@ip; ip -o addr show 2>/dev/null
echo @@mac; for d in /sys/class/net/*; do [ -r "$d/address" ] && echo "${d##*/} $(cat "$d/address")"; done
echo @@init; cat /proc/1/comm 2>/dev/null; [ -d /run/systemd/system ] && echo systemd-run; [ -e /run/openrc ] && echo openrc-run; ls -l /sbin/init 2>/dev/null
echo @@gpu; for d in /sys/class/drm/card[0-9]*; do [ -r "$d/device/vendor" ] && echo "${d##*/} $(cat "$d/device/vendor")"; done; [ -e /dev/nvidia0 ] && echo nvidia
echo @@failed; command -v systemctl >/dev/null 2>&1 && systemctl list-units --state=failed --no-legend --plain 2>/dev/null | head -n 256
echo @@tools
`)
	b.WriteString("for t in")
	for _, t := range probeTools {
		b.WriteString(" " + t)
	}
	b.WriteString(`; do p=$(command -v "$t" 2>/dev/null) && echo "$t $p"; done
echo @@end
`)
	return b.String()
}

// DeviceInfo implements gateway.Edge: the last probe's answer while it is younger than
// Options.InfoMaxAge, else (or with refresh) a new probe. Pending updates and tool versions
// are not probed (they are slow or need more than reading); Updates.Checked is false.
func (e *Edge) DeviceInfo(ctx context.Context, rid string, refresh bool) (protocol.DeviceInfo, error) {
	h := e.h
	if _, err := h.current(); err != nil {
		return protocol.DeviceInfo{}, err
	}
	h.mu.Lock()
	cached, at := h.info, h.infoAt
	h.mu.Unlock()
	if cached != nil && !refresh && time.Since(at) < h.f.opts.InfoMaxAge {
		return e.finish(cloneInfo(cached)), nil
	}
	var out strings.Builder
	var mu sync.Mutex
	outFn := func(t protocol.FrameType, b []byte) {
		if t == protocol.FrameStdout {
			mu.Lock()
			out.Write(b)
			mu.Unlock()
		}
	}
	res, err := e.Exec(ctx, rid, protocol.ExecParams{Argv: []string{"/bin/sh", "-c", ProbeScript()},
		TimeoutMs: probeTimeout.Milliseconds(), MaxOutputBytes: probeMaxOutput}, nil, outFn)
	if err != nil {
		return protocol.DeviceInfo{}, fmt.Errorf("device info probe on %s: %w", h.entry.Name, err)
	}
	if res.TimedOut {
		return protocol.DeviceInfo{}, protocol.Errorf(protocol.CodeIO, "device info probe on %s timed out after %s", h.entry.Name, probeTimeout)
	}
	mu.Lock()
	text := out.String()
	mu.Unlock()
	h.mu.Lock()
	prev := h.prevCPU
	h.mu.Unlock()
	d, cpu := ParseProbe(text, prev)
	d.CollectedAt = time.Now().UTC().Format(time.RFC3339)
	d.Normalize()
	h.mu.Lock()
	h.info, h.infoAt, h.prevCPU = &d, time.Now(), cpu
	h.mu.Unlock()
	h.f.changed()
	return e.finish(cloneInfo(&d)), nil
}

// cloneInfo is a deep copy of a kept DeviceInfo: callers may change what they get.
func cloneInfo(d *protocol.DeviceInfo) protocol.DeviceInfo {
	var out protocol.DeviceInfo
	b, err := json.Marshal(d)
	if err == nil {
		err = json.Unmarshal(b, &out)
	}
	if err != nil { // cannot happen for this plain struct
		out = protocol.DeviceInfo{}
	}
	return out
}

// finish sets what the gateway owns: name and labels; and bounds the rest.
func (e *Edge) finish(d protocol.DeviceInfo) protocol.DeviceInfo {
	d.Normalize()
	d.Edge = e.h.entry.Name
	d.Labels = cloneLabels(e.labels)
	return d
}

// ParseProbe parses ProbeScript's output into a DeviceInfo (every map and slice non-nil).
// prevCPU is the previous probe's /proc/stat cpu counters, for CPU percent (nil: 0); the
// counters of this probe are returned for the next one.
func ParseProbe(text string, prevCPU []uint64) (protocol.DeviceInfo, []uint64) {
	sec := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if name, ok := strings.CutPrefix(line, "@@"); ok && !strings.ContainsAny(name, " \t") {
			cur = name
			continue
		}
		if cur != "" && len(sec[cur]) < 4096 {
			sec[cur] = append(sec[cur], line)
		}
	}
	d := protocol.DeviceInfo{Disks: []protocol.DiskInfo{}, Network: []protocol.NetIface{}}
	d.Capabilities = protocol.Capabilities{Tools: map[string]string{}, ContainerRuntimes: []string{},
		ToolVersions: map[string]string{}, ContainerRuntimeVersions: map[string]string{}, FailedUnits: []string{}}
	d.GPU.Devices = []string{}
	d.Labels = map[string]string{}
	d.Updates.Security = -1

	if l := sec["hostname"]; len(l) > 0 {
		d.Hostname = strings.TrimSpace(l[0])
	}
	for _, l := range sec["os-release"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"'`)
		switch k {
		case "ID":
			d.Platform = v
		case "VERSION_ID":
			d.PlatformVersion = v
		}
	}
	if l := sec["uname"]; len(l) >= 3 {
		d.OS, d.KernelVersion, d.Arch = strings.ToLower(strings.TrimSpace(l[0])), strings.TrimSpace(l[1]), strings.TrimSpace(l[2])
	}
	mem := map[string]uint64{}
	for _, l := range sec["meminfo"] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) > 0 {
			if n, err := strconv.ParseUint(f[0], 10, 64); err == nil {
				mem[k] = n * 1024
			}
		}
	}
	d.Memory.Total = mem["MemTotal"]
	d.Memory.Available = mem["MemAvailable"]
	if _, ok := mem["MemAvailable"]; !ok {
		d.Memory.Available = mem["MemFree"] + mem["Buffers"] + mem["Cached"]
	}
	if d.Memory.Total > 0 {
		d.Memory.UsedPercent = round2(100 * float64(d.Memory.Total-min(d.Memory.Available, d.Memory.Total)) / float64(d.Memory.Total))
	}
	if l := sec["loadavg"]; len(l) > 0 {
		f := strings.Fields(l[0])
		if len(f) >= 3 {
			d.Load.Load1, _ = strconv.ParseFloat(f[0], 64)
			d.Load.Load5, _ = strconv.ParseFloat(f[1], 64)
			d.Load.Load15, _ = strconv.ParseFloat(f[2], 64)
		}
	}
	if l := sec["uptime"]; len(l) > 0 {
		if f := strings.Fields(l[0]); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil && v > 0 {
				d.UptimeSeconds = uint64(v)
			}
		}
	}
	var cpu []uint64
	if l := sec["stat"]; len(l) > 0 {
		for _, f := range strings.Fields(l[0])[1:] {
			n, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				break
			}
			cpu = append(cpu, n)
		}
		d.CPU.Percent = cpuPercent(prevCPU, cpu)
	}
	parseCPUInfo(sec["cpuinfo"], &d.CPU)
	parseDisks(sec["mounts"], sec["df"], &d)
	parseNetwork(sec["ip"], sec["mac"], &d)
	parseCapabilities(sec, &d)
	return d, cpu
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// cpuPercent is the busy share between two /proc/stat cpu samples (user nice system idle
// iowait irq softirq steal …).
func cpuPercent(prev, cur []uint64) float64 {
	if len(prev) < 4 || len(cur) < 4 || len(prev) != len(cur) {
		return 0
	}
	var total, idle uint64
	for i := range cur {
		if cur[i] < prev[i] {
			return 0
		}
		delta := cur[i] - prev[i]
		if i < 8 {
			total += delta
		}
		if i == 3 || i == 4 {
			idle += delta
		}
	}
	if total == 0 {
		return 0
	}
	return round2(100 * float64(total-idle) / float64(total))
}

func parseCPUInfo(lines []string, c *protocol.CPUInfo) {
	cores := map[string]bool{}
	for _, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "processor":
			c.LogicalCores++
		case "model name", "Hardware", "cpu model":
			if c.Model == "" {
				c.Model = v
			}
		case "Processor":
			if c.Model == "" && v != "" && !isDigits(v) {
				c.Model = v
			}
		}
	}
	// physical id / core id pairs, in order.
	phys := ""
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ":")
		switch strings.TrimSpace(k) {
		case "physical id":
			phys = strings.TrimSpace(v)
		case "core id":
			cores[phys+"/"+strings.TrimSpace(v)] = true
		}
	}
	c.Cores = len(cores)
	if c.Cores == 0 {
		c.Cores = c.LogicalCores
	}
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// parseDisks takes fstypes from /proc/mounts and sizes from df -P -k.
func parseDisks(mounts, df []string, d *protocol.DeviceInfo) {
	fstype := map[string]string{}
	for _, l := range mounts {
		f := strings.Fields(l)
		if len(f) >= 3 {
			fstype[unescapeMount(f[1])] = f[2]
		}
	}
	seen := map[string]bool{}
	for i, l := range df {
		f := strings.Fields(l)
		if i == 0 && len(f) > 0 && f[0] == "Filesystem" || len(f) < 6 {
			continue
		}
		mount := strings.Join(f[5:], " ")
		t := fstype[mount]
		if skipFstypes[t] || seen[mount] {
			continue
		}
		total, err1 := strconv.ParseUint(f[1], 10, 64)
		avail, err2 := strconv.ParseUint(f[3], 10, 64)
		used, err3 := strconv.ParseUint(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || total == 0 {
			continue
		}
		seen[mount] = true
		di := protocol.DiskInfo{Mount: mount, Fstype: t, Total: total * 1024, Free: avail * 1024}
		if used+avail > 0 {
			di.UsedPercent = round2(100 * float64(used) / float64(used+avail))
		}
		d.Disks = append(d.Disks, di)
	}
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for a space, …).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parseNetwork reads `ip -o addr show` and the interfaces' MAC addresses.
func parseNetwork(ipLines, macLines []string, d *protocol.DeviceInfo) {
	byName := map[string]*protocol.NetIface{}
	var order []string
	get := func(name string) *protocol.NetIface {
		if n := byName[name]; n != nil {
			return n
		}
		if len(order) >= 256 {
			return nil
		}
		n := &protocol.NetIface{Name: name, Addrs: []string{}}
		byName[name] = n
		order = append(order, name)
		return n
	}
	for _, l := range macLines {
		f := strings.Fields(l)
		if len(f) == 2 {
			if n := get(f[0]); n != nil && f[1] != "00:00:00:00:00:00" {
				n.MAC = f[1]
			}
		}
	}
	for _, l := range ipLines {
		f := strings.Fields(l)
		if len(f) < 4 || (f[2] != "inet" && f[2] != "inet6") {
			continue
		}
		name, _, _ := strings.Cut(f[1], "@")
		if n := get(name); n != nil && len(n.Addrs) < 256 {
			n.Addrs = append(n.Addrs, f[3])
		}
	}
	slices.Sort(order)
	for _, name := range order {
		d.Network = append(d.Network, *byName[name])
	}
}

func parseCapabilities(sec map[string][]string, d *protocol.DeviceInfo) {
	c := &d.Capabilities
	for _, l := range sec["tools"] {
		name, p, ok := strings.Cut(l, " ")
		if ok && strings.HasPrefix(p, "/") && slices.Contains(probeTools, name) {
			c.Tools[name] = p
		}
	}
	for _, pm := range packageManagers {
		if _, ok := c.Tools[pm]; ok {
			c.PackageManager = pm
			break
		}
	}
	for _, rt := range containerRuntimes {
		if _, ok := c.Tools[rt]; ok {
			c.ContainerRuntimes = append(c.ContainerRuntimes, rt)
		}
	}
	initLines := sec["init"]
	joined := strings.Join(initLines, "\n")
	switch {
	case slices.Contains(initLines, "systemd") || slices.Contains(initLines, "systemd-run"):
		c.InitSystem = "systemd"
	case slices.Contains(initLines, "openrc-run") || slices.Contains(initLines, "openrc-init"):
		c.InitSystem = "openrc"
	case strings.Contains(joined, "busybox"):
		c.InitSystem = "busybox"
	case slices.Contains(initLines, "init"):
		c.InitSystem = "sysvinit"
	}
	if c.InitSystem == "systemd" {
		for _, l := range sec["failed"] {
			if f := strings.Fields(l); len(f) > 0 && len(c.FailedUnits) < 256 {
				c.FailedUnits = append(c.FailedUnits, f[0])
			}
		}
	}
	vendors := map[string]string{"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel", "0x13b5": "arm", "0x5143": "qualcomm"}
	for _, l := range sec["gpu"] {
		f := strings.Fields(l)
		switch {
		case len(f) == 1 && f[0] == "nvidia":
			d.GPU.Devices = append(d.GPU.Devices, "nvidia: /dev/nvidia0")
		case len(f) == 2:
			v := f[1]
			if name, ok := vendors[v]; ok {
				v = name + " " + v
			}
			d.GPU.Devices = append(d.GPU.Devices, fmt.Sprintf("drm %s (vendor %s)", f[0], v))
		}
	}
	d.GPU.Present = len(d.GPU.Devices) > 0
}

// summarize is the find_edges summary of a probed DeviceInfo.
func summarize(d *protocol.DeviceInfo, at time.Time) gateway.InventorySummary {
	s := gateway.InventorySummary{
		OS: d.OS, Platform: d.Platform, PlatformVersion: d.PlatformVersion, Arch: d.Arch,
		LogicalCores: d.CPU.LogicalCores, Load1: d.Load.Load1,
		MemoryTotal: d.Memory.Total, MemoryAvailable: d.Memory.Available,
		ContainerRuntimes: slices.Clone(d.Capabilities.ContainerRuntimes),
		PackageManager:    d.Capabilities.PackageManager, InitSystem: d.Capabilities.InitSystem,
		UpdatesChecked: d.Updates.Checked, PendingUpdates: d.Updates.Pending, SecurityUpdates: d.Updates.Security,
		FailedUnits: len(d.Capabilities.FailedUnits), GPU: d.GPU.Present, ReceivedAt: at,
	}
	if t, err := time.Parse(time.RFC3339, d.CollectedAt); err == nil {
		s.CollectedAt = t
	}
	for _, disk := range d.Disks {
		if disk.Free > s.DiskFree {
			s.DiskFree, s.DiskFreeMount = disk.Free, disk.Mount
		}
	}
	names := map[string]bool{}
	for t := range d.Capabilities.Tools {
		names[t] = true
	}
	for _, rt := range d.Capabilities.ContainerRuntimes {
		names[rt] = true
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		s.Tools = append(s.Tools, n)
		s.ToolVersions = append(s.ToolVersions, d.Capabilities.ToolVersions[n])
	}
	return s
}
