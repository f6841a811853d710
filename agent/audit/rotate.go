package audit

import (
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
	l.prune()
	l.dirty = true
	if err := l.checkpoint(); err != nil {
		l.log.Error("audit: cannot write the anchor", "err", err)
	}
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

// lastRotatedLine is the last line of the newest rotated file, so a fresh file continues
// the chain and the numbering; zero when there is none.
func lastRotatedLine(path string) lineEnd {
	files, err := Files(path)
	if err != nil {
		return lineEnd{}
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == path })
	if len(files) == 0 {
		return lineEnd{}
	}
	f, err := os.Open(files[len(files)-1])
	if err != nil {
		return lineEnd{}
	}
	defer f.Close()
	last, _ := lastLine(f)
	return last
}

// VerifyFrom checks the hash chain and sequence numbers of one file of the log. When linked
// is true the first line's prev must equal prev (the previous file's last hash). It returns
// the lines checked and the hash of the last one, to pass to the next file. VerifyFiles
// checks a whole log, sequence numbers across files and the anchor included.
func VerifyFrom(r io.Reader, prev string, linked bool) (int, string, error) {
	c := chain{prev: prev, linked: linked}
	err := c.file(r)
	return c.n, c.prev, err
}
