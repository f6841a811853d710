package rpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Probe bounds: every command the inventory runs is cut off at its timeout (its whole process
// group is killed), and what it prints is read up to probeOutputMax.
const (
	defaultProbeTimeout   = 5 * time.Second  // one `tool --version`
	defaultUpdatesTimeout = 45 * time.Second // asking the package manager for pending updates
	probeOutputMax        = 1 << 20
	probeWorkers          = 4 // version probes run at once
	probeWaitDelay        = 500 * time.Millisecond
)

// versionArgs is how each tool whose version is reported is asked for it; tools not listed
// answer `--version`.
var versionArgs = map[string][]string{
	"go":      {"version"},
	"kubectl": {"version", "--client"},
	"ctr":     {"version"},
	"lxc":     {"--version"},
}

// versionedTools are the tools (and container runtimes) whose versions are reported.
var versionedTools = []string{
	"bash", "git", "curl", "wget", "python3", "python", "perl", "go", "node", "npm", "docker",
	"podman", "kubectl", "systemctl", "make", "gcc", "rsync", "jq", "tar", "sudo",
	"containerd", "nerdctl", "ctr", "crictl", "lxc",
}

// probeEnv is the environment probes run with: the trusted system directories as PATH (never
// the edge's own, see systemBinDirs), the C locale (parsable output), and nothing else of the
// edge's environment.
func probeEnv() []string {
	return []string{"PATH=" + systemPATH(), "LANG=C", "LC_ALL=C", "HOME=/nonexistent"}
}

// runProbe runs argv (argv[0] an absolute path, found by lookSystemTool) with a timeout and returns its stdout and stderr (each at most
// probeOutputMax bytes). On timeout the process group is killed and the pipes abandoned after
// probeWaitDelay, so a child that keeps the pipe open cannot stall the edge either. A non-zero
// exit is returned as *exec.ExitError with the output.
func runProbe(ctx context.Context, timeout time.Duration, argv ...string) (stdout, stderr []byte, err error) {
	if len(argv) == 0 || !filepath.IsAbs(argv[0]) {
		return nil, nil, errNotSystemTool
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = probeEnv()
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = probeWaitDelay
	var out, errOut cappedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		return out.b.Bytes(), errOut.b.Bytes(), fmt.Errorf("%s: cut off after %v: %w", argv[0], timeout, ctx.Err())
	}
	return out.b.Bytes(), errOut.b.Bytes(), err
}

// cappedBuffer keeps the first probeOutputMax bytes written to it and discards the rest.
type cappedBuffer struct{ b bytes.Buffer }

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := probeOutputMax - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// toolVersions asks each of the given tools (name → absolute path) for its version, a few at
// a time, each bounded by timeout. Tools that fail or time out are left out.
func toolVersions(ctx context.Context, paths map[string]string, timeout time.Duration) map[string]string {
	out := map[string]string{}
	var mu sync.Mutex
	sem := make(chan struct{}, probeWorkers)
	var wg sync.WaitGroup
	for _, name := range versionedTools {
		path, ok := paths[name]
		if !ok {
			continue
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			args := versionArgs[name]
			if args == nil {
				args = []string{"--version"}
			}
			stdout, stderr, err := runProbe(ctx, timeout, append([]string{path}, args...)...)
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				return // not started, or cut off
			}
			text := stdout
			if len(bytes.TrimSpace(text)) == 0 {
				text = stderr
			}
			if v := parseVersion(string(text)); v != "" {
				mu.Lock()
				out[name] = v
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

var (
	versionTokenRE = regexp.MustCompile(`^v?(\d+(?:[.\-+~_][0-9A-Za-z]+)*)$`)
	dottedRE       = regexp.MustCompile(`\d+(?:\.\d+)+(?:[-+~][0-9A-Za-z.~+-]*[0-9A-Za-z])?`)
)

// parseVersion finds the version in a tool's --version output, looking at its first line: a
// token that is a dotted version ("2.39.5", "v20.19.2"), else a dotted number inside a token
// ("go1.26.0" → "1.26.0"), else a numeric token ("252"), else the line itself, shortened.
func parseVersion(s string) string {
	line := ""
	for l := range strings.SplitSeq(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			line = l
			break
		}
	}
	if line == "" {
		return ""
	}
	var toks []string
	for _, tok := range strings.Fields(line) {
		toks = append(toks, strings.Trim(tok, ",;:()[]"))
	}
	for _, tok := range toks {
		if m := versionTokenRE.FindStringSubmatch(tok); m != nil && strings.Contains(m[1], ".") {
			return m[1]
		}
	}
	if m := dottedRE.FindString(line); m != "" {
		return m
	}
	for _, tok := range toks {
		if m := versionTokenRE.FindStringSubmatch(tok); m != nil {
			return m[1]
		}
	}
	return clipString(line, 64)
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// pendingUpdates asks the package manager, from its local cache only (no network), how many
// packages have updates and how many of those are security updates (-1: it does not tell).
// look finds the package manager's executable (lookSystemTool).
func pendingUpdates(ctx context.Context, look toolLookup, pm string, timeout time.Duration) (pending, security int, ok bool) {
	run := func(argv ...string) ([]string, bool) {
		path, found := look(argv[0])
		if !found {
			return nil, false
		}
		argv = append([]string{path}, argv[1:]...)
		stdout, _, err := runProbe(ctx, timeout, argv...)
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 100) { // dnf/yum: 100 = updates
			if !(errors.As(err, &ee) && pm == "pacman" && ee.ExitCode() == 1) { // pacman: 1 = none
				return nil, false
			}
		}
		var lines []string
		for l := range strings.SplitSeq(string(stdout), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				lines = append(lines, l)
			}
		}
		return lines, true
	}
	security = -1
	switch pm {
	case "apt":
		lines, ok := run("apt-get", "-s", "-o", "Debug::NoLocking=1", "upgrade")
		if !ok {
			return 0, -1, false
		}
		security = 0
		for _, l := range lines {
			if strings.HasPrefix(l, "Inst ") {
				pending++
				if strings.Contains(strings.ToLower(l), "security") {
					security++
				}
			}
		}
		return pending, security, true
	case "dnf", "yum":
		lines, ok := run(pm, "-q", "-C", "check-update")
		if !ok {
			return 0, -1, false
		}
		for _, l := range lines {
			if f := strings.Fields(l); len(f) == 3 && strings.Contains(f[0], ".") && !strings.HasPrefix(l, "Obsoleting") {
				pending++
			}
		}
		if sec, ok := run(pm, "-q", "-C", "updateinfo", "list", "--security"); ok {
			security = len(sec)
		}
		return pending, security, true
	case "zypper":
		lines, ok := run("zypper", "-q", "--no-refresh", "list-updates")
		if !ok {
			return 0, -1, false
		}
		for _, l := range lines {
			if strings.HasPrefix(l, "v ") {
				pending++
			}
		}
		return pending, -1, true
	case "apk":
		lines, ok := run("apk", "list", "-u")
		return len(lines), -1, ok
	case "pacman":
		lines, ok := run("pacman", "-Qu")
		return len(lines), -1, ok
	case "opkg":
		lines, ok := run("opkg", "list-upgradable")
		return len(lines), -1, ok
	}
	return 0, -1, false
}

// failedUnits lists systemd units in the failed state (at most 256).
func failedUnits(ctx context.Context, look toolLookup, timeout time.Duration) []string {
	out := []string{}
	systemctl, ok := look("systemctl")
	if !ok {
		return out
	}
	stdout, _, err := runProbe(ctx, timeout, systemctl, "--failed", "--no-legend", "--plain", "--no-pager")
	if err != nil {
		return out
	}
	for l := range strings.SplitSeq(string(stdout), "\n") {
		if f := strings.Fields(l); len(f) > 0 && len(out) < 256 {
			out = append(out, f[0])
		}
	}
	return out
}

// gpuVendors names PCI display vendors that count as a GPU; other display devices (BMC and
// virtual adapters) are listed but do not make GPU.Present true.
var gpuVendors = map[string]string{"0x10de": "nvidia", "0x1002": "amd", "0x8086": "intel", "0x13b5": "arm", "0x5143": "qualcomm"}

// collectGPU looks for GPUs under root ("/" on a device) in /proc, /sys and /dev only (no
// command runs): NVIDIA's driver entries, DRM cards with their PCI vendor, AMD's compute device.
func collectGPU(root string) (present bool, devices []string) {
	devices = []string{}
	infos, _ := filepath.Glob(filepath.Join(root, "proc/driver/nvidia/gpus/*/information"))
	for _, f := range infos {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		model := "unknown model"
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "Model" {
				model = strings.TrimSpace(v)
			}
		}
		devices = append(devices, "nvidia: "+clipString(model, 128))
		present = true
	}
	cards, _ := filepath.Glob(filepath.Join(root, "sys/class/drm/card*"))
	slices.Sort(cards)
	for _, c := range cards {
		name := filepath.Base(c)
		if strings.Contains(name, "-") || len(devices) >= 16 { // connectors: card0-HDMI-A-1
			continue
		}
		b, err := os.ReadFile(filepath.Join(c, "device/vendor"))
		vendor := strings.TrimSpace(string(b))
		if err != nil {
			if _, err := os.Stat(filepath.Join(c, "device/driver")); err != nil {
				continue
			}
			vendor = "platform"
		}
		label, isGPU := gpuVendors[vendor]
		if !isGPU {
			label = "display"
		}
		if isGPU && label == "nvidia" && present {
			continue // already listed from the driver
		}
		devices = append(devices, fmt.Sprintf("%s: drm %s (vendor %s)", label, name, vendor))
		present = present || isGPU
	}
	if _, err := os.Stat(filepath.Join(root, "dev/kfd")); err == nil {
		devices = append(devices, "amd: kfd compute device")
		present = true
	}
	return present, devices
}
