package forward

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/pkg/sftp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// transferChunk is the read and write size of transfers (large chunks are measurably faster).
const transferChunk = 256 << 10

// maxUploadSize bounds one upload whatever the caller announces.
const maxUploadSize = 1 << 40

// Upload implements gateway.Edge over SFTP: the content goes to a new temporary file beside
// the target (exclusive create, mode 0600), hashed while written, checked for size and
// SHA-256, fsynced (fsync@openssh.com) and given its mode, then moved into place: with
// overwrite by posix-rename@openssh.com (atomic replace), without by a hard link
// (hardlink@openssh.com) or the SFTP rename, which never replace an existing file. Any
// failure removes the temporary file and leaves the old one. With p.SHA256 empty the hash of
// what was sent is returned. Within is checked lexically and against the server's realpath
// of the directory (symlinks); unlike the companion's, that check is not race-free against a
// device user swapping directories during the upload.
func (e *Edge) Upload(ctx context.Context, rid string, p protocol.UploadParams, body io.Reader) (protocol.UploadResult, error) {
	var res protocol.UploadResult
	if body == nil {
		return res, errors.New("upload: no content")
	}
	want := strings.ToLower(p.SHA256)
	p.SHA256Trailer = want == ""
	p.SHA256 = want
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("upload: %w", err)
	}
	if p.Size > maxUploadSize {
		return res, protocol.Errorf(protocol.CodeBadRequest, "upload of %d bytes is above the bound (%d)", p.Size, int64(maxUploadSize))
	}
	if p.Mode&0o7000 != 0 {
		return res, protocol.Errorf(protocol.CodePolicy, "mode %#o refused: setuid, setgid and sticky bits are never set by uploads", p.Mode)
	}
	mode := fs.FileMode(p.Mode)
	if mode == 0 {
		mode = 0o644
	}
	clean := path.Clean(p.Path)
	dir, base := path.Dir(clean), path.Base(clean)
	if base == "/" || base == "." || strings.HasSuffix(p.Path, "/") {
		return res, protocol.Errorf(protocol.CodeBadRequest, "path %s names a directory, not a file", clean)
	}
	if err := checkWithin(clean, p.Within); err != nil {
		return res, err
	}
	c, release, err := e.begin(ctx)
	if err != nil {
		return res, err
	}
	defer release()
	sc, err := c.sftpClient()
	if err != nil {
		return res, e.lost(c, "upload", protocol.Errorf(protocol.CodeIO, "upload to %s: %v", e.h.entry.Name, err))
	}
	fail := func(what string, err error) (protocol.UploadResult, error) {
		return res, e.lost(c, "upload", sftpError(what, err))
	}
	if p.CreateDirs {
		if err := sc.MkdirAll(dir); err != nil {
			return fail("create directory "+dir, err)
		}
	}
	if st, err := sc.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return res, protocol.Errorf(protocol.CodeNotFound, "directory %s does not exist (set create_dirs to create it)", dir)
		}
		return fail("stat "+dir, err)
	} else if !st.IsDir() {
		return res, protocol.Errorf(protocol.CodeBadRequest, "%s is not a directory", dir)
	}
	if len(p.Within) > 0 {
		real, err := sc.RealPath(dir)
		if err != nil {
			return fail("resolve "+dir, err)
		}
		if err := checkWithin(path.Join(real, base), p.Within); err != nil {
			return res, err
		}
	}
	if err := checkTarget(sc, clean, p.Overwrite); err != nil {
		return res, e.lost(c, "upload", err)
	}

	tmp, err := tempName(dir, base)
	if err != nil {
		return res, err
	}
	f, err := sc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		return fail("create temporary file in "+dir, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = sc.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fail("chmod temporary file", err)
	}
	var check func() error
	if p.SHA256Trailer {
		check = gateway.UnchangedCheck(body)
	}
	h := sha256.New()
	src := &ctxReader{ctx: ctx, r: io.TeeReader(io.LimitReader(body, p.Size), h)}
	n, err := f.ReadFromWithConcurrency(src, 0)
	if err != nil {
		f.Close()
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return fail(fmt.Sprintf("write %s after %d of %d bytes", tmp, n, p.Size), err)
	}
	if n != p.Size {
		f.Close()
		return res, protocol.Errorf(protocol.CodeBadRequest, "upload body has %d bytes, announced %d", n, p.Size)
	}
	if check != nil {
		if err := check(); err != nil {
			f.Close()
			return res, fmt.Errorf("upload: %w", err)
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if want != "" && sum != want {
		f.Close()
		return res, protocol.Errorf(protocol.CodeBadRequest, "sha256 mismatch: sent %s, announced %s", sum, want)
	}
	if _, ok := sc.HasExtension("fsync@openssh.com"); ok {
		if err := f.Sync(); err != nil {
			f.Close()
			return fail("sync temporary file", err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fail("chmod temporary file", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fail("stat temporary file", err)
	}
	if err := f.Close(); err != nil {
		return fail("close temporary file", err)
	}
	if st.Size() != p.Size {
		return res, protocol.Errorf(protocol.CodeIO, "the device stored %d bytes of %d", st.Size(), p.Size)
	}
	if err := checkTarget(sc, clean, p.Overwrite); err != nil {
		return res, e.lost(c, "upload", err)
	}
	if err := commit(sc, tmp, clean, p.Overwrite); err != nil {
		return res, e.lost(c, "upload", err)
	}
	committed = true
	return protocol.UploadResult{Path: clean, Size: n, SHA256: sum, Mode: fmt.Sprintf("%04o", uint32(mode.Perm()))}, nil
}

// commit moves tmp to target: an atomic replace with overwrite, never a replace without.
func commit(sc *sftp.Client, tmp, target string, overwrite bool) error {
	var err error
	switch _, posix := sc.HasExtension("posix-rename@openssh.com"); {
	case overwrite && posix:
		err = sc.PosixRename(tmp, target)
	case overwrite:
		return protocol.Errorf(protocol.CodeIO, "the device's SFTP server has no posix-rename@openssh.com: cannot replace %s atomically", target)
	default:
		if _, hard := sc.HasExtension("hardlink@openssh.com"); hard {
			if err = sc.Link(tmp, target); err == nil {
				_ = sc.Remove(tmp)
				return nil
			}
		} else {
			err = sc.Rename(tmp, target) // SFTP v3 rename refuses an existing target
		}
		if _, serr := sc.Lstat(target); serr == nil {
			return protocol.Errorf(protocol.CodeExists, "%s already exists (set overwrite to replace it)", target)
		}
	}
	if err != nil {
		return sftpError("rename into "+target, err)
	}
	return nil
}

// checkTarget refuses an existing target without overwrite, and any that is not a regular
// file or symlink (which rename replaces, never follows).
func checkTarget(sc *sftp.Client, target string, overwrite bool) error {
	st, err := sc.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return sftpError("stat "+target, err)
	}
	if !overwrite {
		return protocol.Errorf(protocol.CodeExists, "%s already exists (set overwrite to replace it)", target)
	}
	if !st.Mode().IsRegular() && st.Mode()&fs.ModeSymlink == 0 {
		return protocol.Errorf(protocol.CodePolicy, "%s is not a regular file; refusing to replace it", target)
	}
	return nil
}

// tempName is a fresh hidden name beside the target.
func tempName(dir, base string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("upload: random name: %w", err)
	}
	return path.Join(dir, "."+trunc(base, 100)+".mcp-"+hex.EncodeToString(b[:])+".tmp"), nil
}

// checkWithin refuses a clean absolute path outside every directory of within (none: any).
func checkWithin(p string, within []string) error {
	if len(within) == 0 {
		return nil
	}
	for _, d := range within {
		if d == "/" || p == d || strings.HasPrefix(p, d+"/") {
			return nil
		}
	}
	return protocol.Errorf(protocol.CodePolicy, "%s is outside the directories this call may use (%s)", p, strings.Join(within, ", "))
}

// Download implements gateway.Edge over SFTP: up to p.MaxBytes of the regular file at p.Path
// stream into w, hashed on the way.
func (e *Edge) Download(ctx context.Context, rid string, p protocol.DownloadParams, w io.Writer) (protocol.DownloadResult, error) {
	var res protocol.DownloadResult
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("download: %w", err)
	}
	clean := path.Clean(p.Path)
	if err := checkWithin(clean, p.Within); err != nil {
		return res, err
	}
	c, release, err := e.begin(ctx)
	if err != nil {
		return res, err
	}
	defer release()
	sc, err := c.sftpClient()
	if err != nil {
		return res, e.lost(c, "download", protocol.Errorf(protocol.CodeIO, "download from %s: %v", e.h.entry.Name, err))
	}
	if len(p.Within) > 0 {
		real, err := sc.RealPath(clean)
		if err != nil {
			return res, e.lost(c, "download", sftpError("resolve "+clean, err))
		}
		if err := checkWithin(real, p.Within); err != nil {
			return res, err
		}
	}
	f, err := sc.Open(clean)
	if err != nil {
		return res, e.lost(c, "download", sftpError("open "+clean, err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return res, e.lost(c, "download", sftpError("stat "+clean, err))
	}
	if !st.Mode().IsRegular() {
		return res, protocol.Errorf(protocol.CodePolicy, "%s is not a regular file", clean)
	}
	res = protocol.DownloadResult{Path: clean, Size: st.Size(), Mode: fmt.Sprintf("%04o", uint32(st.Mode().Perm()))}
	limit := min(p.MaxBytes, st.Size())
	h := sha256.New()
	buf := make([]byte, transferChunk)
	for res.Sent < limit {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n, rerr := io.ReadFull(f, buf[:min(int64(len(buf)), limit-res.Sent)])
		if n > 0 {
			h.Write(buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				return res, fmt.Errorf("download of %s: write: %w", clean, err)
			}
			res.Sent += int64(n)
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
				break // the file shrank while being read: what was sent is described below
			}
			return res, e.lost(c, "download", sftpError("read "+clean, rerr))
		}
	}
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	res.Truncated = res.Sent < res.Size
	return res, nil
}

// sftpError maps an SFTP failure onto a protocol error code, with context.
func sftpError(what string, err error) error {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return err
	case errors.Is(err, fs.ErrNotExist):
		return protocol.Errorf(protocol.CodeNotFound, "%s: %v", what, err)
	case errors.Is(err, fs.ErrPermission):
		return protocol.Errorf(protocol.CodePolicy, "%s: permission denied for the SSH user", what)
	case errors.Is(err, fs.ErrExist):
		return protocol.Errorf(protocol.CodeExists, "%s: %v", what, err)
	}
	return protocol.Errorf(protocol.CodeIO, "%s: %v", what, err)
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
