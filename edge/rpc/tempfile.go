package rpc

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"syscall"
	"unsafe"
)

// tempFile is an upload being received beside its target. Where the kernel allows it
// (Linux O_TMPFILE) the file has no name until commit, so an edge killed mid-upload leaves
// nothing behind; elsewhere it has a hidden random name that discard removes.
type tempFile struct {
	*os.File
	dir     *os.Root
	dfd     *os.File // the target directory, for linkat
	name    string   // "" while anonymous
	written int64    // bytes written to the file so far
	flushed int64    // bytes whose write-back has been started

	// With direct set, the file is open with O_DIRECT and Write collects the bytes in stage
	// (directBlock bytes, aligned in memory), writing whole blocks past the page cache; the
	// last partial block goes through the page cache in Sync.
	direct bool
	stage  []byte
	staged int // bytes in stage not yet written
}

// An upload of directMin bytes or more is written with O_DIRECT in blocks of directBlock,
// from a buffer aligned to directAlign (the largest logical block size of common disks).
// A new file's pages are costly to allocate in the page cache (on this project's benchmark
// VM, a new file written through it runs at a tenth of the disk's rate), and a large upload
// that bypasses it leaves a small device's cache to what it runs.
const (
	directMin   = 4 << 20
	directBlock = 1 << 20
	directAlign = 4096
)

// writeBehindChunk is how often, in bytes written, an upload asks the kernel to start writing
// its data to disk: the fsync that ends the upload then finds little left to do, instead of
// the whole file, and a large upload does not pile up dirty pages on a device with little
// memory.
const writeBehindChunk = 8 << 20

// Write writes p and starts the write-back of each full writeBehindChunk, or with direct
// stages p and writes each full block. Uploads write through it (io.Copy into a tempFile
// would take os.File's ReadFrom and skip it).
func (t *tempFile) Write(p []byte) (int, error) {
	if t.direct {
		for n := 0; n < len(p); {
			c := copy(t.stage[t.staged:], p[n:])
			t.staged += c
			n += c
			if t.staged == len(t.stage) {
				if err := t.spill(); err != nil {
					return n - c, err
				}
			}
		}
		return len(p), nil
	}
	n, err := t.File.Write(p)
	t.written += int64(n)
	if t.written-t.flushed >= writeBehindChunk {
		_ = startWriteback(t.File, t.flushed, t.written-t.flushed) // only spreads the fsync's work
		t.flushed = t.written
	}
	return n, err
}

// spill writes the staged bytes at the end of the file. A filesystem that accepted O_DIRECT
// at open but refuses the write (EINVAL: alignment it does not support) gets the same bytes
// through the page cache, and so does the rest of the upload.
func (t *tempFile) spill() error {
	n, err := t.File.WriteAt(t.stage[:t.staged], t.written)
	if err != nil && t.direct && errors.Is(err, syscall.EINVAL) && n == 0 {
		t.direct = false
		if err = setDirect(t.File, false); err == nil {
			n, err = t.File.WriteAt(t.stage[:t.staged], t.written)
		}
	}
	t.written += int64(n)
	t.staged = 0
	return err
}

// Sync writes what is still staged (through the page cache: a tail need not be a whole
// block) and commits the file to disk.
func (t *tempFile) Sync() error {
	if t.staged > 0 {
		if t.direct {
			t.direct = false
			if err := setDirect(t.File, false); err != nil {
				return err
			}
		}
		if err := t.spill(); err != nil {
			return err
		}
	}
	return t.File.Sync()
}

// alignedBuffer returns n bytes whose start is aligned to directAlign.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(-uintptr(unsafe.Pointer(&b[0])) & (directAlign - 1))
	return b[off : off+n : off+n]
}

// newTempFile creates the temp file for target base in dir, for an upload of size bytes.
func newTempFile(dir *os.Root, base string, size int64) (*tempFile, error) {
	d, err := dir.Open(".")
	if err != nil {
		return nil, err
	}
	t := &tempFile{dir: dir, dfd: d}
	if f, err := openAnonymous(d); err == nil {
		t.File = f
	} else {
		t.name = tempName(base)
		f, err := dir.OpenFile(t.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			d.Close()
			return nil, err
		}
		t.File = f
	}
	if size >= directMin && setDirect(t.File, true) == nil {
		t.direct = true
		t.stage = alignedBuffer(directBlock)
	}
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
