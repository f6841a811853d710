package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestUploadFile checks that content arrives byte-exact with the reported size, hash and mode.
func TestUploadFile(t *testing.T) {
	t.Parallel()
	x := newExecEnv(t)
	dir := t.TempDir()
	binary := make([]byte, 70000)
	rand.Read(binary)
	text := "héllo wörld\nline 2 with \"quotes\" and $VAR\n"

	for _, tc := range []struct {
		name     string
		file     string
		args     map[string]any
		want     []byte
		wantMode os.FileMode
	}{
		{"utf-8 default mode", "a.txt", map[string]any{"content": text}, []byte(text), 0o644},
		{"base64 binary mode 0600", "b.bin", map[string]any{"content": base64.StdEncoding.EncodeToString(binary), "encoding": "base64", "mode": "0600"}, binary, 0o600},
		{"create_dirs", "sub/dir/c.txt", map[string]any{"content": "x", "create_dirs": true, "mode": "0755"}, []byte("x"), 0o755},
		{"empty file", "empty", map[string]any{"content": ""}, []byte{}, 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			tc.args["edge"] = "runner"
			tc.args["path"] = path
			r := x.g.call(t, "upload_file", tc.args)
			if r.IsError {
				t.Fatalf("isError: %s", r.Text)
			}
			out := decode[uploadOut](t, r.Structured)
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read uploaded file: %v", err)
			}
			if string(got) != string(tc.want) {
				t.Errorf("file content differs: %d bytes on disk, %d sent", len(got), len(tc.want))
			}
			st, _ := os.Stat(path)
			wantOut := uploadOut{Edge: "runner", Path: path, Size: int64(len(tc.want)), SHA256: sha256hex(tc.want), Mode: fmt.Sprintf("%04o", tc.wantMode)}
			if out != wantOut {
				t.Errorf("result = %+v, want %+v", out, wantOut)
			}
			if st.Mode().Perm() != tc.wantMode {
				t.Errorf("mode on disk %v, want %v", st.Mode().Perm(), tc.wantMode)
			}
		})
	}

	t.Run("overwrite false keeps the old file", func(t *testing.T) {
		path := filepath.Join(dir, "keep.txt")
		os.WriteFile(path, []byte("old content"), 0o644)
		r := x.g.call(t, "upload_file", map[string]any{"edge": "runner", "path": path, "content": "new"})
		if !r.IsError {
			t.Errorf("isError false on an existing file with overwrite false")
		}
		if b, _ := os.ReadFile(path); string(b) != "old content" {
			t.Errorf("old file now holds %q", b)
		}
		r = x.g.call(t, "upload_file", map[string]any{"edge": "runner", "path": path, "content": "new", "overwrite": true})
		if b, _ := os.ReadFile(path); r.IsError || string(b) != "new" {
			t.Errorf("overwrite true: isError %v (%s), file %q", r.IsError, r.Text, b)
		}
	})

	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"relative path", map[string]any{"path": "rel.txt", "content": "x"}},
		{"bad base64", map[string]any{"path": filepath.Join(dir, "bad64"), "content": "!!not base64!!", "encoding": "base64"}},
		{"bad encoding", map[string]any{"path": filepath.Join(dir, "badenc"), "content": "x", "encoding": "rot13"}},
		{"bad mode", map[string]any{"path": filepath.Join(dir, "badmode"), "content": "x", "mode": "rwx"}},
		{"setuid mode", map[string]any{"path": filepath.Join(dir, "suid"), "content": "x", "mode": "4755"}},
		{"missing dir without create_dirs", map[string]any{"path": filepath.Join(dir, "nodir", "f"), "content": "x"}},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			tc.args["edge"] = "runner"
			r := x.g.call(t, "upload_file", tc.args)
			if !r.IsError {
				t.Errorf("isError false, want a refusal")
			}
			if p, _ := tc.args["path"].(string); filepath.IsAbs(p) {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was created", p)
				}
			}
		})
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), "tmp") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file left in the upload dir: %s", e.Name())
		}
	}
}

// TestUploadInterrupted kills the edge (SIGKILL) while a large upload is in flight: no file,
// partial or whole, may be at the path, and no temporary file may be left in the directory.
// The fault proxy slows the gateway→edge direction so that the transfer stays in flight long
// enough; how far it got is the size of the temporary file the edge writes.
func TestUploadInterrupted(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "victim", "")
	g := f.startGateway(t, map[string]string{"MAX_UPLOAD_BYTES": fmt.Sprint(128 << 20)})
	px := newToxiproxy(t, g.addr)
	addToxic(t, px, "bandwidth", map[string]any{"rate": 12 << 10}, localfleet.Downstream) // KB/s towards the edge
	e := f.startEdge(t, k, px.Addr(), nil)
	g.waitConnected(t, k.Fingerprint, nil)

	dir := t.TempDir()
	path := filepath.Join(dir, "big.bin")
	content := make([]byte, 36<<20) // 48 MiB of base64
	rand.Read(content)
	req := mcp.CallToolRequest{}
	req.Params.Name = "upload_file"
	// Pre-encoded arguments: json.Marshal of a 48 MiB string is slow in a -race binary.
	args := []byte(fmt.Sprintf(`{"edge":"victim","path":%q,"encoding":"base64","content":"`, path))
	args = base64.StdEncoding.AppendEncode(args, content)
	req.Params.Arguments = json.RawMessage(append(args, `"}`...))

	type callRes struct {
		res *mcp.CallToolResult
		err error
	}
	done := make(chan callRes, 1)
	// received is how much of the content the edge has written to its temporary file.
	received := func() int64 { n, _ := openSize(e.PID(), dir+"/"); return n }
	callStart := time.Now()
	go func() {
		ctx, cancel := contextTimeout(3 * callTimeout)
		defer cancel()
		res, err := g.c.CallTool(ctx, req)
		done <- callRes{res, err}
	}()
	// Encoding 48 MiB of JSON in a -race test binary and parsing it in the gateway takes a while.
	waitFor(120*time.Second, func() bool { return received() > 1<<20 })
	t.Logf("%v after the call: first MiB at the edge", time.Since(callStart).Round(time.Millisecond))
	// Kill once a third of the content has reached the edge.
	if !waitFor(30*time.Second, func() bool { return received() > 12<<20 }) {
		t.Fatalf("upload did not get under way: %d bytes at the edge", received())
	}
	if st, err := os.Stat(path); err == nil {
		t.Fatalf("file already at %s (%d bytes) with only a third sent", path, st.Size())
	}
	t.Logf("%v after the call: %d bytes at the edge, killing it", time.Since(callStart).Round(time.Millisecond), received())
	killed := time.Now()
	if err := syscall.Kill(e.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-e.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("edge did not die")
	}
	var cr callRes
	select {
	case cr = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("upload call did not return within 30 s of the edge dying")
	}
	if d := time.Since(killed); d > 10*time.Second {
		t.Errorf("the upload call returned %v after the edge died (KEEPALIVE_INTERVAL 1s), want < 10 s", d)
	}
	if cr.err != nil {
		t.Errorf("upload call: JSON-RPC error %v, want an isError result", cr.err)
	} else if r := g.check(t, "upload_file", cr.res); !r.IsError {
		t.Errorf("upload to a killed edge: isError false: %s", r.Text)
	}
	if _, err := os.Lstat(path); err == nil {
		t.Errorf("a file is at %s after the upload was broken off", path)
	}
	ents, _ := os.ReadDir(dir)
	for _, ent := range ents {
		info, _ := ent.Info()
		t.Errorf("left in the upload dir after SIGKILL: %s (%d bytes)", ent.Name(), info.Size())
	}
}
