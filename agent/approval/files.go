package approval

// The files of STATE_DIR/actions: names, atomic writes, careful reads, the liveness lock and
// the sweep of stale files.

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	pendingExt   = ".json"
	decisionExt  = ".decision"
	tmpMark      = ".tmp-"  // in the names of temp files, which start with a dot
	idLen        = 12       // hex characters of an action id
	maxFileBytes = 64 << 10 // larger files in the directory are not ours
	maxField     = 200      // runes of actor, role, tool, edge, request id, approver
	maxSummary   = 400      // runes of the summary
	maxReason    = 300      // runes of a decision's reason
	maxWarned    = 1024     // distinct ignored file names logged per Store
)

// errExists: a decision file is already there (claim lost).
var errExists = errors.New("decision exists")

// ValidID reports whether id has the form of an action id: 12 lowercase hex characters. Ids
// are checked with it before they are used in a path.
func ValidID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func normID(id string) string { return strings.ToLower(strings.TrimSpace(id)) }

// safeID is id cut short and made printable, for error messages.
func safeID(id string) string { return oneLine(id, 2*idLen) }

func newID() (string, error) {
	b := make([]byte, idLen/2)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("approval: random action id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

func (s *Store) pendingPath(id string) string  { return filepath.Join(s.dir, id+pendingExt) }
func (s *Store) decisionPath(id string) string { return filepath.Join(s.dir, id+decisionExt) }

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// ours reports whether name is one this package writes (pending, decision or temp file).
func ours(name string) bool {
	if strings.HasPrefix(name, ".") && strings.Contains(name, tmpMark) {
		return true
	}
	for _, ext := range []string{pendingExt, decisionExt} {
		if id, ok := strings.CutSuffix(name, ext); ok && ValidID(id) {
			return true
		}
	}
	return false
}

// fileOwner is who the files this process writes should belong to: when root (the admin CLI
// under sudo) works on the state of a gateway that runs as another user, the files are given
// to that user so the gateway can read and remove them.
type fileOwner struct {
	uid, gid int
	set      bool
}

func (o fileOwner) apply(f *os.File) error {
	if !o.set {
		return nil
	}
	return f.Chown(o.uid, o.gid)
}

// ownerOf is the owner of path when this process is root and path belongs to someone else.
func ownerOf(path string) fileOwner {
	if os.Geteuid() != 0 {
		return fileOwner{}
	}
	st, err := os.Stat(path)
	if err != nil {
		return fileOwner{}
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
		return fileOwner{uid: int(sys.Uid), gid: int(sys.Gid), set: true}
	}
	return fileOwner{}
}

// ensureDir makes dir (0700) under its parent, which it creates too, refuses a dir that is
// a symlink or not a directory, and tightens a looser mode.
func ensureDir(dir string) (fileOwner, error) {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fileOwner{}, fmt.Errorf("approval: state directory %s: %w", parent, err)
	}
	err := os.Mkdir(dir, 0o700)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fileOwner{}, fmt.Errorf("approval: actions directory %s: %w", dir, err)
	}
	if err == nil {
		if o := ownerOf(parent); o.set {
			if err := os.Lchown(dir, o.uid, o.gid); err != nil {
				return fileOwner{}, fmt.Errorf("approval: actions directory %s: %w", dir, err)
			}
		}
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return fileOwner{}, fmt.Errorf("approval: actions directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fileOwner{}, fmt.Errorf("approval: actions directory %s is not a directory (a symlink or a file is not trusted: remove it)", dir)
	}
	if st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fileOwner{}, fmt.Errorf("approval: actions directory %s is mode %v and cannot be made 0700: %w", dir, st.Mode().Perm(), err)
		}
	}
	return ownerOf(dir), nil
}

// writePending writes a as its pending file: temp file (0600), fsync, shared flock, rename,
// directory fsync. The returned file stays open and locked while the action waits.
func (s *Store) writePending(a Action) (*os.File, error) {
	path := s.pendingPath(a.ID)
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("approval: encode action %s: %w", a.ID, err)
	}
	f, err := os.CreateTemp(s.dir, "."+a.ID+pendingExt+tmpMark+"*")
	if err != nil {
		return nil, fmt.Errorf("approval: write %s: %w", path, err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("approval: write %s: %w", path, err)
	}
	if err := s.owner.apply(f); err != nil {
		return fail(err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	// Locked before it is visible under its name: a pending file nobody holds is a dead one.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		return fail(fmt.Errorf("lock: %w", err))
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fail(err)
	}
	syncDir(s.dir)
	return f, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// readBounded reads the regular file at path (bounded, without following a symlink or
// blocking on a FIFO) and returns it with the file still open; a missing file is an error
// that matches fs.ErrNotExist.
func readBounded(path string) (b []byte, f *os.File, err error) {
	f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, nil, errors.New("a symlink")
		}
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, errors.New("not a regular file")
	}
	b, err = io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if len(b) > maxFileBytes {
		f.Close()
		return nil, nil, fmt.Errorf("larger than %d bytes", maxFileBytes)
	}
	return b, f, nil
}

// inspect reads and checks the pending file of id, and tells whether a live Store holds it.
// A missing or untrustworthy file is ErrNotPending (the latter logged).
func (s *Store) inspect(id string) (a Action, live bool, err error) {
	path := s.pendingPath(id)
	b, f, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Action{}, false, notPending(id)
	}
	if err != nil {
		s.warnOnce(path, "approval: ignoring an unreadable pending action", "file", path, "err", err)
		return Action{}, false, notPending(id)
	}
	defer f.Close()
	if err := json.Unmarshal(b, &a); err != nil || !a.valid(id) {
		s.warnOnce(path, "approval: ignoring a pending action file that is half-written or not ours", "file", path)
		return Action{}, false, notPending(id)
	}
	a.clean()
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); {
	case err == nil:
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return a, false, nil // nobody waits on it: its gateway is gone
	case errors.Is(err, syscall.EWOULDBLOCK):
		return a, true, nil
	default:
		s.log.Debug("approval: cannot test the lock of a pending action, taking it as waiting", "file", path, "err", err)
		return a, true, nil
	}
}

func (a *Action) valid(id string) bool {
	return a.ID == id && a.Tool != "" && !a.Created.IsZero() && a.Expires.After(a.Created)
}

// clean makes every text field one printable, bounded line (it is shown on an operator's
// terminal and in a model's context).
func (a *Action) clean() {
	for _, f := range []*string{&a.Actor, &a.Role, &a.Tool, &a.Edge, &a.RequestID} {
		*f = oneLine(*f, maxField)
	}
	a.Summary = oneLine(a.Summary, maxSummary)
}

// decisionFile is the content of <id>.decision.
type decisionFile struct {
	ID string `json:"id"`
	Decision
}

type decisionState int

const (
	decisionAbsent decisionState = iota
	decisionValid
	decisionBad
)

// readDecision reads the decision file of id. A bad one (half-written, foreign, not a regular
// file) is logged once and never trusted.
func (s *Store) readDecision(id string) (Decision, decisionState) {
	path := s.decisionPath(id)
	b, f, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Decision{}, decisionAbsent
	}
	if err != nil {
		s.warnOnce(path, "approval: ignoring an unreadable decision file", "file", path, "err", err)
		return Decision{}, decisionBad
	}
	f.Close()
	var d decisionFile
	if err := json.Unmarshal(b, &d); err != nil || d.ID != id || d.At.IsZero() || (d.Approved && d.Approver == "") {
		s.warnOnce(path, "approval: ignoring a decision file that is half-written or not ours", "file", path)
		return Decision{}, decisionBad
	}
	d.Approver, d.Reason = oneLine(d.Approver, maxField), oneLine(d.Reason, maxReason)
	return d.Decision, decisionValid
}

// claim creates the decision file of id exclusively: errExists if there is one already.
// A complete temp file is hard-linked to the name, so it is never seen half-written; where
// hard links are not supported, an O_EXCL create is the fallback.
func (s *Store) claim(id string, d Decision) error {
	path := s.decisionPath(id)
	b, err := json.Marshal(decisionFile{ID: id, Decision: d})
	if err != nil {
		return err
	}
	b = append(b, '\n')
	f, err := os.CreateTemp(s.dir, "."+id+decisionExt+tmpMark+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	err = s.owner.apply(f)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	switch err := os.Link(tmp, path); {
	case err == nil:
		syncDir(s.dir)
		return nil
	case errors.Is(err, fs.ErrExist):
		return errExists
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EMLINK):
		return s.claimExcl(path, b)
	default:
		return err
	}
}

func (s *Store) claimExcl(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return errExists
	}
	if err != nil {
		return err
	}
	err = s.owner.apply(f)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	syncDir(s.dir)
	return err // a failed write leaves a bad decision file: the action is refused, never approved
}

// sweep ends the actions submitted here that expired while nobody waits on them, and removes
// stale files: pending files no live Store holds, decision tombstones older than staleAfter
// whose action is gone, and temp files older than staleAfter. Foreign files are left and logged.
func (s *Store) sweep(now time.Time) {
	s.mu.Lock()
	var idle []*held
	for _, h := range s.held {
		if !h.waiting && !now.Before(h.action.Expires) {
			h.waiting = true
			idle = append(idle, h)
		}
	}
	s.mu.Unlock()
	for _, h := range idle {
		s.conclude(h, timeoutDecision(h.action), false)
	}

	entries, err := os.ReadDir(s.dir)
	if err != nil {
		s.log.Warn("approval: cannot read the actions directory", "dir", s.dir, "err", err)
		return
	}
	remove := func(path, why string) {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("approval: cannot remove a stale file", "file", path, "err", err)
			return
		}
		s.log.Debug("approval: removed a stale file", "file", path, "why", why)
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(s.dir, name)
		if !ours(name) {
			s.warnOnce(name, "approval: ignoring a file this gateway did not write", "file", path)
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // gone meanwhile
		}
		old := now.Sub(info.ModTime()) > staleAfter
		switch {
		case strings.HasPrefix(name, "."):
			if old {
				remove(path, "an old temp file")
			}
		case strings.HasSuffix(name, pendingExt):
			id := strings.TrimSuffix(name, pendingExt)
			a, live, err := s.inspect(id)
			if err != nil || live {
				continue // untrusted files are left alone; live ones belong to a waiting call
			}
			s.log.Info("approval: removed an action whose gateway is gone", "id", id, "tool", a.Tool, "edge", a.Edge)
			remove(path, "no gateway holds it")
			remove(s.decisionPath(id), "its action is gone")
		case strings.HasSuffix(name, decisionExt):
			if id := strings.TrimSuffix(name, decisionExt); old && !exists(s.pendingPath(id)) {
				remove(path, "an old decision")
			}
		}
	}
}

// oneLine makes s valid UTF-8 on one printable line (control and format characters, which
// could move a terminal's cursor or reorder text, become spaces), trimmed and cut to max runes.
func oneLine(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max-1]) + "…"
	}
	return s
}
