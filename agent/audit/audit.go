// Package audit writes the gateway's append-only audit log: one JSON object per
// line, each carrying the SHA-256 of the line before it, so an edited or truncated log shows.
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
	mu      sync.Mutex
	w       io.Writer
	f       *os.File // nil when writing to stderr
	path    string
	size    int64 // bytes in f
	maxSize int64 // rotate before a line would take f past it; 0 = never
	prev    string
	log     *slog.Logger
	now     func() time.Time

	lines atomic.Uint64 // lines written since Open, for the metrics
}

// DefaultMaxSize is the size at which Open rotates the audit log.
const DefaultMaxSize = 100 << 20

// Open opens the audit log at path with rotation at DefaultMaxSize; see OpenSize.
func Open(path string, log *slog.Logger) (*Logger, error) {
	return OpenSize(path, DefaultMaxSize, log)
}

// OpenSize opens (creating 0600) the audit log at path for appending and recovers the hash
// chain from its last line. Before a line would take the file past maxSize bytes (0: never),
// the file is renamed to <name>-<UTC time><ext> beside it and a new one started; the chain
// goes on across files (the new file's first prev is the hash of the old file's last line),
// so Files and VerifyFrom check the whole history. path "-" writes to stderr.
func OpenSize(path string, maxSize int64, log *slog.Logger) (*Logger, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Logger{log: log, now: time.Now, path: path, maxSize: maxSize}
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
	prev, err := lastLineHash(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	l.w, l.f, l.prev, l.size = f, f, prev, st.Size()
	if prev == "" && l.size == 0 {
		l.prev = lastRotatedHash(path)
	}
	return l, nil
}

// lastLineHash returns the hash of the file's last complete line ("" for an empty file).
func lastLineHash(f *os.File) (string, error) {
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	size := st.Size()
	if size == 0 {
		return "", nil
	}
	n := min(size, int64(2*maxLine))
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, size-n); err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	buf = bytes.TrimRight(buf, "\n")
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[i+1:]
	}
	return hashLine(buf), nil
}

func hashLine(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Write appends e, stamping Time and Prev. A write error is logged, never returned: an audit
// failure must be visible to the operator but must not turn into a second failure for the caller.
func (l *Logger) Write(e Event) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e.Time = l.now().UTC().Format(time.RFC3339Nano)
	e.Prev = l.prev
	line, err := json.Marshal(e)
	if err == nil && len(line) > maxLine {
		e.Argv, e.Command, e.Error = nil, cut(e.Command, 1024), cut(e.Error, 1024)
		line, err = json.Marshal(e)
	}
	if err != nil {
		l.log.Error("audit: encode event", "event", e.Event, "err", err)
		return
	}
	if l.f != nil && l.maxSize > 0 && l.size > 0 && l.size+int64(len(line))+1 > l.maxSize {
		if err := l.rotate(); err != nil {
			l.log.Error("audit: rotation failed, still writing to the current file", "err", err)
		}
	}
	n, err := l.w.Write(append(line, '\n'))
	l.size += int64(n)
	if err != nil {
		l.log.Error("audit: write failed", "event", e.Event, "err", err)
		return
	}
	l.prev = hashLine(line)
	l.lines.Add(1)
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

// Close closes the log file.
func (l *Logger) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// Verify reads one audit log file and checks its hash chain. It returns the number of lines
// checked and, on the first break, an error naming its line number.
func Verify(r io.Reader) (int, error) {
	n, _, err := VerifyFrom(r, "", false)
	return n, err
}

// Ptr returns a pointer to v, for the optional numeric fields of Event.
func Ptr[T any](v T) *T { return &v }
