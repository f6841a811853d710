package forward

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestUploadDownloadRoundTrip(t *testing.T) {
	fx := newFixture(t)
	dir := t.TempDir()
	data := make([]byte, 5<<20+123)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		sha    string // "" : hashed while sent
		mode   uint32
		create bool
		path   string
	}{
		{"announced sha", sum(data), 0o640, false, filepath.Join(dir, "a.bin")},
		{"trailer sha, create dirs, default mode", "", 0, true, filepath.Join(dir, "x", "y z", "b.bin")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := protocol.UploadParams{Path: tt.path, Size: int64(len(data)), SHA256: tt.sha, Mode: tt.mode, CreateDirs: tt.create}
			res, err := fx.edge.Upload(context.Background(), "rid", p, bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			wantMode := tt.mode
			if wantMode == 0 {
				wantMode = 0o644
			}
			if res.Size != int64(len(data)) || res.SHA256 != sum(data) || res.Path != tt.path {
				t.Errorf("result %+v", res)
			}
			st, err := os.Stat(tt.path)
			if err != nil || st.Mode().Perm() != os.FileMode(wantMode) {
				t.Errorf("stat %v %v, want mode %o", st.Mode(), err, wantMode)
			}
			got, _ := os.ReadFile(tt.path)
			if !bytes.Equal(got, data) {
				t.Fatal("file on the device differs")
			}
			var buf bytes.Buffer
			dres, err := fx.edge.Download(context.Background(), "rid", protocol.DownloadParams{Path: tt.path, MaxBytes: 1 << 30}, &buf)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), data) || dres.SHA256 != sum(data) || dres.Sent != int64(len(data)) || dres.Truncated {
				t.Errorf("download %+v (%d bytes)", dres, buf.Len())
			}
			assertNoTemp(t, filepath.Dir(tt.path))
		})
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".mcp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestUploadAtomicity(t *testing.T) {
	fx := newFixture(t)
	dir := t.TempDir()
	target := filepath.Join(dir, "keep.txt")
	old := []byte("old content\n")
	if err := os.WriteFile(target, old, 0o600); err != nil {
		t.Fatal(err)
	}
	newData := []byte("new content\n")
	tests := []struct {
		name string
		p    protocol.UploadParams
		body []byte
		code string
	}{
		{"exists without overwrite", protocol.UploadParams{Path: target, Size: int64(len(newData)), SHA256: sum(newData)}, newData, protocol.CodeExists},
		{"sha mismatch", protocol.UploadParams{Path: target, Size: int64(len(newData)), SHA256: sum(old), Overwrite: true}, newData, protocol.CodeBadRequest},
		{"short body", protocol.UploadParams{Path: target, Size: 100, SHA256: sum(newData), Overwrite: true}, newData, protocol.CodeBadRequest},
		{"setuid", protocol.UploadParams{Path: target, Size: int64(len(newData)), SHA256: sum(newData), Overwrite: true, Mode: 0o4755}, newData, protocol.CodePolicy},
		{"setgid", protocol.UploadParams{Path: target, Size: int64(len(newData)), SHA256: sum(newData), Overwrite: true, Mode: 0o2755}, newData, protocol.CodePolicy},
		{"missing dir", protocol.UploadParams{Path: filepath.Join(dir, "no", "f"), Size: 1, SHA256: sum([]byte("x"))}, []byte("x"), protocol.CodeNotFound},
		{"outside within", protocol.UploadParams{Path: target, Size: 1, SHA256: sum([]byte("x")), Overwrite: true, Within: []string{"/srv"}}, []byte("x"), protocol.CodePolicy},
		{"directory target", protocol.UploadParams{Path: dir, Size: 1, SHA256: sum([]byte("x")), Overwrite: true}, []byte("x"), protocol.CodePolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := fx.edge.Upload(context.Background(), "rid", tt.p, bytes.NewReader(tt.body))
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != tt.code {
				t.Fatalf("err %v, want code %s", err, tt.code)
			}
			if got, _ := os.ReadFile(target); !bytes.Equal(got, old) {
				t.Fatalf("the old file changed: %q", got)
			}
			assertNoTemp(t, dir)
		})
	}
	t.Run("overwrite replaces", func(t *testing.T) {
		p := protocol.UploadParams{Path: target, Size: int64(len(newData)), SHA256: sum(newData), Overwrite: true, Mode: 0o600}
		if _, err := fx.edge.Upload(context.Background(), "rid", p, bytes.NewReader(newData)); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(target); !bytes.Equal(got, newData) {
			t.Fatalf("got %q", got)
		}
	})
}

func TestDownloadCases(t *testing.T) {
	fx := newFixture(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "f.txt")
	if err := os.WriteFile(f, []byte("0123456789"), 0o640); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		p        protocol.DownloadParams
		want     string
		trunc    bool
		wantCode string
	}{
		{"whole", protocol.DownloadParams{Path: f, MaxBytes: 100}, "0123456789", false, ""},
		{"bounded", protocol.DownloadParams{Path: f, MaxBytes: 4}, "0123", true, ""},
		{"missing", protocol.DownloadParams{Path: filepath.Join(dir, "nope"), MaxBytes: 4}, "", false, protocol.CodeNotFound},
		{"directory", protocol.DownloadParams{Path: dir, MaxBytes: 4}, "", false, protocol.CodePolicy},
		{"outside within", protocol.DownloadParams{Path: f, MaxBytes: 4, Within: []string{"/srv"}}, "", false, protocol.CodePolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			res, err := fx.edge.Download(context.Background(), "rid", tt.p, &buf)
			if tt.wantCode != "" {
				var pe *protocol.Error
				if !errors.As(err, &pe) || pe.Code != tt.wantCode {
					t.Fatalf("err %v, want %s", err, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want || res.Truncated != tt.trunc || res.Size != 10 || res.Mode != "0640" || res.SHA256 != sum([]byte(tt.want)) {
				t.Errorf("got %q %+v", buf.String(), res)
			}
		})
	}
}
