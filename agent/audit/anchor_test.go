package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLog writes n lines to a log at dir/audit.jsonl rotated at maxSize bytes, keeping every
// rotated file, and closes it. It returns the log's path.
func writeLog(t *testing.T, dir string, n int, o Options) string {
	t.Helper()
	path := filepath.Join(dir, "audit.jsonl")
	l, err := OpenOptions(path, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l.Write(Event{Event: "intent", RequestID: strings.Repeat("r", 10) + string(rune('a'+i%26)), Argv: []string{"echo", strings.Repeat("x", 40)}})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// verifyLog verifies the log at path with its default anchor, as `audit verify` does.
func verifyLog(path string) (Report, error) {
	files, err := Files(path)
	if err != nil {
		return Report{}, err
	}
	a, err := ReadAnchor(AnchorPath(path))
	if err != nil {
		return Report{}, err
	}
	return VerifyFiles(files, a)
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
}

// rehash rewrites lines as a forger would after removing some: sequence numbers renumbered
// from first, every prev recomputed from prev onwards.
func rehash(t *testing.T, lines []string, first uint64, prev string) string {
	t.Helper()
	var out bytes.Buffer
	for i, l := range lines {
		var e Event
		if err := json.Unmarshal([]byte(strings.TrimSpace(l)), &e); err != nil {
			t.Fatal(err)
		}
		e.Seq, e.Prev = first+uint64(i), prev
		b, _ := json.Marshal(e)
		prev = hashLine(b)
		out.Write(append(b, '\n'))
	}
	return out.String()
}

// TestVerifyDetectsTampering: the tampering that passed `audit verify` before sequence
// numbers and the anchor (a truncated log, a deleted current or oldest file, lines removed and
// the chain re-hashed) fails it now, as do the edits the chain always caught.
func TestVerifyDetectsTampering(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, files []string)
		want   string // in the error; "" = intact
	}{
		{"intact", func(*testing.T, []string) {}, ""},
		{"truncated current file", func(t *testing.T, files []string) {
			cur := files[len(files)-1]
			lines := readLines(t, cur)
			os.WriteFile(cur, []byte(strings.Join(lines[:len(lines)-2], "")), 0o600)
		}, "truncated"},
		{"current file deleted", func(t *testing.T, files []string) { os.Remove(files[len(files)-1]) }, "truncated"},
		{"oldest file deleted", func(t *testing.T, files []string) { os.Remove(files[0]) }, "oldest lines"},
		{"middle file deleted", func(t *testing.T, files []string) { os.Remove(files[1]) }, "removed"},
		{"line removed", func(t *testing.T, files []string) {
			lines := readLines(t, files[1])
			os.WriteFile(files[1], []byte(lines[0]+strings.Join(lines[2:], "")), 0o600)
		}, "removed"},
		{"line edited", func(t *testing.T, files []string) {
			b, _ := os.ReadFile(files[1])
			os.WriteFile(files[1], bytes.Replace(b, []byte("echo"), []byte("ecHo"), 1), 0o600)
		}, "edited"},
		{"lines removed and the chain re-hashed", func(t *testing.T, files []string) {
			// Remove the current file's first two lines, renumber and re-hash the rest, and
			// pad the end with two made-up lines: chain, numbering and line count are intact.
			cur := files[len(files)-1]
			lines := readLines(t, cur)
			var first Event
			json.Unmarshal([]byte(lines[0]), &first)
			forged := append(lines[2:], lines[len(lines)-1], lines[len(lines)-1])
			os.WriteFile(cur, []byte(rehash(t, forged, first.Seq, first.Prev)), 0o600)
		}, "re-hashed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLog(t, t.TempDir(), 60, Options{MaxSize: 2000, MaxFiles: -1})
			files, err := Files(path)
			if err != nil || len(files) < 4 {
				t.Fatalf("files = %v, %v; want at least 4", files, err)
			}
			tc.tamper(t, files)
			rep, err := verifyLog(path)
			if tc.want == "" {
				if err != nil || rep.Lines != 60 || rep.FirstSeq != 1 || rep.LastSeq != 60 || !rep.Anchored {
					t.Fatalf("verify = %+v, %v; want 60 lines seq 1-60, anchored", rep, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify = %+v, %v; want an error about %q", rep, err, tc.want)
			}
		})
	}
}

// TestRetentionBoundsRotatedFiles: rotated files beyond MaxFiles or MaxTotalBytes are
// deleted oldest first, each deletion is audited, and the log still verifies against its
// anchor.
func TestRetentionBoundsRotatedFiles(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		maxFiles int
		maxBytes int64
	}{
		{"by count", Options{MaxSize: 1500, MaxFiles: 3}, 3, 3 * 1500},
		{"by total size", Options{MaxSize: 1500, MaxFiles: 100, MaxTotalBytes: 4000}, 100, 4000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeLog(t, t.TempDir(), 200, tc.opts)
			files, err := Files(path)
			if err != nil {
				t.Fatal(err)
			}
			rotated := files[:len(files)-1]
			var total int64
			for _, f := range rotated {
				st, _ := os.Stat(f)
				total += st.Size()
			}
			if len(rotated) > tc.maxFiles || total > tc.maxBytes {
				t.Fatalf("%d rotated files, %d bytes; want at most %d and %d", len(rotated), total, tc.maxFiles, tc.maxBytes)
			}
			rep, err := verifyLog(path)
			if err != nil || rep.FirstSeq <= 1 {
				t.Fatalf("verify = %+v, %v; want intact, old lines gone", rep, err)
			}
			pruned := 0
			for _, f := range files {
				pruned += strings.Count(string(must(os.ReadFile(f))), `"event":"audit_pruned"`)
			}
			if pruned == 0 {
				t.Fatal("no audit_pruned line records the deletions")
			}
			// Deleting the oldest kept file is still detected.
			os.Remove(files[0])
			if _, err := verifyLog(path); err == nil || !strings.Contains(err.Error(), "oldest lines") {
				t.Fatalf("verify without the oldest kept file = %v", err)
			}
		})
	}
}

// TestReopenRecordsTruncation: a log found shorter than its anchor at open is recorded as
// damaged, so that writing on cannot hide it; numbering goes on across a reopen.
func TestReopenRecordsTruncation(t *testing.T) {
	dir := t.TempDir()
	path := writeLog(t, dir, 5, Options{})
	lines := readLines(t, path)
	os.WriteFile(path, []byte(strings.Join(lines[:3], "")), 0o600)
	l, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(Event{Event: "edge_connect"})
	l.Close()
	_, err = verifyLog(path)
	if err == nil || !strings.Contains(err.Error(), "ends at seq 3 but its anchor recorded seq 5") {
		t.Fatalf("verify after a truncation and a reopen = %v", err)
	}

	// An intact log reopened goes on numbering.
	path = writeLog(t, t.TempDir(), 3, Options{})
	l, err = Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Write(Event{Event: "edge_connect"})
	l.Close()
	if rep, err := verifyLog(path); err != nil || rep.LastSeq != 4 {
		t.Fatalf("verify after a reopen = %+v, %v", rep, err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
