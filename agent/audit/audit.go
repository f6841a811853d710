// Package audit writes the gateway's append-only audit log (SPEC §4.4): one JSON object per
// line, each carrying the SHA-256 of the line before it, so an edited or truncated log shows.
package audit

import (
	"bufio"
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
	mu   sync.Mutex
	w    io.Writer
	f    *os.File // nil when writing to stderr
	prev string
	log  *slog.Logger
	now  func() time.Time

	lines atomic.Uint64 // lines written since Open, for the metrics
}

// Open opens (creating 0600) the audit log at path for appending and recovers the hash chain
// from its last line. path "-" writes to stderr.
func Open(path string, log *slog.Logger) (*Logger, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Logger{log: log, now: time.Now}
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
	l.w, l.f, l.prev = f, f, prev
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
	if _, err := l.w.Write(append(line, '\n')); err != nil {
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

// Verify reads an audit log and checks the hash chain. It returns the number of lines checked
// and, on the first break, an error naming its line number.
func Verify(r io.Reader) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4*maxLine)
	prev, n := "", 0
	for sc.Scan() {
		n++
		var e struct {
			Prev *string `json:"prev"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Prev == nil {
			return n - 1, fmt.Errorf("line %d: not an audit event", n)
		}
		if n > 1 && *e.Prev != prev {
			return n - 1, fmt.Errorf("line %d: prev hash does not match line %d: the log was edited or lines were removed", n, n-1)
		}
		prev = hashLine(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		return n, fmt.Errorf("line %d: %w", n+1, err)
	}
	return n, nil
}

// Ptr returns a pointer to v, for the optional numeric fields of Event.
func Ptr[T any](v T) *T { return &v }
