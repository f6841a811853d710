package tools_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// fileFleet's edges serve one file, cut at max_bytes as an edge does.
type fileFleet struct {
	*fakeFleet
	content string
}

func (f *fileFleet) Edge(ref string) (gateway.Edge, error) {
	e, err := f.fakeFleet.Edge(ref)
	return &fileEdge{Edge: e, f: f}, err
}

type fileEdge struct {
	gateway.Edge
	f *fileFleet
}

func hexSum(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func (e *fileEdge) Download(_ context.Context, _ string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error) {
	part := e.f.content[:min(int64(len(e.f.content)), p.MaxBytes)]
	if _, err := io.WriteString(w, part); err != nil {
		return protocol.DownloadResult{}, err
	}
	return protocol.DownloadResult{Path: p.Path, Size: int64(len(e.f.content)), Sent: int64(len(part)), SHA256: hexSum(part),
		FileSHA256: hexSum(e.f.content), Truncated: len(part) < len(e.f.content), Mode: "0644"}, nil
}

// TestDownloadHashes: download_file returns the hash of the bytes it returns as sha256 and
// the whole file's as file_sha256, and its output schema says which is which.
func TestDownloadHashes(t *testing.T) {
	content := strings.Repeat("x", 3000)
	for _, tc := range []struct {
		name      string
		max       int
		wantBytes int
		wantTrunc bool
	}{
		{"whole file", 0, 3000, false},
		{"cut at max_bytes", 1000, 1000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, &fileFleet{fakeFleet: &fakeFleet{}, content: content}, baseConfig())
			args := map[string]any{"edge": "pi", "path": "/var/log/big"}
			if tc.max > 0 {
				args["max_bytes"] = tc.max
			}
			var out struct {
				Bytes      int    `json:"bytes"`
				SHA256     string `json:"sha256"`
				FileSHA256 string `json:"file_sha256"`
				Truncated  bool   `json:"truncated"`
			}
			structured(t, h.call("download_file", args), &out)
			if out.Bytes != tc.wantBytes || out.Truncated != tc.wantTrunc || out.SHA256 != hexSum(content[:tc.wantBytes]) || out.FileSHA256 != hexSum(content) {
				t.Errorf("got %+v; want %d bytes, truncated %v, sha256 of them and file_sha256 of all 3000", out, tc.wantBytes, tc.wantTrunc)
			}
		})
	}
	h := newHarness(t, &fileFleet{fakeFleet: &fakeFleet{}}, baseConfig())
	props, _ := h.tools["download_file"].OutputSchema.Properties["file_sha256"].(map[string]any)
	if d, _ := props["description"].(string); !strings.Contains(d, "whole file") {
		t.Errorf("output schema: file_sha256 is described as %q", d)
	}
	props, _ = h.tools["download_file"].OutputSchema.Properties["sha256"].(map[string]any)
	if d, _ := props["description"].(string); !strings.Contains(d, "first bytes only when truncated") {
		t.Errorf("output schema: sha256 is described as %q", d)
	}
}
