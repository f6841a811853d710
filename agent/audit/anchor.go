package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Anchor is the log's checkpoint kept outside the log file (AnchorPath): the sequence number
// and hash of the last line written when it was taken, and of the first line the log still
// keeps (what retention has not deleted). The Logger rewrites it atomically at most once per
// Options.AnchorInterval while lines are written, after syncing the log, and at every
// rotation and Close; so it is never ahead of what is on disk.
//
// With it VerifyFiles detects what the hash chain alone cannot: a log cut short (its last
// lines, or its current file, removed), its oldest rotated file removed, and lines removed
// with the rest of the chain re-hashed (the anchored line's hash changes). It cannot detect
// (1) a change to lines written after the last checkpoint (at most AnchorInterval old, or
// since a crash), nor (2) tampering by someone who can also rewrite the anchor consistently:
// it lives beside the log (STATE_DIR by default); keep a copy elsewhere (another filesystem,
// or shipped off the host) for that.
type Anchor struct {
	Log       string `json:"log"`        // base name of the log file
	FirstSeq  uint64 `json:"first_seq"`  // seq of the first line kept; 0: unknown (lines without seq first)
	FirstPrev string `json:"first_prev"` // that line's prev
	LastSeq   uint64 `json:"last_seq"`   // seq of the last line written when the anchor was taken
	LastHash  string `json:"last_hash"`  // that line's hash
	Time      string `json:"time"`       // when the anchor was taken
}

// AnchorPath is where the anchor of the log at path is kept by default: path + ".anchor".
func AnchorPath(path string) string { return path + ".anchor" }

// ReadAnchor reads an anchor file. A missing file is an error wrapping fs.ErrNotExist.
func ReadAnchor(path string) (*Anchor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit anchor: %w", err)
	}
	var a Anchor
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("audit anchor %s: %w", path, err)
	}
	return &a, nil
}

// openAnchor reads the anchor at open and compares it with the log's end: a log that ends
// before the anchored line is recorded in the log (audit_anchor_mismatch), as is a missing
// anchor of a log that already has numbered lines. Then the anchor is brought up to date.
func (l *Logger) openAnchor() error {
	if l.opts.AnchorPath == "-" {
		return nil
	}
	a, err := ReadAnchor(l.opts.AnchorPath)
	var problem string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		first := l.firstKept()
		a = &Anchor{FirstSeq: first.seq, FirstPrev: first.prev}
		if l.seq > 0 {
			problem = fmt.Sprintf("anchor %s missing: recreated at seq %d; lines removed before now cannot be detected", l.opts.AnchorPath, l.seq)
		}
	case err != nil:
		return err
	case a.LastSeq > l.seq:
		problem = fmt.Sprintf("the log ends at seq %d but its anchor recorded seq %d (hash %s): lines or files were removed, or lost in a crash", l.seq, a.LastSeq, a.LastHash)
	case a.LastSeq == l.seq && a.LastHash != l.prev:
		problem = fmt.Sprintf("the log's last line (seq %d) differs from the one its anchor recorded: lines were removed and the chain re-hashed", l.seq)
	}
	l.anchor = *a
	l.anchor.Log = filepath.Base(l.path)
	l.dirty = true
	if problem != "" {
		l.log.Error("audit log damaged", "problem", problem)
		l.writeLocked(Event{Event: "audit_anchor_mismatch", Path: l.path, Outcome: "error", Error: problem}, false)
	}
	return l.checkpoint()
}

// firstLine is what a log file's first numbered line tells; seq 0 when there is none yet
// (the next line written will be the first).
type firstLine struct {
	seq  uint64
	prev string
}

// firstKept is the first numbered line of the whole log (rotated files included), or the
// line to be written next when there is none.
func (l *Logger) firstKept() firstLine {
	if l.seq == 0 { // the last line has no number: no line has (numbered lines come last)
		return firstLine{seq: 1, prev: l.prev}
	}
	files, _ := Files(l.path)
	for _, f := range files {
		if fl, ok := readFirstLine(f); ok {
			return fl
		}
	}
	return firstLine{seq: l.seq + 1, prev: l.prev}
}

// readFirstLine finds the first line with a sequence number in the file.
func readFirstLine(path string) (firstLine, bool) {
	f, err := os.Open(path)
	if err != nil {
		return firstLine{}, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4*maxLine)
	for sc.Scan() {
		var e struct {
			Seq  uint64 `json:"seq"`
			Prev string `json:"prev"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Seq > 0 {
			return firstLine{seq: e.Seq, prev: e.Prev}, true
		}
	}
	return firstLine{}, false
}

// scheduleAnchor arranges for the anchor to cover the lines just written within
// AnchorInterval. Called with mu held.
func (l *Logger) scheduleAnchor() {
	l.dirty = true
	if l.anchorAt != nil || l.closed || l.f == nil || l.opts.AnchorPath == "-" {
		return
	}
	l.anchorAt = time.AfterFunc(l.opts.AnchorInterval, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.anchorAt = nil
		if l.closed {
			return
		}
		if err := l.checkpoint(); err != nil {
			l.log.Error("audit: cannot write the anchor", "err", err)
		}
	})
}

// checkpoint syncs the log and rewrites the anchor atomically with the last line written.
// Called with mu held.
func (l *Logger) checkpoint() error {
	if l.f == nil || l.opts.AnchorPath == "-" || !l.dirty {
		return nil
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: sync %s: %w", l.path, err)
	}
	l.anchor.LastSeq, l.anchor.LastHash = l.seq, l.prev
	l.anchor.Time = l.now().UTC().Format(time.RFC3339Nano)
	b, err := json.Marshal(l.anchor)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(l.opts.AnchorPath, append(b, '\n')); err != nil {
		return fmt.Errorf("audit anchor: %w", err)
	}
	l.dirty = false
	return nil
}

// writeFileAtomic writes a 0600 file through a synced temporary file renamed into place.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(data)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// prune deletes the oldest rotated files beyond Options.MaxFiles or MaxTotalBytes. Before a
// file goes, the anchor is moved on to the first line that stays, so that verification still
// passes; after it, the deletion is written to the log (audit_pruned). Called with mu held,
// right after a rotation.
func (l *Logger) prune() {
	if l.opts.MaxFiles < 0 && l.opts.MaxTotalBytes <= 0 {
		return
	}
	files, err := Files(l.path)
	if err != nil {
		return
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == l.path })
	sizes := make([]int64, len(files))
	var total int64
	for i, f := range files {
		if st, err := os.Stat(f); err == nil {
			sizes[i] = st.Size()
			total += sizes[i]
		}
	}
	for i := 0; i < len(files); i++ {
		over := (l.opts.MaxFiles >= 0 && len(files)-i > l.opts.MaxFiles) || (l.opts.MaxTotalBytes > 0 && total > l.opts.MaxTotalBytes)
		if !over {
			return
		}
		from, _ := readFirstLine(files[i])
		next := firstLine{seq: l.seq + 1, prev: l.prev} // the current file is empty
		if i+1 < len(files) {
			if fl, ok := readFirstLine(files[i+1]); ok {
				next = fl
			}
		}
		l.anchor.FirstSeq, l.anchor.FirstPrev = next.seq, next.prev
		l.dirty = true
		if err := l.checkpoint(); err != nil {
			l.log.Error("audit: retention stopped: cannot write the anchor", "err", err)
			return
		}
		if err := os.Remove(files[i]); err != nil {
			l.log.Error("audit: retention: cannot delete a rotated file", "file", files[i], "err", err)
			return
		}
		total -= sizes[i]
		msg := fmt.Sprintf("deleted by retention (%d files, %d bytes kept at most): lines seq %d to %d, %d bytes",
			l.opts.MaxFiles, l.opts.MaxTotalBytes, from.seq, next.seq-1, sizes[i])
		l.log.Info("audit: rotated file deleted by retention", "file", files[i], "first_seq", from.seq, "last_seq", next.seq-1)
		l.writeLocked(Event{Event: "audit_pruned", Path: filepath.Base(files[i]), Bytes: Ptr(sizes[i]), Outcome: "ok", Error: msg}, false)
	}
}

// Report is what VerifyFiles checked.
type Report struct {
	Files, Lines      int
	FirstSeq, LastSeq uint64 // of the numbered lines checked; 0 when none had a number
	Anchored          bool   // the anchor was checked too
}

// VerifyFiles checks the log made of files (oldest first, as Files lists them) as one
// chain: every line's prev is the hash of the line before it, across files; sequence
// numbers run on by one (lines written before they existed may only come first); no line
// records damage found at open (audit_anchor_mismatch). With an anchor (nil: none), also
// that the log still starts at the anchor's first kept line (no oldest file removed) and
// still holds the anchor's last line unchanged (not truncated, current file not removed,
// no lines removed and the rest re-hashed). See Anchor for what this cannot detect.
func VerifyFiles(files []string, a *Anchor) (Report, error) {
	c := chain{}
	if a != nil {
		c.want = a.LastSeq
	}
	rep := Report{Files: len(files), Anchored: a != nil}
	for i, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return rep, err
		}
		c.linked, c.n = i > 0, 0
		err = c.file(f)
		f.Close()
		rep.Lines += c.n
		if err != nil {
			return rep, fmt.Errorf("%s: %w", name, err)
		}
	}
	rep.FirstSeq, rep.LastSeq = c.first.seq, c.seq
	if len(c.damage) > 0 {
		return rep, fmt.Errorf("the log records damage found when it was opened: %s", c.damage[0])
	}
	if a == nil {
		return rep, nil
	}
	if a.FirstSeq > 0 {
		switch {
		case !c.first.set:
			return rep, fmt.Errorf("no line has a sequence number, but the anchor records the log from seq %d", a.FirstSeq)
		case c.first.seq > a.FirstSeq:
			return rep, fmt.Errorf("the log starts at seq %d, the anchor records seq %d as its first line: the oldest lines (a rotated file) were removed", c.first.seq, a.FirstSeq)
		case c.first.seq == a.FirstSeq && c.first.prev != a.FirstPrev:
			return rep, fmt.Errorf("the first line (seq %d) is not the one the anchor records", a.FirstSeq)
		}
	}
	if a.LastSeq > 0 {
		if c.seq < a.LastSeq {
			return rep, fmt.Errorf("the log ends at seq %d, the anchor records seq %d: it was truncated or its current file removed", c.seq, a.LastSeq)
		}
		if c.wantHash != a.LastHash {
			return rep, fmt.Errorf("line seq %d is not the one the anchor records: lines were removed or edited and the chain re-hashed", a.LastSeq)
		}
	}
	return rep, nil
}

// chain is the state of verifying a log line by line, file after file.
type chain struct {
	prev   string
	linked bool   // the current file's first prev must equal prev
	n      int    // lines read in the current file
	seq    uint64 // of the last numbered line; 0 before any
	first  struct {
		seq  uint64
		prev string
		set  bool
	}
	want     uint64 // the anchored seq, whose hash is kept in wantHash
	wantHash string
	damage   []string // audit_anchor_mismatch lines
}

// file checks one file's lines.
func (c *chain) file(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4*maxLine)
	for sc.Scan() {
		c.n++
		n := c.n
		var e struct {
			Prev  *string `json:"prev"`
			Seq   uint64  `json:"seq"`
			Event string  `json:"event"`
			Error string  `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Prev == nil {
			c.n--
			return fmt.Errorf("line %d: not an audit event", n)
		}
		if (n > 1 || c.linked) && *e.Prev != c.prev {
			c.n--
			if n == 1 {
				return errors.New("line 1: prev hash does not match the last line of the previous file: a file or lines were removed")
			}
			return fmt.Errorf("line %d: prev hash does not match line %d: the log was edited or lines were removed", n, n-1)
		}
		switch {
		case e.Seq == 0 && c.seq != 0:
			c.n--
			return fmt.Errorf("line %d: no sequence number after seq %d", n, c.seq)
		case e.Seq != 0 && c.seq != 0 && e.Seq != c.seq+1:
			c.n--
			return fmt.Errorf("line %d: seq %d follows seq %d: lines were removed or reordered", n, e.Seq, c.seq)
		case e.Seq != 0 && !c.first.set:
			c.first.seq, c.first.prev, c.first.set = e.Seq, *e.Prev, true
		}
		c.prev = hashLine(sc.Bytes())
		if e.Seq != 0 {
			c.seq = e.Seq
			if e.Seq == c.want {
				c.wantHash = c.prev
			}
		}
		if e.Event == "audit_anchor_mismatch" {
			c.damage = append(c.damage, fmt.Sprintf("line %d: %s", n, e.Error))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("line %d: %w", c.n+1, err)
	}
	return nil
}
