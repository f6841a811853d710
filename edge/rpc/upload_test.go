package rpc

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// upload sends one complete upload and returns the outcome.
func (h *harness) upload(p protocol.UploadParams, body []byte) (protocol.UploadResult, outcome) {
	h.t.Helper()
	c := h.open(protocol.MethodUpload, p)
	(protocol.DataWriter{W: c.st, T: protocol.FrameData}).Write(body)
	c.send(protocol.FrameData, nil)
	var res protocol.UploadResult
	o := c.wait(&res)
	return res, o
}

// noTemps fails if dir holds a leftover temporary upload file.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".upload-") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
}

func TestUploadExact(t *testing.T) {
	h := newHarness(t, Config{})
	dir := t.TempDir()
	body := make([]byte, 700<<10+13)
	rand.Read(body)
	path := filepath.Join(dir, "f.bin")
	res, o := h.upload(protocol.UploadParams{Path: path, Size: int64(len(body)), SHA256: sum(body), Mode: 0o640}, body)
	if o.err != nil {
		t.Fatal(o.err)
	}
	got, _ := os.ReadFile(path)
	st, _ := os.Stat(path)
	if !bytes.Equal(got, body) || st.Mode().Perm() != 0o640 || res.Mode != "0640" || res.SHA256 != sum(body) || res.Size != int64(len(body)) || res.Path != path {
		t.Fatalf("result %+v, mode %v, equal %v", res, st.Mode(), bytes.Equal(got, body))
	}
	noTemps(t, dir)

	// overwrite=false refuses and leaves the file alone; overwrite=true replaces it.
	other := []byte("new content")
	_, o = h.upload(protocol.UploadParams{Path: path, Size: int64(len(other)), SHA256: sum(other), Mode: 0o644}, other)
	if o.code() != protocol.CodeExists {
		t.Fatalf("overwrite=false: %v", o.err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, body) {
		t.Fatal("file changed by a refused upload")
	}
	_, o = h.upload(protocol.UploadParams{Path: path, Size: int64(len(other)), SHA256: sum(other), Mode: 0o600, Overwrite: true}, other)
	if got, _ := os.ReadFile(path); o.err != nil || !bytes.Equal(got, other) {
		t.Fatalf("overwrite=true: %v", o.err)
	}
	noTemps(t, dir)
}

func TestUploadBrokenStream(t *testing.T) {
	h := newHarness(t, Config{})
	dir := t.TempDir()
	body := bytes.Repeat([]byte("z"), 100000)
	tests := []struct {
		name string
		end  func(c *rpcCall)
		code string
	}{
		{"eof mid-way", func(c *rpcCall) { c.st.Close() }, protocol.CodeIO},
		{"cancel", func(c *rpcCall) { c.send(protocol.FrameCancel, nil) }, protocol.CodeCancelled},
		{"short body", func(c *rpcCall) { c.send(protocol.FrameData, nil) }, protocol.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "broken")
			c := h.open(protocol.MethodUpload, protocol.UploadParams{Path: path, Size: int64(len(body)), SHA256: sum(body), Mode: 0o644})
			c.send(protocol.FrameData, body[:40000])
			tc.end(c)
			if o := c.wait(nil); o.code() != tc.code {
				t.Fatalf("got %v, want %s", o.err, tc.code)
			}
			if _, err := os.Lstat(path); !os.IsNotExist(err) {
				t.Fatalf("file at path after a broken upload: %v", err)
			}
			noTemps(t, dir)
		})
	}
	bad := []byte("abc")
	_, o := h.upload(protocol.UploadParams{Path: filepath.Join(dir, "badsum"), Size: 3, SHA256: sum([]byte("abd")), Mode: 0o644}, bad)
	if o.code() != protocol.CodeBadRequest {
		t.Fatalf("sha mismatch: %v", o.err)
	}
	noTemps(t, dir)
}

func TestUploadPolicy(t *testing.T) {
	up := t.TempDir()
	outside := t.TempDir()
	state := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(up, "escape")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(up, "adir"), 0o755)
	free := t.TempDir()
	body := []byte("x")
	tests := []struct {
		name string
		cfg  Config
		p    protocol.UploadParams
		code string
	}{
		{"inside", Config{UploadDirs: []string{up}}, protocol.UploadParams{Path: up + "/ok"}, ""},
		{"symlink escape", Config{UploadDirs: []string{up}}, protocol.UploadParams{Path: up + "/escape/x"}, protocol.CodePolicy},
		{"dotdot", Config{UploadDirs: []string{up}}, protocol.UploadParams{Path: up + "/adir/../../x"}, protocol.CodePolicy},
		{"dotdot without dirs", Config{}, protocol.UploadParams{Path: free + "/a/../x"}, protocol.CodePolicy},
		{"outside", Config{UploadDirs: []string{up}}, protocol.UploadParams{Path: outside + "/x"}, protocol.CodePolicy},
		{"the dir itself", Config{UploadDirs: []string{up}}, protocol.UploadParams{Path: up, Overwrite: true}, protocol.CodePolicy},
		{"setuid", Config{}, protocol.UploadParams{Path: free + "/suid", Mode: 0o4755}, protocol.CodePolicy},
		{"setgid", Config{}, protocol.UploadParams{Path: free + "/sgid", Mode: 0o2755}, protocol.CodePolicy},
		{"state dir", Config{StateDir: state}, protocol.UploadParams{Path: state + "/paused"}, protocol.CodePolicy},
		{"key file", Config{KeyFile: free + "/id_ed25519"}, protocol.UploadParams{Path: free + "/id_ed25519", Overwrite: true}, protocol.CodePolicy},
		{"state dir via symlink", Config{StateDir: state}, protocol.UploadParams{Path: free + "/st/x"}, protocol.CodePolicy},
		{"directory target", Config{}, protocol.UploadParams{Path: up + "/adir", Overwrite: true}, protocol.CodePolicy},
		{"device target", Config{}, protocol.UploadParams{Path: "/dev/null", Overwrite: true}, protocol.CodePolicy},
		{"missing dir", Config{}, protocol.UploadParams{Path: free + "/new/sub/x"}, protocol.CodeNotFound},
		{"create dirs", Config{}, protocol.UploadParams{Path: free + "/new/sub/x", CreateDirs: true}, ""},
		{"relative", Config{}, protocol.UploadParams{Path: "rel/x"}, protocol.CodeBadRequest},
	}
	if err := os.Symlink(state, free+"/st"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg)
			tc.p.Size, tc.p.SHA256 = 1, sum(body)
			if tc.p.Mode == 0 {
				tc.p.Mode = 0o644
			}
			_, o := h.upload(tc.p, body)
			if o.code() != tc.code {
				t.Fatalf("got %v, want %q", o.err, tc.code)
			}
		})
	}
	if _, err := os.Stat(outside + "/x"); err == nil {
		t.Fatal("a refused upload wrote outside the upload dirs")
	}
}

// TestUploadDigestTrailer: protocol 2 bodies that end with a FrameDigest instead of an empty
// data frame, and every way such a body can be wrong.
func TestUploadDigestTrailer(t *testing.T) {
	h := newHarness(t, Config{})
	dir := t.TempDir()
	body := make([]byte, 300<<10+7)
	rand.Read(body)
	tests := []struct {
		name   string
		params protocol.UploadParams
		end    func(c *rpcCall)
		code   string // "" = success
	}{
		{"trailer", protocol.UploadParams{SHA256Trailer: true},
			func(c *rpcCall) { c.send(protocol.FrameDigest, []byte(sum(body))) }, ""},
		{"wrong digest", protocol.UploadParams{SHA256Trailer: true},
			func(c *rpcCall) { c.send(protocol.FrameDigest, []byte(sum([]byte("other")))) }, protocol.CodeBadRequest},
		{"upper-case digest", protocol.UploadParams{SHA256Trailer: true},
			func(c *rpcCall) { c.send(protocol.FrameDigest, []byte(strings.ToUpper(sum(body)))) }, protocol.CodeBadRequest},
		{"short digest", protocol.UploadParams{SHA256Trailer: true},
			func(c *rpcCall) { c.send(protocol.FrameDigest, []byte("abc")) }, protocol.CodeBadRequest},
		{"announced trailer, empty data frame", protocol.UploadParams{SHA256Trailer: true},
			func(c *rpcCall) { c.send(protocol.FrameData, nil) }, protocol.CodeBadRequest},
		{"digest frame not announced", protocol.UploadParams{SHA256: sum(body)},
			func(c *rpcCall) { c.send(protocol.FrameDigest, []byte(sum(body))) }, protocol.CodeBadRequest},
		{"trailer and sha256 both", protocol.UploadParams{SHA256: sum(body), SHA256Trailer: true},
			func(c *rpcCall) { c.send(protocol.FrameDigest, []byte(sum(body))) }, protocol.CodeBadRequest},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("f%d", i))
			p := tc.params
			p.Path, p.Size, p.Mode = path, int64(len(body)), 0o600
			c := h.open(protocol.MethodUpload, p)
			(protocol.DataWriter{W: c.st, T: protocol.FrameData}).Write(body)
			tc.end(c)
			var res protocol.UploadResult
			o := c.wait(&res)
			got, err := os.ReadFile(path)
			switch {
			case tc.code == "" && (o.err != nil || res.SHA256 != sum(body) || !bytes.Equal(got, body)):
				t.Fatalf("upload: %v, result %+v, file equal %v", o.err, res, bytes.Equal(got, body))
			case tc.code != "" && o.code() != tc.code:
				t.Fatalf("got %v, want code %s", o.err, tc.code)
			case tc.code != "" && err == nil:
				t.Fatalf("a refused upload wrote %s", path)
			}
			noTemps(t, dir)
		})
	}
}

// TestUploadSymlinkSwappedIn: while an upload is in flight (its temp file open in the target
// directory), the directory is replaced by a symlink leading out of EDGE_UPLOAD_DIRS, or the
// target file by a symlink to a file outside. Nothing outside may be created or changed: the
// edge holds the directory open (os.Root) and renames over names, never through them.
func TestUploadSymlinkSwappedIn(t *testing.T) {
	body := bytes.Repeat([]byte("n"), 200<<10)
	tests := []struct {
		name   string
		swap   func(t *testing.T, up, outside string) // runs once the temp file is open
		landed string                                 // where a successful upload is, under up
	}{
		{"directory swapped for a symlink", func(t *testing.T, up, outside string) {
			if err := os.Rename(filepath.Join(up, "d"), filepath.Join(up, "d.old")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(outside, filepath.Join(up, "d")); err != nil {
				t.Fatal(err)
			}
		}, "d.old/f"},
		{"target swapped for a symlink", func(t *testing.T, up, outside string) {
			target := filepath.Join(up, "d", "f")
			os.Remove(target)
			if err := os.Symlink(filepath.Join(outside, "f"), target); err != nil {
				t.Fatal(err)
			}
		}, "d/f"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up, outside := t.TempDir(), t.TempDir()
			os.Mkdir(filepath.Join(up, "d"), 0o755)
			os.WriteFile(filepath.Join(up, "d", "f"), []byte("old"), 0o644)
			os.WriteFile(filepath.Join(outside, "f"), []byte("keep"), 0o644)
			h := newHarness(t, Config{UploadDirs: []string{up}})
			c := h.open(protocol.MethodUpload, protocol.UploadParams{Path: filepath.Join(up, "d", "f"), Size: int64(len(body)),
				SHA256: sum(body), Mode: 0o644, Overwrite: true})
			(protocol.DataWriter{W: c.st, T: protocol.FrameData}).Write(body[:100<<10])
			waitOpenUnder(t, filepath.Join(up, "d")+"/")
			tc.swap(t, up, outside)
			(protocol.DataWriter{W: c.st, T: protocol.FrameData}).Write(body[100<<10:])
			c.send(protocol.FrameData, nil)
			var res protocol.UploadResult
			o := c.wait(&res)
			// The upload goes where it was checked: into the directory the edge holds open.
			if o.err != nil {
				t.Fatalf("upload: %v", o.err)
			}
			st, err := os.Lstat(filepath.Join(up, tc.landed))
			if got, _ := os.ReadFile(filepath.Join(up, tc.landed)); err != nil || !st.Mode().IsRegular() || !bytes.Equal(got, body) {
				t.Errorf("%s is not the uploaded regular file (%v)", tc.landed, err)
			}
			noTemps(t, filepath.Dir(filepath.Join(up, tc.landed)))
			if got, _ := os.ReadFile(filepath.Join(outside, "f")); string(got) != "keep" {
				t.Errorf("the file outside was changed: %d bytes", len(got))
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 {
				t.Errorf("outside holds %d entries, want only f", len(ents))
			}
		})
	}
}

// waitOpenUnder waits until this process (the edge under test) has a file open under prefix:
// the upload's temp file, an O_TMPFILE shown by /proc as "<dir>/#<inode> (deleted)".
func waitOpenUnder(t *testing.T, prefix string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		fds, _ := os.ReadDir("/proc/self/fd")
		for _, fd := range fds {
			if p, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(p, prefix) {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no file open under %s", prefix)
}

// TestWriteBehind: an upload starts the kernel's write-back of each full writeBehindChunk
// as it goes (so the final fsync has little left), and the file still holds every byte.
func TestWriteBehind(t *testing.T) {
	root, err := os.OpenRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	f, err := newTempFile(root, "big", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	chunk := bytes.Repeat([]byte{7}, 256<<10)
	tests := []struct {
		writes      int   // chunks of 256 KiB written so far
		wantFlushed int64 // bytes whose write-back was started
	}{
		{1, 0},
		{31, 0},
		{32, 8 << 20}, // 8 MiB
		{63, 8 << 20},
		{80, 16 << 20}, // 20 MiB written
	}
	done := 0
	for _, tt := range tests {
		for ; done < tt.writes; done++ {
			if _, err := f.Write(chunk); err != nil {
				t.Fatal(err)
			}
		}
		if f.flushed != tt.wantFlushed || f.written != int64(done)*int64(len(chunk)) {
			t.Fatalf("after %d writes: written %d, flushed %d; want flushed %d", done, f.written, f.flushed, tt.wantFlushed)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if st, err := f.Stat(); err != nil || st.Size() != 80*256<<10 {
		t.Fatalf("file size %v, %v; want %d", st, err, 80*256<<10)
	}
	// The write-back request really reaches the kernel: a good range is accepted, a range
	// sync_file_range rejects (negative offset) comes back as its error.
	if runtime.GOOS == "linux" {
		if err := startWriteback(f.File, 0, 8<<20); err != nil {
			t.Fatalf("startWriteback: %v", err)
		}
		if err := startWriteback(f.File, -1, 8<<20); err == nil {
			t.Fatal("startWriteback accepted a negative offset: the system call is not made")
		}
	}
}

// TestDirectWrites: an upload of directMin bytes or more is written with O_DIRECT in whole
// blocks, its tail through the page cache, and the committed file holds every byte
// whatever the sizes of the writes; a smaller one keeps the page cache.
func TestDirectWrites(t *testing.T) {
	tests := []struct {
		name  string
		size  int
		write int // bytes per Write call
	}{
		{"below directMin", directMin - 1, 256 << 10},
		{"exactly directMin", directMin, 256 << 10},
		{"blocks and a tail", directMin + 3*directBlock + 12345, 256 << 10},
		{"odd write sizes", directMin + 777, 100_003},
		{"writes larger than a block", directMin + directBlock/2, directBlock + 4097},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, err := os.OpenRoot(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			f, err := newTempFile(root, "big", int64(tt.size))
			if err != nil {
				t.Fatal(err)
			}
			defer f.close()
			switch {
			case tt.size < directMin && f.direct:
				t.Fatalf("an upload of %d bytes is written with O_DIRECT; want it below %d only", tt.size, directMin)
			case tt.size >= directMin && !f.direct && runtime.GOOS == "linux":
				t.Logf("the filesystem of %s refuses O_DIRECT: checking the page-cache path instead", os.TempDir())
			}
			data := make([]byte, tt.size)
			for i := range data {
				data[i] = byte(i * 7 / 3)
			}
			for off := 0; off < len(data); off += tt.write {
				if n, err := f.Write(data[off:min(off+tt.write, len(data))]); err != nil || n != min(tt.write, len(data)-off) {
					t.Fatalf("write at %d: %d, %v", off, n, err)
				}
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if f.written != int64(tt.size) || f.staged != 0 {
				t.Fatalf("written %d, staged %d; want %d, 0", f.written, f.staged, tt.size)
			}
			if err := f.commit("big", false); err != nil {
				t.Fatal(err)
			}
			got, err := root.ReadFile("big")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("file differs from what was written (%d bytes, want %d)", len(got), len(data))
			}
		})
	}
}
