package rpc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/memory"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// maxUploadSize bounds one upload whatever the gateway announces.
const maxUploadSize = 1 << 40

// errUploadsNeedDirs is why an edge with an executable allowlist and no upload directories
// refuses every upload (and says so in its start log): an upload that may write anywhere, as
// the edge's user (usually root), can replace an allowed executable, drop a program into a
// PATH directory, or write a file the system itself runs (/etc/ld.so.preload, cron, systemd
// units), and the allowlist would mean nothing. The edge still starts, so that exec, jobs,
// downloads and device info keep working.
const errUploadsNeedDirs = "uploads are disabled on this edge: EDGE_ALLOW_COMMANDS is set and EDGE_UPLOAD_DIRS is empty, " +
	"and an upload that may write anywhere could replace an allowed executable or a file the system runs; " +
	"set EDGE_UPLOAD_DIRS to the directories uploads may write (never a directory on PATH)"

// UploadsDisabled is the start-up warning for an edge whose uploads are off, or "".
func UploadsDisabled(allowCommands, uploadDirs []string) string {
	if len(allowCommands) > 0 && len(uploadDirs) == 0 {
		return errUploadsNeedDirs
	}
	return ""
}

// upload writes one file atomically: temp file in the target directory, verified size and
// SHA-256, mode, then a rename (or a link, which cannot clobber, when overwrite is false).
func (s *Server) upload(ctx context.Context, c *call) (any, error) {
	var p protocol.UploadParams
	if err := decodeValid(c, &p); err != nil {
		return nil, err
	}
	c.entry.Path = p.Path
	if p.Size > maxUploadSize {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "upload of %d bytes is above the edge's bound (%d)", p.Size, int64(maxUploadSize))
	}
	if p.Mode&0o7000 != 0 {
		return nil, protocol.Errorf(protocol.CodePolicy, "mode %#o refused: setuid, setgid and sticky bits are never set by uploads", p.Mode)
	}
	mode := fs.FileMode(p.Mode)
	if mode == 0 {
		mode = 0o644
	}
	want := strings.ToLower(p.SHA256) // "" with SHA256Trailer (Validate): it follows the content
	if len(s.cfg.AllowCommands) > 0 && len(s.cfg.UploadDirs) == 0 {
		return nil, protocol.Errorf(protocol.CodePolicy, "%s", errUploadsNeedDirs)
	}

	cf, err := s.confine(p.Path, p.Within, s.uploads())
	if err != nil {
		return nil, err
	}
	clean := filepath.Clean(p.Path)
	dirRel, base := path.Dir(cf.rel), path.Base(cf.rel)
	if base == "." || base == "/" {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "path %s names a directory, not a file", clean)
	}
	root, err := cf.open()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	if p.CreateDirs && dirRel != "." {
		if err := root.MkdirAll(dirRel, 0o755); err != nil {
			return nil, fsError("create directory "+filepath.Dir(clean), err)
		}
	}
	dir, err := root.OpenRoot(dirRel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, protocol.Errorf(protocol.CodeNotFound, "directory %s does not exist (set create_dirs to create it)", filepath.Dir(clean))
		}
		return nil, fsError("open directory "+filepath.Dir(clean), err)
	}
	defer dir.Close()
	if why := s.protectedDir(dir, s.uploads()); why != "" {
		return nil, protocol.Errorf(protocol.CodePolicy, "directory %s %s", filepath.Dir(clean), why)
	}
	if err := checkTarget(dir, base, clean, p.Overwrite); err != nil {
		return nil, err
	}

	if p.Size >= memory.BigTransfer {
		defer s.release.Soon()
	}
	tmp, sum, err := receive(ctx, dir, base, c, p.Size, want, mode)
	if err != nil {
		return nil, err
	}
	defer tmp.close()
	if err := checkTarget(dir, base, clean, p.Overwrite); err != nil {
		return nil, err
	}
	if err := tmp.commit(base, p.Overwrite); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, protocol.Errorf(protocol.CodeExists, "%s already exists (set overwrite to replace it)", clean)
		}
		return nil, fsError("rename into "+clean, err)
	}
	if d, err := dir.Open("."); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return protocol.UploadResult{Path: clean, Size: p.Size, SHA256: sum, Mode: fmt.Sprintf("%04o", uint32(mode))}, nil
}

// checkTarget refuses an existing target when !overwrite, and any target that is not a
// regular file or a symlink (which rename replaces, never follows).
func checkTarget(dir *os.Root, base, clean string, overwrite bool) error {
	st, err := dir.Lstat(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fsError("stat "+clean, err)
	}
	if !overwrite {
		return protocol.Errorf(protocol.CodeExists, "%s already exists (set overwrite to replace it)", clean)
	}
	if !st.Mode().IsRegular() && st.Mode()&fs.ModeSymlink == 0 {
		return protocol.Errorf(protocol.CodePolicy, "%s is a %s, not a regular file; refusing to replace it", clean, kind(st.Mode()))
	}
	return nil
}

// receive reads the body into a new temp file beside the target, verifies its size and
// SHA-256 (want, or with want "" the one in the FrameDigest ending the body), sets the mode
// and syncs it, and returns the verified SHA-256. On failure nothing is left in the directory.
// Reading the stream, writing the file and hashing run at once (see sink), a few frames apart.
func receive(ctx context.Context, dir *os.Root, base string, c *call, size int64, want string, mode fs.FileMode) (*tempFile, string, error) {
	f, err := newTempFile(dir, base, size)
	if err != nil {
		return nil, "", fsError("create temporary file in target directory", err)
	}
	k := newSink(f)
	fail := func(err error) (*tempFile, string, error) {
		k.finish()
		f.close()
		return nil, "", err
	}
	trailer := want == "" // the digest ends the body (protocol 2)
	var got int64
	var buf []byte // the buffer the next data frame is read into
	for {
		if ctx.Err() != nil {
			return fail(protocol.Errorf(protocol.CodeCancelled, "upload cancelled: the edge is shutting down"))
		}
		if buf == nil {
			var werr error
			if buf, werr = k.buffer(); werr != nil {
				return fail(fsError("write temporary file", werr))
			}
		}
		typ, p, err := c.fr.NextInto(buf)
		if err != nil {
			return fail(protocol.Errorf(protocol.CodeIO, "upload stream ended after %d of %d bytes: %v", got, size, err))
		}
		if typ == protocol.FrameCancel {
			return fail(protocol.Errorf(protocol.CodeCancelled, "upload cancelled by the gateway"))
		}
		if typ == protocol.FrameDigest {
			if !trailer {
				return fail(protocol.Errorf(protocol.CodeBadRequest, "unexpected digest frame: the request gave its sha256"))
			}
			if want = string(p); !protocol.ValidSHA256(want) {
				return fail(protocol.Errorf(protocol.CodeBadRequest, "digest frame %q is not a lower-case hex SHA-256", want))
			}
			break
		}
		if typ != protocol.FrameData {
			return fail(protocol.Errorf(protocol.CodeBadRequest, "unexpected %s frame in upload body", typ))
		}
		if len(p) == 0 {
			if trailer {
				return fail(protocol.Errorf(protocol.CodeBadRequest, "upload body ended without the digest frame that sha256_trailer announced"))
			}
			break
		}
		if got+int64(len(p)) > size {
			return fail(protocol.Errorf(protocol.CodeBadRequest, "upload body is longer than the announced %d bytes", size))
		}
		k.push(p) // p is buf's start: NextInto reads every data frame into buf
		buf = nil
		got += int64(len(p))
	}
	sum, werr := k.finish()
	if werr != nil {
		return fail(fsError("write temporary file", werr))
	}
	if got != size {
		return fail(protocol.Errorf(protocol.CodeBadRequest, "upload body has %d bytes, announced %d", got, size))
	}
	if sum != want {
		return fail(protocol.Errorf(protocol.CodeBadRequest, "sha256 mismatch: received %s, announced %s", sum, want))
	}
	if err := f.Chmod(mode); err != nil {
		return fail(fsError("chmod temporary file", err))
	}
	if err := f.Sync(); err != nil {
		return fail(fsError("sync temporary file", err))
	}
	return f, want, nil
}

// recvDepth is how many data frames (of protocol.MaxDataFrame bytes) an upload holds at once
// between the stream reader, the file writer and the hasher: 768 KiB per upload.
const recvDepth = 3

// sink writes an upload's chunks to its temp file and hashes them in two goroutines of its
// own, so that on a device with two cores or more the SHA-256 (the slowest step) no longer
// holds up the writes, and neither holds up the reading of the stream. A chunk's buffer goes
// back to the pool once both are done with it.
type sink struct {
	free    chan []byte // buffers nobody uses
	toWrite chan []byte
	toHash  chan []byte
	done    chan []byte // a buffer one of the two goroutines is done with (see release)
	users   map[*byte]int
	wg      sync.WaitGroup
	h       hash.Hash
	mu      sync.Mutex
	werr    error // the first write error; later chunks are dropped
	ended   bool
}

// newSink starts the writer of f (a *tempFile, whose Write starts the write-back) and the hasher.
func newSink(f io.Writer) *sink {
	k := &sink{
		free:    make(chan []byte, recvDepth),
		toWrite: make(chan []byte, recvDepth),
		toHash:  make(chan []byte, recvDepth),
		done:    make(chan []byte, 2*recvDepth),
		users:   make(map[*byte]int, recvDepth),
		h:       sha256.New(),
	}
	for range recvDepth {
		k.free <- make([]byte, protocol.MaxDataFrame)
	}
	k.wg.Go(func() {
		for b := range k.toWrite {
			if k.err() == nil {
				if _, err := f.Write(b); err != nil {
					k.mu.Lock()
					k.werr = err
					k.mu.Unlock()
				}
			}
			k.done <- b
		}
	})
	k.wg.Go(func() {
		for b := range k.toHash {
			k.h.Write(b)
			k.done <- b
		}
	})
	return k
}

// err is the first write error, if any.
func (k *sink) err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.werr
}

// buffer returns a buffer for the next frame, waiting for one to come back if all are in
// use, or the write error that makes further frames pointless.
func (k *sink) buffer() ([]byte, error) {
	for {
		if err := k.err(); err != nil {
			return nil, err
		}
		select {
		case b := <-k.free:
			return b, nil
		case b := <-k.done:
			k.release(b)
		}
	}
}

// release counts one goroutine done with b; the second one gives it back to the pool.
func (k *sink) release(b []byte) {
	key := &b[:1][0]
	if k.users[key]--; k.users[key] == 0 {
		delete(k.users, key)
		k.free <- b[:cap(b)]
	}
}

// push hands p, a buffer from buffer holding a chunk, to the writer and the hasher.
func (k *sink) push(p []byte) {
	k.users[&p[:1][0]] = 2
	k.toWrite <- p
	k.toHash <- p
}

// finish waits until every chunk pushed is written and hashed, stops the goroutines and
// returns the SHA-256 of the chunks (lower-case hex) and the first write error. It may be
// called more than once.
func (k *sink) finish() (string, error) {
	if !k.ended {
		k.ended = true
		close(k.toWrite)
		close(k.toHash)
		k.wg.Wait()
	}
	return hex.EncodeToString(k.h.Sum(nil)), k.err()
}

// kind names a non-regular file type for messages.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// fsError maps a filesystem error onto a protocol error code with context.
func fsError(what string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return protocol.Errorf(protocol.CodeNotFound, "%s: %v", what, err)
	case errors.Is(err, fs.ErrPermission):
		return protocol.Errorf(protocol.CodePolicy, "%s: %v", what, err)
	case errors.Is(err, fs.ErrExist):
		return protocol.Errorf(protocol.CodeExists, "%s: %v", what, err)
	case strings.Contains(err.Error(), "escapes from parent"), strings.Contains(err.Error(), "path escapes"):
		return protocol.Errorf(protocol.CodePolicy, "%s: path leaves the allowed directory: %v", what, err)
	}
	return protocol.Errorf(protocol.CodeIO, "%s: %v", what, err)
}
