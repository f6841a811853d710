package forward

import (
	"os/exec"
	"strings"
	"testing"
)

// busyboxProbe is what ProbeScript prints on a small OpenWrt-like router.
const busyboxProbe = `@@hostname
router
@@os-release
NAME="OpenWrt"
ID="openwrt"
VERSION_ID="23.05.3"
@@uname
Linux
5.15.150
mips
@@meminfo
MemTotal:         124000 kB
MemFree:           20000 kB
Buffers:            1000 kB
Cached:            9000 kB
@@loadavg
0.10 0.20 0.30 1/80 1234
@@uptime
3600.55 3000.00
@@stat
cpu  200 0 100 700 0 0 0 0 0 0
@@cpuinfo
processor		: 0
cpu model		: MIPS 24Kc V7.4
@@mounts
/dev/root /rom squashfs ro 0 0
/dev/mtdblock5 /overlay jffs2 rw 0 0
tmpfs /tmp tmpfs rw 0 0
/dev/sda1 /mnt/usb\040disk ext4 rw 0 0
@@df
Filesystem           1024-blocks    Used Available Capacity Mounted on
/dev/root                 4096      4096         0 100% /rom
/dev/mtdblock5            8000      2000      6000  25% /overlay
tmpfs                    60000       100     59900   0% /tmp
/dev/sda1              1000000    500000    500000  50% /mnt/usb disk
@@ip
1: lo    inet 127.0.0.1/8 scope host lo\       valid_lft forever preferred_lft forever
2: br-lan    inet 192.168.1.1/24 brd 192.168.1.255 scope global br-lan\       valid_lft forever
2: br-lan    inet6 fd00::1/60 scope global noprefixroute \       valid_lft forever
@@mac
br-lan 00:11:22:33:44:55
lo 00:00:00:00:00:00
@@init
procd
lrwxrwxrwx    1 root     root   14 Jan  1 00:00 /sbin/init -> /bin/busybox
@@gpu
@@failed
@@tools
sh /bin/sh
busybox /bin/busybox
opkg /bin/opkg
ip /sbin/ip
evil relative/path
@@end
`

func TestParseProbe(t *testing.T) {
	d, cpu := ParseProbe(busyboxProbe, []uint64{100, 0, 50, 650, 0, 0, 0, 0, 0, 0})
	checks := []struct {
		name      string
		got, want any
	}{
		{"hostname", d.Hostname, "router"},
		{"platform", d.Platform, "openwrt"},
		{"version", d.PlatformVersion, "23.05.3"},
		{"os", d.OS, "linux"},
		{"arch", d.Arch, "mips"},
		{"kernel", d.KernelVersion, "5.15.150"},
		{"mem total", d.Memory.Total, uint64(124000 * 1024)},
		{"mem available (no MemAvailable)", d.Memory.Available, uint64(30000 * 1024)},
		{"load15", d.Load.Load15, 0.30},
		{"uptime", d.UptimeSeconds, uint64(3600)},
		{"cpu percent", d.CPU.Percent, 75.0},
		{"cpu model", d.CPU.Model, "MIPS 24Kc V7.4"},
		{"logical cores", d.CPU.LogicalCores, 1},
		{"disks", len(d.Disks), 2},
		{"disk with space", d.Disks[1].Mount, "/mnt/usb disk"},
		{"disk free", d.Disks[0].Free, uint64(6000 * 1024)},
		{"interfaces", len(d.Network), 2},
		{"br-lan addrs", strings.Join(d.Network[0].Addrs, ","), "192.168.1.1/24,fd00::1/60"},
		{"br-lan mac", d.Network[0].MAC, "00:11:22:33:44:55"},
		{"lo mac", d.Network[1].MAC, ""},
		{"package manager", d.Capabilities.PackageManager, "opkg"},
		{"init", d.Capabilities.InitSystem, "busybox"},
		{"tools", len(d.Capabilities.Tools), 4},
		{"gpu", d.GPU.Present, false},
		{"cpu sample", len(cpu), 10},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if d.Capabilities.ContainerRuntimes == nil || d.GPU.Devices == nil || d.Capabilities.FailedUnits == nil || d.Labels == nil {
		t.Error("nil slice or map")
	}
}

func TestParseProbeGarbage(t *testing.T) {
	for _, in := range []string{"", "@@uname\n", "@@df\nx y\n@@meminfo\nMemTotal: huge kB\n", strings.Repeat("@@x\n", 10000)} {
		d, _ := ParseProbe(in, nil)
		if d.Disks == nil || d.Network == nil || d.Capabilities.Tools == nil {
			t.Errorf("%q: nil slices", trunc(in, 20))
		}
	}
}

// The probe script is valid POSIX sh and reads only: run it here.
func TestProbeScriptRunsLocally(t *testing.T) {
	out, err := exec.Command("/bin/sh", "-c", ProbeScript()).Output()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := ParseProbe(string(out), nil)
	if d.OS != "linux" || d.Memory.Total == 0 || d.Capabilities.Tools["sh"] == "" {
		t.Errorf("%+v", d)
	}
}
