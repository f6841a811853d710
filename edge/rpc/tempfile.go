package rpc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// tempFile is an upload being received beside its target. Where the kernel allows it
// (Linux O_TMPFILE) the file has no name until commit, so an edge killed mid-upload leaves
// nothing behind; elsewhere it has a hidden random name that discard removes.
type tempFile struct {
	*os.File
	dir     *os.Root
	dfd     *os.File // the target directory, for linkat
	name    string   // "" while anonymous
	written int64    // bytes written so far
	flushed int64    // bytes whose write-back has been started
}

// writeBehindChunk is how often, in bytes written, an upload asks the kernel to start writing
// its data to disk: the fsync that ends the upload then finds little left to do, instead of
// the whole file, and a large upload does not pile up dirty pages on a device with little
// memory.
const writeBehindChunk = 8 << 20

// Write writes p and starts the write-back of each full writeBehindChunk. Uploads write
// through it (io.Copy into a tempFile would take os.File's ReadFrom and skip it).
func (t *tempFile) Write(p []byte) (int, error) {
	n, err := t.File.Write(p)
	t.written += int64(n)
	if t.written-t.flushed >= writeBehindChunk {
		_ = startWriteback(t.File, t.flushed, t.written-t.flushed) // only spreads the fsync's work
		t.flushed = t.written
	}
	return n, err
}

// newTempFile creates the temp file for target base in dir.
func newTempFile(dir *os.Root, base string) (*tempFile, error) {
	d, err := dir.Open(".")
	if err != nil {
		return nil, err
	}
	t := &tempFile{dir: dir, dfd: d}
	if f, err := openAnonymous(d); err == nil {
		t.File = f
		return t, nil
	}
	t.name = tempName(base)
	f, err := dir.OpenFile(t.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		d.Close()
		return nil, err
	}
	t.File = f
	return t, nil
}

// tempName is a hidden random name beside the target (NAME_MAX is 255).
func tempName(base string) string {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	if len(base) > 200 {
		base = base[:200]
	}
	return "." + base + ".upload-" + hex.EncodeToString(rnd[:])
}

// commit gives the verified, synced file the name base: a link, which never clobbers, when
// overwrite is false (fs.ErrExist if base exists); a rename over base otherwise.
func (t *tempFile) commit(base string, overwrite bool) error {
	if t.name == "" {
		if !overwrite {
			return linkAnonymous(t.File, t.dfd, base)
		}
		t.name = tempName(base)
		if err := linkAnonymous(t.File, t.dfd, t.name); err != nil {
			t.name = ""
			return err
		}
	}
	if overwrite {
		return t.dir.Rename(t.name, base)
	}
	err := t.dir.Link(t.name, base)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		// Filesystems without hard links (FAT): a checked rename, racy only against local writers.
		if _, lerr := t.dir.Lstat(base); lerr == nil {
			return fs.ErrExist
		}
		return t.dir.Rename(t.name, base)
	}
	return err
}

// close releases the file and removes its temp name, if it still has one. After a
// successful commit by rename the name is gone already; after a link it is the old name.
func (t *tempFile) close() {
	t.File.Close()
	t.dfd.Close()
	if t.name != "" {
		_ = t.dir.Remove(t.name)
	}
}
