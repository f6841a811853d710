package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSettings(t *testing.T) {
	pin := "SHA256:" + strings.Repeat("A", 43)
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string // substring naming the variable; "" = ok
		check   func(s *settings) bool
	}{
		{"defaults", nil, nil, "", func(s *settings) bool {
			return s.AllowShell && s.MaxConcurrent == 32 && s.KeepaliveInterval.String() == "15s" && s.BackoffMax.String() == "30s"
		}},
		{"env", map[string]string{"EDGE_NAME": "Pi-4", "EDGE_LABELS": "site=lab, role=cam", "EDGE_ALLOW_SHELL": "false", "EDGE_GATEWAY": "a:1,b:2"}, nil, "", func(s *settings) bool {
			return s.Name == "pi-4" && s.labels["role"] == "cam" && !s.AllowShell && len(s.Gateway) == 2
		}},
		{"flags override env", map[string]string{"EDGE_MAX_CONCURRENT": "5", "EDGE_GATEWAY": "a:1"}, []string{"--max-concurrent=7", "--gateway", "c:3", "--allow-shell=false"}, "", func(s *settings) bool {
			return s.MaxConcurrent == 7 && s.Gateway[0] == "c:3" && !s.AllowShell
		}},
		{"allow commands resolved", map[string]string{"EDGE_ALLOW_COMMANDS": "sh"}, nil, "", func(s *settings) bool {
			return filepath.IsAbs(s.AllowCommands[0])
		}},
		{"bad int", map[string]string{"EDGE_MAX_CONCURRENT": "many"}, nil, "EDGE_MAX_CONCURRENT", nil},
		{"bad range", map[string]string{"EDGE_MAX_CONCURRENT": "0"}, nil, "EDGE_MAX_CONCURRENT", nil},
		{"bad duration", map[string]string{"EDGE_BACKOFF_MAX": "soon"}, nil, "EDGE_BACKOFF_MAX", nil},
		{"bad labels", map[string]string{"EDGE_LABELS": "novalue"}, nil, "EDGE_LABELS", nil},
		{"relative upload dir", map[string]string{"EDGE_UPLOAD_DIRS": "tmp"}, nil, "EDGE_UPLOAD_DIRS", nil},
		{"unknown command in allowlist", map[string]string{"EDGE_ALLOW_COMMANDS": "no-such-tool-xyz"}, nil, "EDGE_ALLOW_COMMANDS", nil},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL", nil},
		{"bad flag", nil, []string{"--max-concurrent=x"}, "max-concurrent", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HOME", t.TempDir())
			t.Setenv("EDGE_KEY_FILE", filepath.Join(t.TempDir(), "k"))
			t.Setenv("EDGE_STATE_DIR", t.TempDir())
			t.Setenv("EDGE_GATEWAY_HOST_KEY", pin)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			s, _, _, err := loadSettings(tc.args, os.Getenv, &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(s) {
				t.Fatalf("settings %+v", s)
			}
		})
	}
}

func TestRunCommands(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("EDGE_KEY_FILE", filepath.Join(dir, "key"))
	t.Setenv("EDGE_STATE_DIR", filepath.Join(dir, "state"))
	var out, errb bytes.Buffer
	if rc := run([]string{"pubkey"}, &out, &errb); rc != 0 || !strings.HasPrefix(out.String(), "ssh-ed25519 ") || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("pubkey rc=%d out=%q err=%q", rc, out.String(), errb.String())
	}
	first := out.String()
	out.Reset()
	if run([]string{"pubkey"}, &out, &errb); out.String() != first {
		t.Fatal("pubkey changed between runs")
	}
	// pause needs the edge's state directory: it creates none where no edge runs.
	if rc := run([]string{"pause"}, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "no state directory") {
		t.Fatalf("pause without a state directory: rc=%d %q", rc, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Fatal("pause created the state directory")
	}
	os.MkdirAll(filepath.Join(dir, "state"), 0o700)
	if rc := run([]string{"pause"}, &out, &errb); rc != 0 {
		t.Fatalf("pause rc=%d", rc)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "paused")); err != nil {
		t.Fatal(err)
	}
	if rc := run([]string{"resume"}, &out, &errb); rc != 0 {
		t.Fatalf("resume rc=%d", rc)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "paused")); !os.IsNotExist(err) {
		t.Fatal("pause file left after resume")
	}
	out.Reset()
	if rc := run([]string{"--version"}, &out, &errb); rc != 0 || out.String() != "mcp-ssh-edge dev\n" {
		t.Fatalf("version rc=%d %q", rc, out.String())
	}
	if rc := run([]string{}, &out, &errb); rc != 2 {
		t.Fatalf("run without EDGE_GATEWAY: rc=%d", rc)
	}
	if rc := run([]string{"frob"}, &out, &errb); rc != 2 {
		t.Fatalf("unknown command: rc=%d", rc)
	}
}

func TestGuestProcs(t *testing.T) {
	for _, c := range []struct{ cpus, want int }{{1, 1}, {2, 1}, {3, 1}, {4, 2}, {8, 4}, {64, 32}} {
		if got := guestProcs(c.cpus); got != c.want {
			t.Errorf("guestProcs(%d) = %d, want %d", c.cpus, got, c.want)
		}
	}
}

// TestAllowCommandsKeepNamedPath: EDGE_ALLOW_COMMANDS keeps the path as named, not the
// symlink's target (a busybox applet stays the applet), and refuses '..'.
func TestAllowCommandsKeepNamedPath(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "multicall")
	if err := os.WriteFile(target, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	applet := filepath.Join(dir, "uptime")
	if err := os.Symlink(target, applet); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, value, want, wantErr string
	}{
		{"symlink kept", applet, applet, ""},
		{"dot-dot refused", dir + "/../" + filepath.Base(dir) + "/uptime", "", "'..'"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HOME", t.TempDir())
			t.Setenv("EDGE_KEY_FILE", filepath.Join(t.TempDir(), "k"))
			t.Setenv("EDGE_STATE_DIR", t.TempDir())
			t.Setenv("EDGE_ALLOW_COMMANDS", tc.value)
			s, _, _, err := loadSettings(nil, os.Getenv, &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one with %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(s.AllowCommands) != 1 || s.AllowCommands[0] != tc.want {
				t.Fatalf("AllowCommands = %v (%v), want [%s]", s.AllowCommands, err, tc.want)
			}
		})
	}
}

// TestCheckStateDir: the state directory is resolved through symlinks, and one others can
// write is refused.
func TestCheckStateDir(t *testing.T) {
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "state")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, want, wantErr string
	}{
		{"plain", real, real, ""},
		{"symlink resolved", link, real, ""},
		{"world-writable", open, "", "writable by group or others"},
		{"missing", filepath.Join(real, "none"), "", "EDGE_STATE_DIR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := checkStateDir(tc.dir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("checkStateDir(%s) = %q, %v; want %q", tc.dir, got, err, tc.want)
			}
		})
	}
}
