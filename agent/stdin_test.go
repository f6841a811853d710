package main

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestPollable: a pipe comes back served by the poller (a read deadline works, and data and
// EOF still arrive); a regular file is left alone.
func TestPollable(t *testing.T) {
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil { // blocking, as an inherited stdin is
		t.Fatal(err)
	}
	w := os.NewFile(uintptr(p[1]), "pipe-w")
	r := pollable(p[0], "pipe-r")
	if r == nil {
		t.Fatal("a pipe was not made pollable")
	}
	defer r.Close()
	if err := r.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatalf("read deadline on the pipe: %v (not served by the poller)", err)
	}
	if _, err := r.Read(make([]byte, 1)); !os.IsTimeout(err) {
		t.Fatalf("read with nothing written: %v, want a timeout", err)
	}
	r.SetReadDeadline(time.Time{})
	go func() {
		w.Write([]byte("{\"jsonrpc\":\"2.0\"}\n"))
		w.Close()
	}()
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "{\"jsonrpc\":\"2.0\"}\n" {
		t.Fatalf("read %q, %v", b, err)
	}

	f, err := os.Create(filepath.Join(t.TempDir(), "regular"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := pollable(int(f.Fd()), "regular"); got != nil {
		t.Fatal("a regular file was made pollable")
	}
}
