package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	gw := filepath.Join(dir, "mcp-ssh-gateway")
	edge := filepath.Join(dir, "mcp-ssh-edge")
	for _, p := range []string{gw, edge} {
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
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
		{"defaults from BIN_DIR", nil, ""},
		{"explicit paths", []string{"-gateway", gw, "-edge", edge, "-timeout", "5s"}, ""},
		{"missing gateway", []string{"-gateway", filepath.Join(dir, "nope")}, "make build"},
		{"directory is not a binary", []string{"-edge", dir}, "not found"},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
		{"zero timeout", []string{"-timeout", "0s"}, "positive"},
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
			if o.gatewayBin != gw || o.edgeBin != edge {
				t.Fatalf("binaries = %s, %s; want %s, %s", o.gatewayBin, o.edgeBin, gw, edge)
			}
		})
	}
}

// TestDemo runs the whole demo against the binaries `make build` wrote (BIN_DIR), so
// `make test` proves that `make demo` works.
func TestDemo(t *testing.T) {
	binDir := os.Getenv("BIN_DIR")
	if binDir == "" {
		t.Skip("BIN_DIR not set: run via `make test` (needs the built binaries)")
	}
	defer goleak.VerifyNone(t)
	o := options{
		gatewayBin: filepath.Join(binDir, "mcp-ssh-gateway"),
		edgeBin:    filepath.Join(binDir, "mcp-ssh-edge"),
		timeout:    90 * time.Second,
	}
	for _, p := range []string{o.gatewayBin, o.edgeBin} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("binary missing: %v (run make build)", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		t.Fatal(err)
	}
}
