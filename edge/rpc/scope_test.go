package rpc

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeBusctl puts a busctl on PATH that records its arguments, one per line, in the returned
// file and exits with code, printing msg to stderr. With move set it also does what systemd
// does: it writes the scope (its 8th argument) into cgroupFile.
func fakeBusctl(t *testing.T, code int, msg string, move bool, cgroupFile string) string {
	t.Helper()
	bin := t.TempDir()
	log := filepath.Join(t.TempDir(), "args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + log + "\n"
	if move {
		script += "echo \"0::/system.slice/$8\" > " + cgroupFile + "\n"
	}
	script += "echo '" + msg + "' >&2\nexit " + strconv.Itoa(code) + "\n"
	if err := os.WriteFile(filepath.Join(bin, "busctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	return log
}

func TestEnterScope(t *testing.T) {
	const id, pid = "0123456789abcdef", 4242
	const unit = "mcp-ssh-edge-job-" + id + ".scope"
	tests := []struct {
		name     string
		systemd  bool // the systemd runtime directory exists
		busctl   int  // -1: no busctl on PATH; else its exit code
		move     bool // busctl moves the process, as systemd does
		wantUnit string
		wantErr  string // substring; "" for no error
		called   bool
	}{
		{name: "no systemd: nothing to do", busctl: 0},
		{name: "systemd: the scope is created and the process moved", systemd: true, busctl: 0, move: true, wantUnit: unit, called: true},
		{name: "systemd refuses: the job runs without a scope", systemd: true, busctl: 1, wantErr: "Access denied", called: true},
		{name: "systemd never moves the process", systemd: true, busctl: 0, wantErr: "was not moved", called: true},
		{name: "systemd without busctl", systemd: true, busctl: -1, wantErr: "busctl is not on PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			h := scopeHost{runDir: filepath.Join(root, "systemd"), procDir: filepath.Join(root, "proc")}
			cgroup := filepath.Join(h.procDir, strconv.Itoa(pid), "cgroup")
			if err := os.MkdirAll(filepath.Dir(cgroup), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cgroup, []byte("0::/system.slice/mcp-ssh-edge.service\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if tt.systemd {
				if err := os.Mkdir(h.runDir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			log := ""
			if tt.busctl >= 0 {
				log = fakeBusctl(t, tt.busctl, "Access denied", tt.move, cgroup)
			} else {
				t.Setenv("PATH", t.TempDir())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			got, err := enterScope(ctx, h, id, pid)
			if got != tt.wantUnit {
				t.Errorf("unit = %q, want %q", got, tt.wantUnit)
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
			b, readErr := os.ReadFile(log)
			if called := log != "" && readErr == nil; called != tt.called {
				t.Fatalf("busctl called = %v, want %v", called, tt.called)
			}
			if !tt.called {
				return
			}
			args := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if want := scopeArgs(unit, id, pid); !slices.Equal(args, want) {
				t.Errorf("busctl args:\n got %q\nwant %q", args, want)
			}
		})
	}
}

func TestScopeArgs(t *testing.T) {
	got := strings.Join(scopeArgs("mcp-ssh-edge-job-ab.scope", "ab", 7), " ")
	want := "call --quiet org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager StartTransientUnit " +
		"ssa(sv)a(sa(sv)) mcp-ssh-edge-job-ab.scope fail 3 PIDs au 1 7 CollectMode s inactive-or-failed Description s mcp-ssh-edge job ab 0"
	if got != want {
		t.Errorf("scopeArgs:\n got %s\nwant %s", got, want)
	}
}

func TestRecordScope(t *testing.T) {
	tests := []struct {
		name, unit string
		err        error
		want       string // "" means no file
	}{
		{"scope created", "mcp-ssh-edge-job-ab.scope", nil, "mcp-ssh-edge-job-ab.scope\n"},
		{"no systemd", "", nil, ""},
		{"refused", "", os.ErrPermission, "error: permission denied\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			recordScope(dir, tt.unit, tt.err)
			b, err := os.ReadFile(filepath.Join(dir, jobScopeFile))
			if tt.want == "" {
				if err == nil {
					t.Fatalf("scope file written: %q", b)
				}
				return
			}
			if string(b) != tt.want {
				t.Errorf("scope file = %q, want %q (%v)", b, tt.want, err)
			}
		})
	}
}
