package rpc

import (
	"context"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/load"
	"github.com/shirou/gopsutil/v4/mem"
	gnet "github.com/shirou/gopsutil/v4/net"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Device info timing: the whole answer is cached briefly, the static part (host, CPU model,
// tools) for longer, and a filesystem that does not answer statfs in time is left out.
const (
	infoTTL          = 10 * time.Second
	staticTTL        = 10 * time.Minute
	diskUsageWait    = 2 * time.Second
	defaultSlowTTL   = 6 * time.Hour
	failedUnitsWait  = 5 * time.Second
	maxDiskPartition = 256
)

// Tools looked up for Capabilities.Tools, in the system directories only (lookSystemTool).
var capabilityTools = []string{
	"sh", "bash", "busybox", "git", "curl", "wget", "python3", "python", "perl", "go", "node", "npm",
	"docker", "podman", "kubectl", "systemctl", "apt", "dnf", "yum", "zypper", "apk", "pacman", "opkg",
	"make", "gcc", "tar", "gzip", "unzip", "rsync", "jq", "ip", "ss", "sudo", "journalctl",
}

var packageManagers = []string{"apt", "dnf", "yum", "zypper", "apk", "pacman", "opkg"}

var containerRuntimes = []string{"docker", "podman", "containerd", "nerdctl", "ctr", "crictl", "lxc"}

// Filesystem types that are pseudo, in-memory or remote: never statfs'd (a dead NFS mount
// blocks it) and not shown as disks.
var skipFstypes = map[string]bool{
	"proc": true, "sysfs": true, "tmpfs": true, "devtmpfs": true, "devpts": true, "cgroup": true,
	"cgroup2": true, "securityfs": true, "debugfs": true, "tracefs": true, "pstore": true,
	"bpf": true, "mqueue": true, "hugetlbfs": true, "configfs": true, "fusectl": true,
	"autofs": true, "binfmt_misc": true, "rpc_pipefs": true, "nsfs": true, "ramfs": true,
	"squashfs": true, "efivarfs": true, "selinuxfs": true, "nfs": true, "nfs4": true, "nfsd": true,
	"cifs": true, "smb": true, "smb3": true, "smbfs": true, "9p": true, "ceph": true,
	"glusterfs": true, "afs": true, "none": true, "": true,
}

// Inventory holds the last device inventory and the facts collected in its two slower tiers.
// Every Server has its own unless Config.Inventory names one to share: the simulated edges of
// bench/scale all describe one machine, which is then probed once instead of once per edge.
type Inventory struct {
	mu       sync.Mutex
	last     *protocol.DeviceInfo
	lastAt   time.Time
	static   *staticInfo
	staticAt time.Time
	slow     *slowInfo
	slowAt   time.Time
	// stuck holds mount points whose statfs did not answer in time: they are skipped from then
	// on, so a dead mount costs one goroutine once, never one per collection.
	stuck map[string]bool
}

// staticInfo is what does not change while the edge runs (or changes rarely): read every
// staticTTL, from files and one quick command (failed units).
type staticInfo struct {
	host  host.InfoStat
	model string
	cores int
	caps  protocol.Capabilities
	gpu   protocol.GPUInfo
}

// slowInfo is what costs processes and seconds: versions and pending updates, read every
// Config.InventorySlowInterval.
type slowInfo struct {
	versions map[string]string
	updates  protocol.UpdatesInfo
}

// deviceInfo answers MethodDeviceInfo.
func (s *Server) deviceInfo(ctx context.Context, c *call) (any, error) {
	var p protocol.DeviceInfoParams
	if err := c.req.DecodeParams(&p); err != nil {
		return nil, err
	}
	return s.collectInfo(ctx, p.Refresh), nil
}

// collectInfo returns the device inventory, from cache unless refresh or stale.
func (s *Server) collectInfo(ctx context.Context, refresh bool) *protocol.DeviceInfo {
	ic := s.cfg.Inventory
	ic.mu.Lock()
	defer ic.mu.Unlock()
	now := time.Now()
	if !refresh && ic.last != nil && now.Sub(ic.lastAt) < infoTTL {
		return s.own(ic.last)
	}
	if refresh || ic.static == nil || now.Sub(ic.staticAt) > staticTTL {
		ic.static, ic.staticAt = collectStatic(ctx, s.look()), now
	}
	st := ic.static
	slowTTL := s.cfg.InventorySlowInterval
	if slowTTL <= 0 {
		slowTTL = defaultSlowTTL
	}
	if refresh || ic.slow == nil || now.Sub(ic.slowAt) > slowTTL {
		ic.slow, ic.slowAt = s.collectSlow(ctx, st), now
	}
	caps := st.caps
	caps.ToolVersions, caps.ContainerRuntimeVersions = map[string]string{}, map[string]string{}
	for name, v := range ic.slow.versions {
		if _, ok := caps.Tools[name]; ok {
			caps.ToolVersions[name] = v
		}
		if slices.Contains(caps.ContainerRuntimes, name) {
			caps.ContainerRuntimeVersions[name] = v
		}
	}
	d := &protocol.DeviceInfo{
		Edge:            s.cfg.Name,
		Hostname:        st.host.Hostname,
		OS:              st.host.OS,
		Platform:        st.host.Platform,
		PlatformVersion: st.host.PlatformVersion,
		KernelVersion:   st.host.KernelVersion,
		Arch:            st.host.KernelArch,
		CPU:             protocol.CPUInfo{Model: st.model, Cores: st.cores, LogicalCores: runtime.NumCPU()},
		Disks:           collectDisks(ctx, ic),
		Network:         collectNet(ctx),
		Capabilities:    caps,
		EdgeVersion:     s.cfg.Version,
		CollectedAt:     now.UTC().Format(time.RFC3339),
		GPU:             st.gpu,
		Updates:         ic.slow.updates,
		Labels:          map[string]string{},
	}
	if up, err := host.UptimeWithContext(ctx); err == nil {
		d.UptimeSeconds = up
	}
	if n, err := cpu.CountsWithContext(ctx, true); err == nil && n > 0 {
		d.CPU.LogicalCores = n
	}
	if pct, err := cpu.PercentWithContext(ctx, 0, false); err == nil && len(pct) > 0 {
		d.CPU.Percent = pct[0]
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		d.Memory = protocol.MemoryInfo{Total: vm.Total, Available: vm.Available, UsedPercent: vm.UsedPercent}
	}
	if l, err := load.AvgWithContext(ctx); err == nil {
		d.Load = protocol.LoadInfo{Load1: l.Load1, Load5: l.Load5, Load15: l.Load15}
	}
	// Fresh from when the collection ended: one that took longer than infoTTL (a package
	// manager that is slow to answer) must still serve the next call from cache.
	ic.last, ic.lastAt = d, time.Now()
	return s.own(d)
}

// own is d as this server reports it: with its own edge name and version (d may come from a
// shared Inventory). The copy is shallow: callers only encode it.
func (s *Server) own(d *protocol.DeviceInfo) *protocol.DeviceInfo {
	c := *d
	c.Edge, c.EdgeVersion = s.cfg.Name, s.cfg.Version
	return &c
}

// collectStatic gathers host identity, CPU model and capabilities.
func collectStatic(ctx context.Context, look toolLookup) *staticInfo {
	st := &staticInfo{}
	if h, err := host.InfoWithContext(ctx); err == nil {
		st.host = *h
	}
	if st.host.Hostname == "" {
		st.host.Hostname, _ = os.Hostname()
	}
	if st.host.OS == "" {
		st.host.OS = runtime.GOOS
	}
	if st.host.KernelArch == "" {
		st.host.KernelArch = runtime.GOARCH
	}
	if infos, err := cpu.InfoWithContext(ctx); err == nil && len(infos) > 0 {
		st.model = infos[0].ModelName
	}
	if n, err := cpu.CountsWithContext(ctx, false); err == nil {
		st.cores = n
	}
	st.caps = collectCapabilities(look)
	st.caps.FailedUnits = []string{}
	if st.caps.InitSystem == "systemd" {
		st.caps.FailedUnits = failedUnits(ctx, look, failedUnitsWait)
	}
	st.gpu.Present, st.gpu.Devices = collectGPU("/")
	return st
}

// collectSlow asks the tools for their versions and the package manager for pending updates,
// at the same time; each probe is bounded, so this returns within about
// defaultUpdatesTimeout even when a tool hangs.
func (s *Server) collectSlow(ctx context.Context, st *staticInfo) *slowInfo {
	timeout := s.cfg.ProbeTimeout
	if timeout <= 0 {
		timeout = defaultProbeTimeout
	}
	sl := &slowInfo{updates: protocol.UpdatesInfo{Security: -1}}
	paths := maps.Clone(st.caps.Tools)
	look := s.look()
	for _, rt := range st.caps.ContainerRuntimes {
		if p, ok := look(rt); ok {
			paths[rt] = p
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { sl.versions = toolVersions(ctx, paths, timeout) })
	if pm := st.caps.PackageManager; pm != "" {
		wg.Go(func() {
			start := time.Now()
			pending, security, ok := pendingUpdates(ctx, look, pm, max(timeout, defaultUpdatesTimeout))
			if ok {
				sl.updates = protocol.UpdatesInfo{Checked: true, Pending: pending, Security: security,
					CheckedAt: start.UTC().Format(time.RFC3339)}
			}
			s.log.Debug("pending updates checked", "package_manager", pm, "ok", ok, "pending", pending,
				"duration_ms", time.Since(start).Milliseconds())
		})
	}
	wg.Wait()
	return sl
}

// toolLookup finds a tool's executable for the inventory: lookSystemTool, or a test's.
type toolLookup func(name string) (string, bool)

// look is the server's toolLookup: lookSystemTool unless a test set another.
func (s *Server) look() toolLookup {
	if s.lookTool != nil {
		return s.lookTool
	}
	return lookSystemTool
}

// collectCapabilities finds tools, the package manager, init system and container runtimes,
// with look (the system directories, never the edge's PATH: see systemBinDirs).
func collectCapabilities(look toolLookup) protocol.Capabilities {
	caps := protocol.Capabilities{Tools: map[string]string{}, ContainerRuntimes: []string{}}
	for _, t := range capabilityTools {
		if p, ok := look(t); ok {
			caps.Tools[t] = p
		}
	}
	for _, pm := range packageManagers {
		if _, ok := look(pm); ok {
			caps.PackageManager = pm
			break
		}
	}
	for _, rt := range containerRuntimes {
		if _, ok := look(rt); ok {
			caps.ContainerRuntimes = append(caps.ContainerRuntimes, rt)
		}
	}
	caps.InitSystem = initSystem()
	return caps
}

// initSystem names PID 1's init system, or "" when it is not one we know (e.g. a container).
func initSystem() string {
	if st, err := os.Stat("/run/systemd/system"); err == nil && st.IsDir() {
		return "systemd"
	}
	b, _ := os.ReadFile("/proc/1/comm")
	switch comm := strings.TrimSpace(string(b)); comm {
	case "systemd":
		return "systemd"
	case "openrc-init":
		return "openrc"
	case "init":
		if _, err := os.Stat("/run/openrc"); err == nil {
			return "openrc"
		}
		if target, err := os.Readlink("/sbin/init"); err == nil && strings.Contains(target, "busybox") {
			return "busybox"
		}
		return "sysvinit"
	case "busybox":
		return "busybox"
	}
	return ""
}

// collectDisks lists local filesystems with their usage; each statfs is bounded in time and a
// mount point that did not answer is remembered in ic.stuck and skipped afterwards.
func collectDisks(ctx context.Context, ic *Inventory) []protocol.DiskInfo {
	out := []protocol.DiskInfo{}
	parts, err := disk.PartitionsWithContext(ctx, true)
	if err != nil {
		return out
	}
	seen := map[string]bool{}
	for _, p := range parts {
		if len(out) >= maxDiskPartition {
			break
		}
		if skipFstypes[p.Fstype] || strings.HasPrefix(p.Fstype, "fuse.") || seen[p.Mountpoint] || ic.stuck[p.Mountpoint] {
			continue
		}
		seen[p.Mountpoint] = true
		res := make(chan *disk.UsageStat, 1)
		go func() {
			u, err := disk.UsageWithContext(ctx, p.Mountpoint)
			if err != nil {
				u = nil
			}
			res <- u
		}()
		select {
		case u := <-res:
			if u != nil && u.Total > 0 {
				out = append(out, protocol.DiskInfo{Mount: p.Mountpoint, Fstype: p.Fstype, Total: u.Total, Free: u.Free, UsedPercent: u.UsedPercent})
			}
		case <-time.After(diskUsageWait):
			if ic.stuck == nil {
				ic.stuck = map[string]bool{}
			}
			ic.stuck[p.Mountpoint] = true
		case <-ctx.Done():
			return out
		}
	}
	return out
}

// collectNet lists network interfaces with their addresses (CIDR) and MAC.
func collectNet(ctx context.Context) []protocol.NetIface {
	out := []protocol.NetIface{}
	ifs, err := gnet.InterfacesWithContext(ctx)
	if err != nil {
		return out
	}
	for _, i := range ifs {
		n := protocol.NetIface{Name: i.Name, Addrs: []string{}, MAC: i.HardwareAddr}
		for _, a := range i.Addrs {
			n.Addrs = append(n.Addrs, a.Addr)
		}
		out = append(out, n)
	}
	return out
}
