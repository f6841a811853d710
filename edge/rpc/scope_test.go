package rpc

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fakeBusctl puts a busctl on PATH that records its arguments, one per line, in the returned
// file, and exits with code (printing msg to stderr).
func fakeBusctl(t *testing.T, code int, msg string) string {
	t.Helper()
	bin := t.TempDir()
	log := filepath.Join(t.TempDir(), "args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + log + "\necho '" + msg + "' >&2\nexit " + strconv.Itoa(code) + "\n"
	if err := os.WriteFile(filepath.Join(bin, "busctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	return log
}

func TestEnterScope(t *testing.T) {
	const id = "0123456789abcdef"
	const unit = "mcp-ssh-edge-job-" + id + ".scope"
	tests := []struct {
		name     string
		systemd  bool // the systemd runtime directory exists
		busctl   int  // -1: no busctl on PATH; else its exit code
		wantUnit string
		wantErr  string // substring; "" for no error
		called   bool
	}{
		{name: "no systemd: nothing to do", systemd: false, busctl: 0, called: false},
		{name: "systemd: the scope is created", systemd: true, busctl: 0, wantUnit: unit, called: true},
		{name: "systemd refuses: the job runs without a scope", systemd: true, busctl: 1, wantErr: "Access denied", called: true},
		{name: "systemd without busctl", systemd: true, busctl: -1, wantErr: "busctl is not on PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runDir := filepath.Join(t.TempDir(), "systemd")
			if tt.systemd {
				if err := os.Mkdir(runDir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			log := ""
			if tt.busctl >= 0 {
				log = fakeBusctl(t, tt.busctl, "Access denied")
			} else {
				t.Setenv("PATH", t.TempDir())
			}
			got, err := enterScope(context.Background(), runDir, id, 4242)
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
			if want := scopeArgs(unit, id, 4242); !slices.Equal(args, want) {
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
