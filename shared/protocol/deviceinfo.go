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
}
