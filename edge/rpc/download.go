package rpc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/memory"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// downloadChunk is the read size for downloads (large reads are measurably faster).
const downloadChunk = protocol.MaxDataFrame

// download sends up to MaxBytes of a regular file as data frames, then its size and the
// SHA-256 of what was sent. The file is opened through an os.Root on the download directory
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
		return nil, fsError("open directory "+filepath.Dir(clean), err)
	}
	defer dir.Close()
	if why := s.protectedDir(dir, s.downloads()); why != "" {
		return nil, protocol.Errorf(protocol.CodePolicy, "%s: directory %s %s", clean, filepath.Dir(clean), why)
	}
	f, err := dir.OpenFile(path.Base(cf.rel), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fsError("open "+clean, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fsError("stat "+clean, err)
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
	return res, nil
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
