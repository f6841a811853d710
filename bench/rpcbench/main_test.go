package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"mcp-ssh-gateway", "mcp-ssh-edge"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("GATEWAY_BIN", "")
	t.Setenv("EDGE_BIN", "")
	t.Setenv("BIN_DIR", dir)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"defaults", nil, ""},
		{"all set", []string{"-n", "10", "-warmup", "0", "-upload-mib", "1", "-upload-runs", "1", "-idle", "0s"}, ""},
		{"zero n", []string{"-n", "0"}, "-n"},
		{"huge n", []string{"-n", "100001"}, "-n"},
		{"negative warmup", []string{"-warmup", "-1"}, "-warmup"},
		{"huge upload", []string{"-upload-mib", "4096"}, "-upload-mib"},
		{"zero upload runs", []string{"-upload-runs", "0"}, "-upload-runs"},
		{"long idle", []string{"-idle", "2m"}, "-idle"},
		{"zero timeout", []string{"-timeout", "0s"}, "positive"},
		{"missing binary", []string{"-gateway", filepath.Join(dir, "nope")}, "make build"},
		{"stray argument", []string{"x"}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.gatewayBin != filepath.Join(dir, "mcp-ssh-gateway") || o.n < 1 {
				t.Fatalf("options = %+v", o)
			}
		})
	}
}
