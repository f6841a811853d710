package tools_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// echoUpload is an edge that writes what it is sent and reports it back.
func echoUpload(got *protocol.UploadParams, body *[]byte) func(context.Context, string, protocol.UploadParams, []byte) (protocol.UploadResult, error) {
	return func(_ context.Context, _ string, p protocol.UploadParams, b []byte) (protocol.UploadResult, error) {
		*got, *body = p, b
		sum := sha256.Sum256(b)
		return protocol.UploadResult{Path: p.Path, Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:]), Mode: fmt.Sprintf("%04o", p.Mode)}, nil
	}
}

func TestUploadFile(t *testing.T) {
	bin := []byte{0, 1, 2, 0xff, 'x'}
	tests := []struct {
		name     string
		args     map[string]any
		wantErr  string
		wantBody string
		wantMode uint32
	}{
		{"text default mode", map[string]any{"content": "hello\n"}, "", "hello\n", 0o644},
		{"base64", map[string]any{"content": base64.StdEncoding.EncodeToString(bin), "encoding": "base64"}, "", string(bin), 0o644},
		{"base64 with line breaks", map[string]any{"content": "aGVs\nbG8=\n", "encoding": "base64"}, "", "hello", 0o644},
		{"bad base64", map[string]any{"content": "not base64!", "encoding": "base64"}, "not valid base64", "", 0},
		{"mode 0755", map[string]any{"content": "x", "mode": "0755"}, "", "x", 0o755},
		{"mode 600", map[string]any{"content": "x", "mode": "600"}, "", "x", 0o600},
		{"mode 0o640", map[string]any{"content": "x", "mode": "0o640"}, "", "x", 0o640},
		{"mode sticky", map[string]any{"content": "x", "mode": "1755"}, "", "x", 0o1755},
		{"setuid", map[string]any{"content": "x", "mode": "4755"}, "setuid", "", 0},
		{"setgid", map[string]any{"content": "x", "mode": "2755"}, "setuid or setgid", "", 0},
		{"mode not octal", map[string]any{"content": "x", "mode": "0789"}, "octal", "", 0},
		{"mode symbolic", map[string]any{"content": "x", "mode": "rwx"}, "octal", "", 0},
		{"mode too short", map[string]any{"content": "x", "mode": "7"}, "octal", "", 0},
		{"mode too long", map[string]any{"content": "x", "mode": "00644"}, "octal", "", 0},
		{"relative path", map[string]any{"content": "x", "path": "etc/x"}, "absolute", "", 0},
		{"directory path", map[string]any{"content": "x", "path": "/etc/"}, "directory", "", 0},
		{"too big", map[string]any{"content": strings.Repeat("x", 1025)}, "MAX_UPLOAD_BYTES", "", 0},
		{"too big base64", map[string]any{"content": base64.StdEncoding.EncodeToString(make([]byte, 1025)), "encoding": "base64"}, "MAX_UPLOAD_BYTES", "", 0},
		{"empty file", map[string]any{"content": ""}, "", "", 0o644},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got protocol.UploadParams
			var body []byte
			f := &fakeFleet{uploadFn: echoUpload(&got, &body)}
			cfg := baseConfig()
			cfg.MaxUploadBytes = 1024
			h := newHarness(t, f, cfg)
			args := map[string]any{"edge": "e", "path": "/tmp/f"}
			for k, v := range tc.args {
				args[k] = v
			}
			res := h.call("upload_file", args)
			if tc.wantErr != "" {
				if !res.IsError || !strings.Contains(text(res), tc.wantErr) || f.callCount() != 0 {
					t.Fatalf("isError=%v %q calls=%v", res.IsError, text(res), f.calls)
				}
				return
			}
			if res.IsError {
				t.Fatal(text(res))
			}
			sum := sha256.Sum256([]byte(tc.wantBody))
			if string(body) != tc.wantBody || got.Mode != tc.wantMode || got.SHA256 != hex.EncodeToString(sum[:]) ||
				got.Size != int64(len(tc.wantBody)) || got.Overwrite || got.CreateDirs {
				t.Fatalf("edge got %+v body %q", got, body)
			}
			var out tools.UploadOutput
			structured(t, res, &out)
			if out.Edge != "e" || out.Path != "/tmp/f" || out.Size != got.Size || out.SHA256 != got.SHA256 || out.Mode != fmt.Sprintf("%04o", tc.wantMode) {
				t.Fatalf("output %+v", out)
			}
		})
	}
}

func TestUploadFileEdgeErrors(t *testing.T) {
	tests := []struct {
		name string
		res  protocol.UploadResult
		err  error
		want string
	}{
		{"exists", protocol.UploadResult{}, &protocol.Error{Code: protocol.CodeExists, Message: "/tmp/f exists"}, "set overwrite: true"},
		{"policy", protocol.UploadResult{}, &protocol.Error{Code: protocol.CodePolicy, Message: "/tmp is not an upload directory"}, "refused by the edge's policy"},
		{"checksum mismatch (Gateway.Upload checks)", protocol.UploadResult{}, errors.New("upload: edge e reported 1 bytes with SHA-256 \"00\", but 14 bytes with SHA-256 ab were sent"), "SHA-256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFleet{uploadFn: func(context.Context, string, protocol.UploadParams, []byte) (protocol.UploadResult, error) {
				return tc.res, tc.err
			}}
			lg, readAudit := auditLog(t)
			cfg := baseConfig()
			cfg.Audit = lg
			h := newHarness(t, f, cfg)
			res := h.call("upload_file", map[string]any{"edge": "e", "path": "/tmp/f", "content": "secret-content", "overwrite": true})
			if !res.IsError || !strings.Contains(text(res), tc.want) || res.StructuredContent != nil {
				t.Fatalf("isError=%v %q", res.IsError, text(res))
			}
			evs := readAudit()
			if len(evs) != 2 || evs[1].Outcome == "ok" || evs[0].Path != "/tmp/f" || evs[0].SHA256 == "" {
				t.Fatalf("audit %+v", evs)
			}
			if strings.Contains(auditRaw(t, readAudit), "secret-content") {
				t.Fatal("audit log contains file content")
			}
		})
	}
}
