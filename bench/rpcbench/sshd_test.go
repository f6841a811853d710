package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartSSHDMissing(t *testing.T) {
	_, err := startSSHD(context.Background(), t.TempDir(), filepath.Join(t.TempDir(), "no-sshd"))
	if !errors.Is(err, errNoSSHD) {
		t.Fatalf("err = %v, want errNoSSHD", err)
	}
}

// TestSSHD starts the throw-away sshd, runs one multiplexed command and one scp, and checks
// stop leaves no privilege separation directory it created. Needs /usr/sbin/sshd and root.
func TestSSHD(t *testing.T) {
	const bin = "/usr/sbin/sshd"
	if _, err := os.Stat(bin); err != nil || os.Geteuid() != 0 {
		t.Skip("needs root and /usr/sbin/sshd (Debian package openssh-server)")
	}
	_, privErr := os.Stat(privsepDir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	s, err := startSSHD(ctx, filepath.Join(dir, "sshd"), bin)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.run(ctx, "ssh", s.mux("echo", "hi")...)
	if err != nil || !strings.HasSuffix(out, "hi") {
		s.stop()
		t.Fatalf("mux ssh: %q, %v", out, err)
	}
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, []byte("payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst")
	if _, err := s.run(ctx, "scp", s.scpArgs(src, dst)...); err != nil {
		s.stop()
		t.Fatal(err)
	}
	s.stop()
	if b, err := os.ReadFile(dst); err != nil || string(b) != "payload" {
		t.Fatalf("scp wrote %q, %v", b, err)
	}
	if _, err := os.Stat(privsepDir); errors.Is(privErr, os.ErrNotExist) != errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s existed before: %v; after: %v", privsepDir, privErr, err)
	}
	select {
	case <-s.done:
	default:
		t.Fatal("sshd still running after stop")
	}
}
