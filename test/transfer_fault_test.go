package e2e

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTransferInterrupted kills the edge (SIGKILL) in the middle of a large transfer in each
// direction, through toxiproxy slowed to 8 MiB/s: download_file to dest_path leaves nothing in
// FILES_DIR, upload_file from source_path leaves nothing at the edge's path, and each call
// returns an isError result naming the disconnect rather than hanging.
func TestTransferInterrupted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "cut", "")
	filesDir := t.TempDir()
	g := f.startGateway(t, map[string]string{"FILES_DIR": filesDir, "KEEPALIVE_INTERVAL": faultKeepalive.String()})
	px := newToxiproxy(t, g.addr)
	edgeDir := t.TempDir()
	big := make([]byte, 48<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(edgeDir, "src.bin"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filesDir, "up.bin"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	addToxic(t, px, "bandwidth", map[string]any{"rate": 8 << 10}) // KB/s: 48 MiB take 6 s

	for _, tc := range []struct {
		name     string
		tool     string
		args     map[string]any
		inFlight func(edgePID int) bool // the receiving side holds its temporary file
		left     func() []string        // what the broken transfer left behind
	}{
		{"download to dest_path", "download_file",
			map[string]any{"edge": "cut", "path": filepath.Join(edgeDir, "src.bin"), "dest_path": "in/src.bin"},
			func(int) bool { return len(dirNames(t, filepath.Join(filesDir, "in"))) > 0 },
			func() []string { return dirNames(t, filepath.Join(filesDir, "in")) }},
		{"upload from source_path", "upload_file",
			map[string]any{"edge": "cut", "path": filepath.Join(edgeDir, "out", "up.bin"), "source_path": "up.bin", "create_dirs": true},
			func(pid int) bool { return openUnder(pid, filepath.Join(edgeDir, "out")+"/") },
			func() []string { return dirNames(t, filepath.Join(edgeDir, "out")) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := f.startEdge(t, k, px.Addr(), map[string]string{"EDGE_DOWNLOAD_DIRS": edgeDir,
				"EDGE_KEEPALIVE_INTERVAL": faultKeepalive.String()})
			g.waitConnected(t, k.Fingerprint, nil)
			done := make(chan result, 1)
			go func() { done <- g.call(t, tc.tool, tc.args) }()
			// Kill once the receiving side has its temporary file: the transfer is under way.
			if !waitFor(10*time.Second, func() bool { return tc.inFlight(e.PID()) }) {
				t.Fatalf("%s never got under way", tc.tool)
			}
			time.Sleep(500 * time.Millisecond) // some MiB in
			if err := syscall.Kill(e.PID(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-done:
				if !r.IsError || !strings.Contains(r.Text, "disconnect") {
					t.Errorf("%s cut by SIGKILL: isError=%v %q, want the edge-disconnected error", tc.tool, r.IsError, r.Text)
				}
			case <-time.After(3*faultKeepalive + 15*time.Second):
				t.Fatalf("%s still running 18 s after the edge was killed", tc.tool)
			}
			if left := tc.left(); len(left) > 0 {
				t.Errorf("a broken %s left %v behind", tc.tool, left)
			}
		})
	}
	if left := dirNames(t, filesDir); strings.Join(left, ",") != "in,up.bin" && strings.Join(left, ",") != "up.bin" {
		t.Errorf("FILES_DIR holds %v, want only up.bin (and the empty in/)", left)
	}
}

// openUnder reports whether process pid has a file open under prefix (an O_TMPFILE shows as
// "<dir>/#<inode> (deleted)").
func openUnder(pid int, prefix string) bool {
	_, ok := openSize(pid, prefix)
	return ok
}

// openSize is the size of the largest file process pid has open under prefix, and whether it
// has one open there (a deleted or unnamed file still has its size).
func openSize(pid int, prefix string) (int64, bool) {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	size, found := int64(0), false
	for _, fd := range fds {
		link := fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())
		if p, err := os.Readlink(link); err == nil && strings.HasPrefix(p, prefix) {
			found = true
			if st, err := os.Stat(link); err == nil {
				size = max(size, st.Size())
			}
		}
	}
	return size, found
}

// dirNames lists dir's entries; a missing dir has none.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
