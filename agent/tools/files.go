package tools

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// filesRel maps a source_path / dest_path onto a path relative to FILES_DIR: relative paths
// are taken inside it, absolute ones must lie under it. Whatever the name, the file is then
// opened through an os.Root on FILES_DIR, which refuses "..", and symlinks that lead out.
func (h *handlers) filesRel(arg, p string) (string, error) {
	if h.cfg.FilesDir == "" {
		return "", fmt.Errorf("%s is disabled: this gateway has no FILES_DIR", arg)
	}
	if p == "" || len(p) > 4096 || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%s must be a file name inside the gateway's FILES_DIR (%s)", arg, h.cfg.FilesDir)
	}
	rel := p
	if filepath.IsAbs(p) {
		dir := filepath.Clean(h.cfg.FilesDir)
		clean := filepath.Clean(p)
		if !strings.HasPrefix(clean, dir+string(filepath.Separator)) {
			return "", fmt.Errorf("%s %q is outside the gateway's FILES_DIR (%s): only files in that directory can be transferred", arg, oneLine(p), dir)
		}
		rel = clean[len(dir)+1:]
	}
	if !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%s %q leaves the gateway's FILES_DIR (%s): give a path inside it", arg, oneLine(p), h.cfg.FilesDir)
	}
	return filepath.ToSlash(filepath.Clean(rel)), nil
}

// openFilesRoot opens FILES_DIR (creating it 0700 if missing).
func (h *handlers) openFilesRoot() (*os.Root, error) {
	if err := os.MkdirAll(h.cfg.FilesDir, 0o700); err != nil {
		return nil, fmt.Errorf("FILES_DIR %s: %w", h.cfg.FilesDir, err)
	}
	r, err := os.OpenRoot(h.cfg.FilesDir)
	if err != nil {
		return nil, fmt.Errorf("FILES_DIR %s: %w", h.cfg.FilesDir, err)
	}
	return r, nil
}

// rootError phrases an os.Root error for the model.
func rootError(arg, p string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %q does not exist in the gateway's FILES_DIR", arg, oneLine(p))
	case strings.Contains(err.Error(), "escapes"):
		return fmt.Errorf("%s %q leads out of the gateway's FILES_DIR (through a symlink or ..): refused", arg, oneLine(p))
	}
	return fmt.Errorf("%s %q: %v", arg, oneLine(p), err)
}

// destFile is a file being received into FILES_DIR under a hidden temporary name; commit
// syncs it and renames it into place, discard removes it.
type destFile struct {
	*os.File
	root *os.Root
	tmp  string
	rel  string
}

// createDest starts receiving rel in root; overwrite false refuses an existing file.
func createDest(root *os.Root, rel string, overwrite bool) (*destFile, error) {
	if _, err := root.Lstat(rel); err == nil && !overwrite {
		return nil, fmt.Errorf("dest_path %q already exists in FILES_DIR: set overwrite to replace it", rel)
	}
	if dir := path.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o700); err != nil {
			return nil, rootError("dest_path", rel, err)
		}
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(path.Dir(rel), "."+path.Base(rel)+".partial-"+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, rootError("dest_path", rel, err)
	}
	return &destFile{File: f, root: root, tmp: tmp, rel: rel}, nil
}

// commit makes the received file durable and gives it its name.
func (d *destFile) commit() error {
	if err := d.Sync(); err != nil {
		d.discard()
		return fmt.Errorf("dest_path %q: sync: %w", d.rel, err)
	}
	if err := d.Close(); err != nil {
		d.discard()
		return fmt.Errorf("dest_path %q: %w", d.rel, err)
	}
	if err := d.root.Rename(d.tmp, d.rel); err != nil {
		_ = d.root.Remove(d.tmp)
		return rootError("dest_path", d.rel, err)
	}
	return nil
}

// discard removes the partial file.
func (d *destFile) discard() {
	d.Close()
	_ = d.root.Remove(d.tmp)
}

// sourceFile opens upload_file's source_path inside FILES_DIR. The params carry its size and
// no SHA-256: the gateway hashes the file while sending it, in one pass, and the edge checks
// what it wrote against that digest (Gateway.Upload).
func (h *handlers) sourceFile(in UploadInput) (*os.File, protocol.UploadParams, error) {
	var p protocol.UploadParams
	rel, err := h.filesRel("source_path", in.SourcePath)
	if err != nil {
		return nil, p, err
	}
	params, _, err := h.uploadParams(UploadInput{Edge: in.Edge, Path: in.Path, Mode: in.Mode, Overwrite: in.Overwrite, CreateDirs: in.CreateDirs})
	if err != nil {
		return nil, p, err
	}
	root, err := h.openFilesRoot()
	if err != nil {
		return nil, p, err
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, p, rootError("source_path", rel, err)
	}
	fail := func(err error) (*os.File, protocol.UploadParams, error) {
		f.Close()
		return nil, p, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(rootError("source_path", rel, err))
	}
	if !fi.Mode().IsRegular() {
		return fail(fmt.Errorf("source_path %q is not a regular file", rel))
	}
	if fi.Size() > h.cfg.MaxTransferBytes {
		return fail(fmt.Errorf("source_path %q is %d bytes, above this gateway's MAX_TRANSFER_BYTES of %d", rel, fi.Size(), h.cfg.MaxTransferBytes))
	}
	params.Size, params.SHA256 = fi.Size(), ""
	return f, params, nil
}
