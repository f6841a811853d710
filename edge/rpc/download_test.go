package rpc

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func TestDownload(t *testing.T) {
	allowed := t.TempDir()
	outside := t.TempDir()
	state := t.TempDir()
	key := filepath.Join(t.TempDir(), "id_ed25519")
	content := strings.Repeat("0123456789", 60000) // 600 kB: several frames
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(allowed, "f.txt"), content)
	write(filepath.Join(outside, "secret"), "secret")
	write(filepath.Join(state, "rpc.log"), "log")
	write(key, "private")
	os.Symlink(filepath.Join(outside, "secret"), filepath.Join(allowed, "escape"))
	os.Symlink(key, filepath.Join(allowed, "key-link"))
	os.Link(key, filepath.Join(allowed, "key-hardlink"))
	os.Mkdir(filepath.Join(allowed, "dir"), 0o755)

	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	for _, tc := range []struct {
		name    string
		dirs    []string
		path    string
		max     int64
		code    string
		want    string
		trunc   bool
		keyFile string
	}{
		{"whole file", []string{allowed}, filepath.Join(allowed, "f.txt"), 1 << 30, "", content, false, key},
		{"max_bytes cuts", []string{allowed}, filepath.Join(allowed, "f.txt"), 7, "", content[:7], true, key},
		{"outside download dirs", []string{allowed}, filepath.Join(outside, "secret"), 100, protocol.CodePolicy, "", false, key},
		{"symlink escape", []string{allowed}, filepath.Join(allowed, "escape"), 100, protocol.CodePolicy, "", false, key},
		{"dotdot", []string{allowed}, allowed + "/../" + filepath.Base(outside) + "/secret", 100, protocol.CodePolicy, "", false, key},
		{"state dir", nil, filepath.Join(state, "rpc.log"), 100, protocol.CodePolicy, "", false, key},
		{"key file", nil, key, 100, protocol.CodePolicy, "", false, key},
		{"key through symlink", nil, filepath.Join(allowed, "key-link"), 100, protocol.CodePolicy, "", false, key},
		{"key through hard link", nil, filepath.Join(allowed, "key-hardlink"), 100, protocol.CodePolicy, "", false, key},
		{"directory", nil, filepath.Join(allowed, "dir"), 100, protocol.CodePolicy, "", false, key},
		{"missing", nil, filepath.Join(allowed, "nope"), 100, protocol.CodeNotFound, "", false, key},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{DownloadDirs: tc.dirs, StateDir: state, KeyFile: tc.keyFile})
			var res protocol.DownloadResult
			o := h.open(protocol.MethodDownload, protocol.DownloadParams{Path: tc.path, MaxBytes: tc.max}).wait(&res)
			if o.code() != tc.code {
				t.Fatalf("code %q (%v), want %q", o.code(), o.err, tc.code)
			}
			if tc.code != "" {
				if len(o.data) != 0 {
					t.Errorf("refused download sent %d bytes", len(o.data))
				}
				return
			}
			if string(o.data) != tc.want || res.Sent != int64(len(tc.want)) || res.SHA256 != sum(tc.want) ||
				res.Size != int64(len(content)) || res.Truncated != tc.trunc || res.Mode != "0640" {
				t.Errorf("got %d bytes, result %+v", len(o.data), res)
			}
		})
	}
}

// TestDownloadFileHashAndErrors: a truncated download also reports the whole file's
// SHA-256 (file_sha256), and a file that cannot be read is named in one line without the
// syscall (openat, fstat) or the relative path it was opened by.
func TestDownloadFileHashAndErrors(t *testing.T) {
	dir := t.TempDir()
	content := strings.Repeat("abcdefghij", 300000) // 3 MB: the rest is read past several chunks
	if err := os.WriteFile(filepath.Join(dir, "big"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "locked"), []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "plain"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	for _, tc := range []struct {
		name, path string
		max        int64
		code, msg  string // for a refusal: the exact message
		sha, file  string
		rootSkips  bool // root reads any file
	}{
		{"truncated: both hashes", filepath.Join(dir, "big"), 1 << 20, "", "", sum(content[:1<<20]), sum(content), false},
		{"whole file: the same hash twice", filepath.Join(dir, "big"), 1 << 30, "", "", sum(content), sum(content), false},
		{"missing file", filepath.Join(dir, "nope"), 10, protocol.CodeNotFound, "no such file: " + filepath.Join(dir, "nope"), "", "", false},
		{"missing directory", filepath.Join(dir, "no/such"), 10, protocol.CodeNotFound, "no such file: " + filepath.Join(dir, "no/such"), "", "", false},
		{"file as a directory", filepath.Join(dir, "plain/x"), 10, protocol.CodeNotFound,
			"no such file: " + filepath.Join(dir, "plain/x") + " (a directory on the way is a file)", "", "", false},
		{"directory", filepath.Join(dir, "sub"), 10, protocol.CodePolicy, filepath.Join(dir, "sub") + " is a directory, not a regular file", "", "", false},
		{"unreadable", filepath.Join(dir, "locked"), 10, protocol.CodePolicy,
			"permission denied: " + filepath.Join(dir, "locked") + " (the edge service's user may not read it)", "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rootSkips && os.Geteuid() == 0 {
				t.Skip("root reads a file of mode 0")
			}
			h := newHarness(t, Config{DownloadDirs: []string{dir}})
			var res protocol.DownloadResult
			o := h.open(protocol.MethodDownload, protocol.DownloadParams{Path: tc.path, MaxBytes: tc.max}).wait(&res)
			if o.code() != tc.code {
				t.Fatalf("code %q (%v), want %q", o.code(), o.err, tc.code)
			}
			if tc.code != "" {
				if o.err.Message != tc.msg {
					t.Errorf("message %q, want %q", o.err.Message, tc.msg)
				}
				return
			}
			if res.SHA256 != tc.sha || res.FileSHA256 != tc.file {
				t.Errorf("sha256 %s file_sha256 %q, want %s %s", res.SHA256, res.FileSHA256, tc.sha, tc.file)
			}
		})
	}
}

// TestDownloadRefusesFIFO: a FIFO (or device) on the path is refused at once: the file is
// opened without blocking and its type checked before a byte is read, so a download cannot
// hang on a pipe nobody writes.
func TestDownloadRefusesFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("no FIFO here:", err)
	}
	h := newHarness(t, Config{DownloadDirs: []string{dir}})
	start := time.Now()
	var res protocol.DownloadResult
	o := h.open(protocol.MethodDownload, protocol.DownloadParams{Path: fifo, MaxBytes: 10}).wait(&res)
	if o.code() != protocol.CodePolicy || !strings.Contains(o.err.Message, "not a regular file") {
		t.Fatalf("download of a FIFO: %v, want a policy refusal saying it is not a regular file", o.err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the refusal took %s: the open blocked on the FIFO", d)
	}
}
