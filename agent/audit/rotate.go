package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// rotatedTimeFormat names rotated files; it sorts in time order.
const rotatedTimeFormat = "20060102T150405.000000000Z"

// rotate renames the current file aside and opens a fresh one; callers hold mu. Rotation is
// built in because the gateway's container has no logrotate.
func (l *Logger) rotate() error {
	dir, base := filepath.Split(l.path)
	ext := filepath.Ext(base)
	aside := filepath.Join(dir, strings.TrimSuffix(base, ext)+"-"+l.now().UTC().Format(rotatedTimeFormat)+ext)
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", l.path, err)
	}
	if err := os.Rename(l.path, aside); err != nil {
		return fmt.Errorf("rotate %s: %w", l.path, err)
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("rotate %s: %w", l.path, err)
	}
	l.f.Close()
	l.w, l.f, l.size = f, f, 0
	l.log.Info("audit log rotated", "old", aside)
	return nil
}

// Files lists the audit log at path with its rotated files, oldest first, for verification.
func Files(path string) ([]string, error) {
	dir, base := filepath.Split(path)
	ext := filepath.Ext(base)
	matches, err := filepath.Glob(filepath.Join(dir, globEscape(strings.TrimSuffix(base, ext))+"-*"+globEscape(ext)))
	if err != nil {
		return nil, fmt.Errorf("list rotated audit files: %w", err)
	}
	var out []string
	for _, m := range matches {
		stamp := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), strings.TrimSuffix(base, ext)+"-"), ext)
		if _, err := time.Parse(rotatedTimeFormat, stamp); err == nil {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no audit log at %s", path)
	}
	return out, nil
}

func globEscape(s string) string {
	return strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`).Replace(s)
}

// lastRotatedHash is the hash of the last line of the newest rotated file, so a fresh file
// continues the chain; "" when there is none.
func lastRotatedHash(path string) string {
	files, err := Files(path)
	if err != nil {
		return ""
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == path })
	if len(files) == 0 {
		return ""
	}
	f, err := os.Open(files[len(files)-1])
	if err != nil {
		return ""
	}
	defer f.Close()
	h, _ := lastLineHash(f)
	return h
}

// VerifyFrom checks the hash chain of one file of the log. When linked is true the first
// line's prev must equal prev (the previous file's last hash). It returns the lines checked
// and the hash of the last one, to pass to the next file.
func VerifyFrom(r io.Reader, prev string, linked bool) (int, string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4*maxLine)
	n := 0
	for sc.Scan() {
		n++
		var e struct {
			Prev *string `json:"prev"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Prev == nil {
			return n - 1, prev, fmt.Errorf("line %d: not an audit event", n)
		}
		if (n > 1 || linked) && *e.Prev != prev {
			if n == 1 {
				return 0, prev, errors.New("line 1: prev hash does not match the last line of the previous file: a file or lines were removed")
			}
			return n - 1, prev, fmt.Errorf("line %d: prev hash does not match line %d: the log was edited or lines were removed", n, n-1)
		}
		prev = hashLine(sc.Bytes())
	}
	if err := sc.Err(); err != nil {
		return n, prev, fmt.Errorf("line %d: %w", n+1, err)
	}
	return n, prev, nil
}
