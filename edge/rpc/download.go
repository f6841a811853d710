package rpc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/memory"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// downloadChunk is the read size for downloads (large reads are measurably faster).
const downloadChunk = protocol.MaxDataFrame

// download sends up to MaxBytes of a regular file as data frames, then its size, the
// SHA-256 of what was sent and, reading on to the end of a truncated file of at most
// protocol.MaxFileHash bytes, the whole file's SHA-256. The file is opened through an os.Root on the download directory
// (EDGE_DOWNLOAD_DIRS or "/", narrowed by the request's Within: see confine), so no "..",
// symlink or rename race leads out of it, and the edge's key and state directory are
// refused by identity (device and inode), not by name.
func (s *Server) download(ctx context.Context, c *call) (any, error) {
	var p protocol.DownloadParams
	if err := decodeValid(c, &p); err != nil {
		return nil, err
	}
	clean := filepath.Clean(p.Path)
	c.entry.Path = clean
	cf, err := s.confine(clean, p.Within, s.downloads())
	if err != nil {
		return nil, err
	}
	root, err := cf.open()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	// The file's own directory is opened first and checked by identity (protectedDir), then
	// the file inside it: a symlinked EDGE_STATE_DIR or a rename cannot lead into the state.
	dir, err := root.OpenRoot(path.Dir(cf.rel))
	if err != nil {
		return nil, fileError(clean, err)
	}
	defer dir.Close()
	if why := s.protectedDir(dir, s.downloads()); why != "" {
		return nil, protocol.Errorf(protocol.CodePolicy, "%s: directory %s %s", clean, filepath.Dir(clean), why)
	}
	f, err := dir.OpenFile(path.Base(cf.rel), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fileError(clean, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileError(clean, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, protocol.Errorf(protocol.CodePolicy, "%s is a %s, not a regular file", clean, kind(fi.Mode()))
	}
	if s.protectedFile(fi) {
		return nil, protocol.Errorf(protocol.CodePolicy, "%s is the edge's own key or state and cannot be read", clean)
	}

	res := protocol.DownloadResult{Path: clean, Size: fi.Size(), Mode: fmt.Sprintf("%04o", uint32(fi.Mode().Perm()))}
	limit := min(p.MaxBytes, fi.Size())
	if limit >= memory.BigTransfer {
		defer s.release.Soon()
	}
	h := sha256.New()
	// One buffer, the frame header in front of the payload: no allocation per chunk.
	buf := make([]byte, protocol.FrameHeaderLen+downloadChunk)
	for res.Sent < limit {
		if ctx.Err() != nil {
			return nil, protocol.Errorf(protocol.CodeCancelled, "download cancelled: the edge is shutting down")
		}
		want := min(int64(downloadChunk), limit-res.Sent)
		n, rerr := io.ReadFull(f, buf[protocol.FrameHeaderLen:protocol.FrameHeaderLen+want])
		if n > 0 {
			h.Write(buf[protocol.FrameHeaderLen : protocol.FrameHeaderLen+n])
			frame, _ := protocol.AppendFrame(buf[:0], protocol.FrameData, buf[protocol.FrameHeaderLen:protocol.FrameHeaderLen+n])
			if err := c.w.raw(frame); err != nil {
				return nil, protocol.Errorf(protocol.CodeIO, "download of %s: the gateway went away: %v", clean, err)
			}
			res.Sent += int64(n)
		}
		if rerr != nil {
			break // the file shrank while being read: what was sent is described below
		}
	}
	if err := c.w.frame(protocol.FrameData, nil); err != nil {
		return nil, protocol.Errorf(protocol.CodeIO, "download of %s: the gateway went away: %v", clean, err)
	}
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	res.Truncated = res.Sent < res.Size
	switch {
	case !res.Truncated:
		res.FileSHA256 = res.SHA256
	case res.Sent == limit && res.Size <= protocol.MaxFileHash:
		// Read on to the end (the size when opened) for the whole file's hash; the bytes
		// already hashed are the file's first ones, so h goes on from there.
		if n, err := copyCtx(ctx, h, io.LimitReader(f, res.Size-res.Sent), buf); err == nil && res.Sent+n == res.Size {
			res.FileSHA256 = hex.EncodeToString(h.Sum(nil))
		}
	}
	return res, nil
}

// copyCtx copies r into w through buf until EOF or ctx is done.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := r.Read(buf)
		w.Write(buf[:m])
		n += int64(m)
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// fileError is the one-line error for a file that cannot be opened or read, naming the
// path as the caller gave it and never the syscall (openat, fstat) or the relative path
// it was opened by inside the download directory.
func fileError(clean string, err error) error {
	var errno syscall.Errno
	errors.As(err, &errno)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return protocol.Errorf(protocol.CodeNotFound, "no such file: %s", clean)
	case errno == syscall.ENOTDIR, strings.HasSuffix(err.Error(), "not a directory"): // os.Root's OpenRoot has no errno
		return protocol.Errorf(protocol.CodeNotFound, "no such file: %s (a directory on the way is a file)", clean)
	case errors.Is(err, fs.ErrPermission):
		return protocol.Errorf(protocol.CodePolicy, "permission denied: %s (the edge service's user may not read it)", clean)
	case errno == syscall.EISDIR:
		return protocol.Errorf(protocol.CodePolicy, "%s is a directory, not a regular file", clean)
	case errno == syscall.ELOOP:
		return protocol.Errorf(protocol.CodePolicy, "%s: too many levels of symbolic links", clean)
	case strings.Contains(err.Error(), "escapes from parent"), strings.Contains(err.Error(), "path escapes"):
		return protocol.Errorf(protocol.CodePolicy, "%s: path leaves the allowed directory (through a symbolic link)", clean)
	case errno != 0:
		return protocol.Errorf(protocol.CodeIO, "cannot read %s: %s", clean, errno.Error())
	}
	return protocol.Errorf(protocol.CodeIO, "cannot read %s", clean)
}

// protectedFile reports whether an opened file is the edge's key or lies in its state
// directory, by identity: the check holds whatever names or symlinks led to it.
func (s *Server) protectedFile(fi fs.FileInfo) bool {
	for _, k := range s.keyFiles {
		if st, err := os.Stat(k); err == nil && os.SameFile(fi, st) {
			return true
		}
	}
	if s.cfg.StateDir == "" {
		return false
	}
	found := false
	// StateDir is the resolved directory (NewServer): WalkDir does not follow a symlinked root.
	_ = filepath.WalkDir(s.cfg.StateDir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || found {
			return filepath.SkipDir
		}
		if st, err := d.Info(); err == nil && os.SameFile(fi, st) {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}
