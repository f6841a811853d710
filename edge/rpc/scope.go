package rpc

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// scopeWait bounds creating a job's scope: the D-Bus call and the move that follows it.
const scopeWait = 5 * time.Second

// scopeHost is where enterScope looks: the directory that exists when systemd is the init
// system (sd_booted(3) checks the same) and the proc file system. Tests point them elsewhere.
type scopeHost struct{ runDir, procDir string }

// systemHost is the real one.
func systemHost() scopeHost { return scopeHost{runDir: "/run/systemd/system", procDir: "/proc"} }

// enterScope moves process pid (the job's supervisor, before it starts the job) into a new
// transient systemd scope unit of its own, mcp-ssh-edge-job-ID.scope, when systemd runs
// (runDir exists): the job then leaves the edge service's cgroup, so stopping, restarting or
// upgrading the edge cannot kill it whatever the unit's KillMode, and systemd accounts for
// it separately (`systemctl status mcp-ssh-edge-job-ID.scope`). It calls systemd's
// StartTransientUnit with busctl, which ships with systemd. It returns the unit name, "" when
// systemd does not run, or an error: the job then runs in the edge's cgroup as before.
// StartTransientUnit only queues the move, so it waits until pid's cgroup is the scope.
func enterScope(ctx context.Context, h scopeHost, id string, pid int) (string, error) {
	if st, err := os.Stat(h.runDir); err != nil || !st.IsDir() {
		return "", nil
	}
	busctl, err := exec.LookPath("busctl")
	if err != nil {
		return "", fmt.Errorf("systemd runs but busctl is not on PATH: %w", err)
	}
	unit := "mcp-ssh-edge-job-" + id + ".scope"
	ctx, cancel := context.WithTimeout(ctx, scopeWait)
	defer cancel()
	out, err := exec.CommandContext(ctx, busctl, scopeArgs(unit, id, pid)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("create systemd scope %s: %v: %s", unit, err, strings.TrimSpace(string(out)))
	}
	cgroup := filepath.Join(h.procDir, strconv.Itoa(pid), "cgroup")
	for {
		if b, err := os.ReadFile(cgroup); err == nil && bytes.Contains(b, []byte("/"+unit+"\n")) {
			return unit, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("systemd scope %s created, but process %d was not moved into it in time", unit, pid)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// scopeArgs are busctl's arguments for StartTransientUnit(unit, "fail", properties, no aux
// units) with the properties PIDs=[pid], CollectMode=inactive-or-failed (the unit is removed
// once the job ends, even if it failed) and a Description naming job id.
func scopeArgs(unit, id string, pid int) []string {
	return []string{"call", "--quiet", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
		"org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))",
		unit, "fail",
		"3",
		"PIDs", "au", "1", strconv.Itoa(pid),
		"CollectMode", "s", "inactive-or-failed",
		"Description", "s", "mcp-ssh-edge job " + id,
		"0"}
}

// recordScope writes the outcome of enterScope into the job's directory (jobScopeFile), for
// the operator: the unit name, or why there is none.
func recordScope(dir, unit string, err error) {
	line := unit
	if err != nil {
		line = "error: " + err.Error()
	}
	if line != "" {
		_ = os.WriteFile(filepath.Join(dir, jobScopeFile), []byte(line+"\n"), 0o600)
	}
}
