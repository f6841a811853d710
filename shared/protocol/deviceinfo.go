package protocol

// DeviceInfo is the inventory an edge reports (get_device_info). The same struct is the MCP
// tool's output schema, so its field names and descriptions are part of the contract. Slices
// and maps are never nil when sent.
type DeviceInfo struct {
	Edge            string       `json:"edge" jsonschema:"the edge's name"`
	Hostname        string       `json:"hostname" jsonschema:"the device's host name"`
	OS              string       `json:"os" jsonschema:"operating system, e.g. linux"`
	Platform        string       `json:"platform" jsonschema:"distribution, e.g. debian"`
	PlatformVersion string       `json:"platform_version" jsonschema:"distribution version"`
	KernelVersion   string       `json:"kernel_version" jsonschema:"kernel release"`
	Arch            string       `json:"arch" jsonschema:"machine architecture, e.g. x86_64 or aarch64"`
	UptimeSeconds   uint64       `json:"uptime_seconds" jsonschema:"seconds since boot"`
	CPU             CPUInfo      `json:"cpu" jsonschema:"processor"`
	Memory          MemoryInfo   `json:"memory" jsonschema:"memory in bytes"`
	Disks           []DiskInfo   `json:"disks" jsonschema:"mounted local filesystems"`
	Network         []NetIface   `json:"network" jsonschema:"network interfaces"`
	Load            LoadInfo     `json:"load" jsonschema:"load averages"`
	Capabilities    Capabilities `json:"capabilities" jsonschema:"what the device can do"`
	EdgeVersion     string       `json:"edge_version" jsonschema:"version of mcp-ssh-edge"`
	CollectedAt     string       `json:"collected_at" jsonschema:"when this was collected (RFC 3339 UTC)"`

	// Fields added by the inventory issue; an older edge leaves them at their zero values and
	// the gateway fills the empty maps and slices.

	GPU     GPUInfo           `json:"gpu" jsonschema:"graphics and accelerator devices"`
	Updates UpdatesInfo       `json:"updates" jsonschema:"pending package updates, as the package manager reports them"`
	Labels  map[string]string `json:"labels" jsonschema:"labels bound to this edge's key at the gateway (the ones find_edges selects on); set by the gateway"`
}

// GPUInfo says whether the device has a GPU or accelerator, and which.
type GPUInfo struct {
	Present bool     `json:"present" jsonschema:"true when at least one GPU or accelerator device was found"`
	Devices []string `json:"devices" jsonschema:"devices found, e.g. 'nvidia: NVIDIA A2' or 'drm card0 (vendor 0x8086)'"`
}

// UpdatesInfo counts pending package updates. Checking is slow, so the edge does it rarely.
type UpdatesInfo struct {
	Checked   bool   `json:"checked" jsonschema:"false when the package manager could not be asked (none, timed out, not supported)"`
	Pending   int    `json:"pending" jsonschema:"number of packages with a pending update"`
	Security  int    `json:"security" jsonschema:"how many of them are security updates; -1 when the package manager does not tell"`
	CheckedAt string `json:"checked_at" jsonschema:"when the package manager was last asked (RFC 3339 UTC), empty if never"`
}

// CPUInfo describes the processor.
type CPUInfo struct {
	Model        string  `json:"model" jsonschema:"CPU model name"`
	Cores        int     `json:"cores" jsonschema:"physical cores"`
	LogicalCores int     `json:"logical_cores" jsonschema:"logical CPUs"`
	Percent      float64 `json:"percent" jsonschema:"CPU use in percent since the previous sample"`
}

// MemoryInfo describes RAM in bytes.
type MemoryInfo struct {
	Total       uint64  `json:"total" jsonschema:"total bytes"`
	Available   uint64  `json:"available" jsonschema:"available bytes"`
	UsedPercent float64 `json:"used_percent" jsonschema:"percent in use"`
}

// DiskInfo describes one mounted filesystem.
type DiskInfo struct {
	Mount       string  `json:"mount" jsonschema:"mount point"`
	Fstype      string  `json:"fstype" jsonschema:"filesystem type"`
	Total       uint64  `json:"total" jsonschema:"size in bytes"`
	Free        uint64  `json:"free" jsonschema:"free bytes"`
	UsedPercent float64 `json:"used_percent" jsonschema:"percent in use"`
}

// NetIface describes one network interface.
type NetIface struct {
	Name  string   `json:"name" jsonschema:"interface name"`
	Addrs []string `json:"addrs" jsonschema:"addresses in CIDR form"`
	MAC   string   `json:"mac" jsonschema:"hardware address, empty if none"`
}

// LoadInfo holds the load averages.
type LoadInfo struct {
	Load1  float64 `json:"load1" jsonschema:"1-minute load average"`
	Load5  float64 `json:"load5" jsonschema:"5-minute load average"`
	Load15 float64 `json:"load15" jsonschema:"15-minute load average"`
}

// Capabilities says what a device offers for choosing it for a task.
type Capabilities struct {
	Tools             map[string]string `json:"tools" jsonschema:"common tools found on PATH: name to absolute path"`
	PackageManager    string            `json:"package_manager" jsonschema:"one of apt, dnf, yum, zypper, apk, pacman, opkg, or empty"`
	InitSystem        string            `json:"init_system" jsonschema:"systemd, openrc, sysvinit, busybox, or empty"`
	ContainerRuntimes []string          `json:"container_runtimes" jsonschema:"container runtimes found, e.g. docker, podman"`

	// Fields added by the inventory issue.

	ToolVersions             map[string]string `json:"tool_versions" jsonschema:"version of each tool in tools that answered --version in time: name to version (e.g. git: 2.39.5); a tool missing here did not answer"`
	ContainerRuntimeVersions map[string]string `json:"container_runtime_versions" jsonschema:"version of each container runtime: name to version"`
	FailedUnits              []string          `json:"failed_units" jsonschema:"systemd units in the failed state (empty when none or not systemd)"`
}

// Bounds DeviceInfo.Normalize applies to an inventory received from a peer.
const (
	maxInfoList   = 256 // disks, interfaces, tools, failed units, GPU devices
	maxInfoString = 512 // any one string
)

// Normalize makes every map and slice non-nil (the MCP output contract) and bounds what a peer
// sent: lists beyond 256 entries are cut and every string is at most 512 bytes. The gateway
// calls it on every inventory it receives, so an old edge (without the newer fields) and a
// misbehaving one both yield a valid, bounded answer.
func (d *DeviceInfo) Normalize() {
	for _, p := range []*string{&d.Edge, &d.Hostname, &d.OS, &d.Platform, &d.PlatformVersion,
		&d.KernelVersion, &d.Arch, &d.CPU.Model, &d.EdgeVersion, &d.CollectedAt, &d.Capabilities.PackageManager,
		&d.Capabilities.InitSystem, &d.Updates.CheckedAt} {
		*p = clip(*p)
	}
	d.Disks = boundList(d.Disks)
	for i := range d.Disks {
		d.Disks[i].Mount, d.Disks[i].Fstype = clip(d.Disks[i].Mount), clip(d.Disks[i].Fstype)
	}
	d.Network = boundList(d.Network)
	for i := range d.Network {
		n := &d.Network[i]
		n.Name, n.MAC = clip(n.Name), clip(n.MAC)
		n.Addrs = boundStrings(n.Addrs)
	}
	c := &d.Capabilities
	c.Tools = boundMap(c.Tools)
	c.ToolVersions = boundMap(c.ToolVersions)
	c.ContainerRuntimeVersions = boundMap(c.ContainerRuntimeVersions)
	c.ContainerRuntimes = boundStrings(c.ContainerRuntimes)
	c.FailedUnits = boundStrings(c.FailedUnits)
	d.GPU.Devices = boundStrings(d.GPU.Devices)
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
}

func clip(s string) string {
	if len(s) > maxInfoString {
		return s[:maxInfoString]
	}
	return s
}

func boundList[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	if len(s) > maxInfoList {
		return s[:maxInfoList]
	}
	return s
}

func boundStrings(s []string) []string {
	s = boundList(s)
	for i := range s {
		s[i] = clip(s[i])
	}
	return s
}

func boundMap(m map[string]string) map[string]string {
	out := make(map[string]string, min(len(m), maxInfoList))
	for k, v := range m {
		if len(out) >= maxInfoList {
			break
		}
		out[clip(k)] = clip(v)
	}
	return out
}
