package rpc

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
