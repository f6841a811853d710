// Package audit writes the gateway's append-only audit log: one JSON object per line, each
// carrying a sequence number (seq, from 1, across rotated files) and the SHA-256 of the line
// before it (prev, also across files), plus an anchor outside the log file (Anchor: the first
// kept and the last written line, rewritten at most once a second, at rotation and at Close).
//
// What VerifyFiles (`audit verify`) proves, given the files and the anchor: every line is as
// written, in order, none removed between the first and the last (hash chain and sequence
// numbers); the log still starts where the anchor says (no oldest file removed, except by the
// logger's own retention, which moves the anchor and writes audit_pruned) and still holds the
// anchored last line unchanged (not truncated, current file not removed, no lines removed and
// the chain re-hashed). What it cannot prove: anything about lines written after the last
// anchor (at most Options.AnchorInterval, or since a crash), or about a log whose anchor was
// rewritten too by someone with write access to both: keep a copy of the anchor elsewhere to
// cover that.
//
// Durability, exactly: Write hands its line to the kernel in one write(2) on a file opened
// O_APPEND, under the Logger's lock, before it returns; a caller that writes an intent line
// and then sends its RPC (agent/tools) therefore never sends one whose line is not in the
// file, and lines are in the file in the order their Writes returned. There is no fsync per
// line: a line survives the gateway process crashing or being killed at any point after its
// Write returned, but a crash of the host itself (power loss, kernel panic) can lose the
// lines written since the last fsync. The log is fsynced at every anchor checkpoint (at most
// Options.AnchorInterval, default 1 s, after a line is written), at rotation and at Close,
// and the anchor is only rewritten after that sync, so it never names a line that is not on
// disk. A line lost in a host crash is thus at most AnchorInterval old. (An fsync per line measured ≈ 0.5 ms here, more than the
// whole tunnel and edge overhead of a call; grouping concurrent writers into one fsync would
// still put a full fsync on every sequential call's path.)
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// maxLine bounds one audit line; longer argv or commands are cut before writing.
const maxLine = 64 << 10

// Logger appends events to the audit log. A nil *Logger discards everything, so callers need
// no checks. It is safe for concurrent use.
type Logger struct {
	mu       sync.Mutex
	w        io.Writer
	f        *os.File // nil when writing to stderr
	path     string
	size     int64 // bytes in f
	opts     Options
	prev     string // hash of the last line written
	seq      uint64 // sequence number of the last line written
	log      *slog.Logger
	now      func() time.Time
	anchor   Anchor      // as last written (or to be written) to opts.AnchorPath
	dirty    bool        // lines were written since the anchor was
	anchorAt *time.Timer // pending checkpoint; nil when none
	closed   bool

	lines atomic.Uint64 // lines written since Open, for the metrics
}

// Defaults of Options.
const (
	// DefaultMaxSize is the size at which Open rotates the audit log.
	DefaultMaxSize = 100 << 20
	// DefaultMaxFiles is how many rotated files are kept by default.
	DefaultMaxFiles = 10
	// DefaultAnchorInterval bounds how long a written line waits for the anchor to cover it.
	DefaultAnchorInterval = time.Second
)

// Options tune OpenOptions. Zero values get the defaults noted.
type Options struct {
	// MaxSize: before a line would take the current file past it, the file is rotated.
	// 0 = never rotate.
	MaxSize int64
	// MaxFiles bounds the rotated files kept (default DefaultMaxFiles; <0: no bound). Beyond
	// it, or beyond MaxTotalBytes, the oldest are deleted at rotation and the deletion is
	// recorded in the log (audit_pruned) and in the anchor, so that verification still passes.
	MaxFiles int
	// MaxTotalBytes bounds the rotated files' total size (default MaxFiles × MaxSize).
	MaxTotalBytes int64
	// AnchorPath is the checkpoint of the log's first and last line kept outside the log
	// (see Anchor). Default: AnchorPath(path). "-" keeps none.
	AnchorPath string
	// AnchorInterval: the anchor is rewritten at most this often while lines are written
	// (default DefaultAnchorInterval), and at every rotation and Close.
	AnchorInterval time.Duration
}

// Open opens the audit log at path with rotation at DefaultMaxSize; see OpenSize.
func Open(path string, log *slog.Logger) (*Logger, error) {
	return OpenSize(path, DefaultMaxSize, log)
}

// OpenSize is OpenOptions with rotation at maxSize bytes (0: never) and the other options'
// defaults.
func OpenSize(path string, maxSize int64, log *slog.Logger) (*Logger, error) {
	return OpenOptions(path, Options{MaxSize: maxSize}, log)
}

// OpenOptions opens (creating 0600) the audit log at path for appending and recovers the
// hash chain and sequence number from its last line. Before a line would take the file past
// o.MaxSize bytes the file is renamed to <name>-<UTC time><ext> beside it and a new one
// started; the chain and the sequence numbers go on across files (a file's first prev is the
// hash of the previous file's last line), so VerifyFiles checks the whole history. The oldest
// rotated files beyond o.MaxFiles or o.MaxTotalBytes are deleted. Path "-" writes to stderr
// (no rotation, no anchor).
//
// If the log ends before the line its anchor records (lines or files were removed, or lost
// in a crash), the fact is logged and written to the log as audit_anchor_mismatch, which
// VerifyFiles reports from then on.
func OpenOptions(path string, o Options, log *slog.Logger) (*Logger, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Logger{log: log, now: time.Now, path: path, opts: o.withDefaults(path)}
	if path == "-" {
		l.w = os.Stderr
		return l, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	last, err := lastLine(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	l.w, l.f, l.size = f, f, st.Size()
	if last.hash == "" && l.size == 0 {
		last = lastRotatedLine(path)
	}
	l.prev, l.seq = last.hash, last.seq
	if err := l.openAnchor(); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

func (o Options) withDefaults(path string) Options {
	if o.MaxFiles == 0 {
		o.MaxFiles = DefaultMaxFiles
	}
	if o.MaxTotalBytes == 0 && o.MaxFiles > 0 {
		o.MaxTotalBytes = int64(o.MaxFiles) * o.MaxSize
	}
	if o.AnchorPath == "" {
		o.AnchorPath = AnchorPath(path)
	}
	if o.AnchorInterval <= 0 {
		o.AnchorInterval = DefaultAnchorInterval
	}
	return o
}

// lineEnd is what a file's last line tells: its hash and sequence number (0 when it has none).
type lineEnd struct {
	hash string
	seq  uint64
}

// lastLine reads the file's last complete line ("" hash for an empty file).
func lastLine(f *os.File) (lineEnd, error) {
	st, err := f.Stat()
	if err != nil {
		return lineEnd{}, err
	}
	size := st.Size()
	if size == 0 {
		return lineEnd{}, nil
	}
	n := min(size, int64(2*maxLine))
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, size-n); err != nil && !errors.Is(err, io.EOF) {
		return lineEnd{}, err
	}
	buf = bytes.TrimRight(buf, "\n")
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[i+1:]
	}
	return lineEnd{hash: hashLine(buf), seq: lineSeq(buf)}, nil
}

// lineSeq is the seq field of an audit line, 0 when it has none or is no audit line.
func lineSeq(b []byte) uint64 {
	var e struct {
		Seq uint64 `json:"seq"`
	}
	if json.Unmarshal(b, &e) != nil {
		return 0
	}
	return e.Seq
}

func hashLine(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Write appends e, stamping Time, Seq and Prev. A write error is logged, never returned: an
// audit failure must be visible to the operator but must not turn into a second failure for
// the caller.
func (l *Logger) Write(e Event) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writeLocked(e, true)
}

// writeLocked is Write with mu held; rotate says whether the line may rotate the file first
// (not for the lines rotation itself writes).
func (l *Logger) writeLocked(e Event, rotate bool) {
	e.Time = l.now().UTC().Format(time.RFC3339Nano)
	e.Prev = l.prev
	e.Seq = l.seq + 1
	line, err := json.Marshal(e)
	if err == nil && len(line) > maxLine {
		e.Argv, e.Command, e.Error = nil, cut(e.Command, 1024), cut(e.Error, 1024)
		line, err = json.Marshal(e)
	}
	if err != nil {
		l.log.Error("audit: encode event", "event", e.Event, "err", err)
		return
	}
	if rotate && l.f != nil && l.opts.MaxSize > 0 && l.size > 0 && l.size+int64(len(line))+1 > l.opts.MaxSize {
		if err := l.rotate(); err != nil {
			l.log.Error("audit: rotation failed, still writing to the current file", "err", err)
		}
		// Rotation may have written lines (audit_pruned): this one follows them.
		l.writeLocked(e, false)
		return
	}
	n, err := l.w.Write(append(line, '\n'))
	l.size += int64(n)
	if err != nil {
		l.log.Error("audit: write failed", "event", e.Event, "err", err)
		return
	}
	l.prev, l.seq = hashLine(line), e.Seq
	l.lines.Add(1)
	l.scheduleAnchor()
}

// Lines is the number of lines written since Open (a monitoring counter); 0 for nil.
func (l *Logger) Lines() uint64 {
	if l == nil {
		return 0
	}
	return l.lines.Load()
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// Close writes the anchor and closes the log file.
func (l *Logger) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.anchorAt != nil {
		l.anchorAt.Stop()
		l.anchorAt = nil
	}
	err := l.checkpoint()
	return errors.Join(err, l.f.Close())
}

// Verify reads one audit log file and checks its hash chain and sequence numbers. It
// returns the number of lines checked and, on the first break, an error naming its line
// number. It proves nothing about lines missing at either end: VerifyFiles with the anchor
// does.
func Verify(r io.Reader) (int, error) {
	n, _, err := VerifyFrom(r, "", false)
	return n, err
}

// Ptr returns a pointer to v, for the optional numeric fields of Event.
func Ptr[T any](v T) *T { return &v }
