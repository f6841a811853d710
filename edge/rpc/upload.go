package rpc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// maxUploadSize bounds one upload whatever the gateway announces.
const maxUploadSize = 1 << 40

// upload writes one file atomically: temp file in the target directory, verified size and
// SHA-256, mode, then a rename (or a link, which cannot clobber, when overwrite is false).
func (s *Server) upload(ctx context.Context, c *call) (any, error) {
	var p protocol.UploadParams
	if err := c.req.DecodeParams(&p); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "upload: %v", err)
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
	want := strings.ToLower(p.SHA256)
	if _, err := hex.DecodeString(want); err != nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "sha256 %q is not hex", p.SHA256)
	}

	rootDir, rel, err := s.uploadRoot(p.Path)
	if err != nil {
		return nil, err
	}
	clean := filepath.Clean(p.Path)
	dirRel, base := path.Dir(rel), path.Base(rel)
	if rel == "" || base == "." || base == "/" {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "path %s names a directory, not a file", clean)
	}
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeNotFound, "upload directory %s: %v", rootDir, errors.Unwrap(err))
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
	if st, err := dir.Stat("."); err != nil || s.protectedDir(st) {
		return nil, protocol.Errorf(protocol.CodePolicy, "%s is the edge's own key or state directory and cannot be written", filepath.Dir(clean))
	}
	if err := checkTarget(dir, base, clean, p.Overwrite); err != nil {
		return nil, err
	}

	tmp, err := writeTemp(ctx, dir, base, c, p.Size, want, mode)
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			_ = dir.Remove(tmp)
		}
	}()
	if err := checkTarget(dir, base, clean, p.Overwrite); err != nil {
		return nil, err
	}
	if p.Overwrite {
		if err := dir.Rename(tmp, base); err != nil {
			return nil, fsError("rename into "+clean, err)
		}
	} else if err := dir.Link(tmp, base); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, protocol.Errorf(protocol.CodeExists, "%s already exists (set overwrite to replace it)", clean)
		}
		// Filesystems without hard links (FAT): fall back to a checked rename.
		if _, lerr := dir.Lstat(base); lerr == nil {
			return nil, protocol.Errorf(protocol.CodeExists, "%s already exists (set overwrite to replace it)", clean)
		}
		if err := dir.Rename(tmp, base); err != nil {
			return nil, fsError("rename into "+clean, err)
		}
	} else {
		_ = dir.Remove(tmp)
	}
	committed = true
	if d, err := dir.Open("."); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return protocol.UploadResult{Path: clean, Size: p.Size, SHA256: want, Mode: fmt.Sprintf("%04o", uint32(mode))}, nil
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

// writeTemp receives the body into a new temp file beside the target and verifies it. On
// any failure the temp file is gone; on success its name is returned.
func writeTemp(ctx context.Context, dir *os.Root, base string, c *call, size int64, want string, mode fs.FileMode) (string, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := "." + trimName(base) + ".upload-" + hex.EncodeToString(rnd[:])
	f, err := dir.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fsError("create temporary file in target directory", err)
	}
	fail := func(err error) (string, error) {
		f.Close()
		_ = dir.Remove(name)
		return "", err
	}
	h := sha256.New()
	var got int64
	for {
		if ctx.Err() != nil {
			return fail(protocol.Errorf(protocol.CodeCancelled, "upload cancelled: the edge is shutting down"))
		}
		typ, p, err := c.fr.Next()
		if err != nil {
			return fail(protocol.Errorf(protocol.CodeIO, "upload stream ended after %d of %d bytes: %v", got, size, err))
		}
		if typ == protocol.FrameCancel {
			return fail(protocol.Errorf(protocol.CodeCancelled, "upload cancelled by the gateway"))
		}
		if typ != protocol.FrameData {
			return fail(protocol.Errorf(protocol.CodeBadRequest, "unexpected %s frame in upload body", typ))
		}
		if len(p) == 0 {
			break
		}
		if got+int64(len(p)) > size {
			return fail(protocol.Errorf(protocol.CodeBadRequest, "upload body is longer than the announced %d bytes", size))
		}
		if _, err := f.Write(p); err != nil {
			return fail(fsError("write temporary file", err))
		}
		h.Write(p)
		got += int64(len(p))
	}
	if got != size {
		return fail(protocol.Errorf(protocol.CodeBadRequest, "upload body has %d bytes, announced %d", got, size))
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != want {
		return fail(protocol.Errorf(protocol.CodeBadRequest, "sha256 mismatch: received %s, announced %s", sum, want))
	}
	if err := f.Chmod(mode); err != nil {
		return fail(fsError("chmod temporary file", err))
	}
	if err := f.Sync(); err != nil {
		return fail(fsError("sync temporary file", err))
	}
	if err := f.Close(); err != nil {
		_ = dir.Remove(name)
		return "", fsError("close temporary file", err)
	}
	return name, nil
}

// trimName bounds the target's name inside the temp name (NAME_MAX is 255).
func trimName(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
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
		return protocol.Errorf(protocol.CodePolicy, "%s: path leaves the upload directory: %v", what, err)
	}
	return protocol.Errorf(protocol.CodeIO, "%s: %v", what, err)
}
