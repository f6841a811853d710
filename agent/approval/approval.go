// Package approval holds the calls that wait for a person: a call whose policy rule
// lists its tool under `approval` is submitted here, and waits until someone approves or denies
// it, or until it expires (silence is no).
//
// The state is files in STATE_DIR/actions, so the admin CLI in another process
// (`mcp-ssh-gateway actions list|approve|deny`) works on the same state as the running gateway,
// which notices a decision at once:
//
//   - <id>.json is one pending action, written atomically (temp file, fsync, rename). The Store
//     that submitted it holds a shared flock on it for as long as the call waits, so a file that
//     nobody holds locked belongs to a gateway that is gone: it is neither listed nor decidable,
//     and it is removed.
//   - <id>.decision is the decision, created exclusively: a complete temp file hard-linked to
//     the final name (or an O_EXCL create where links are not supported), so of two deciders
//     exactly one wins and no reader sees it half-written. The waiting Store claims it too when
//     the action times out or its call is cancelled, so a late approval is refused rather than
//     reported as taken. It stays an hour as a tombstone, then it is removed.
//
// A file that does not parse, names another id, is not a regular file or has a name this
// package does not write is ignored with a log line, never trusted.
package approval

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Limits and timings.
const (
	// DirName is the directory under STATE_DIR that holds the actions.
	DirName = "actions"
	// MaxPending is how many actions one Store lets wait at once.
	MaxPending = 256
	// DefaultTimeout is how long an action submitted without Expires waits (the README's Policy section
	// approval_timeout_seconds example).
	DefaultTimeout = 120 * time.Second
	// MaxTimeout bounds how far in the future an action may expire.
	MaxTimeout = 24 * time.Hour

	pollInterval  = 500 * time.Millisecond // a waiting call re-reads its decision file this often, whatever inotify says
	sweepInterval = 30 * time.Second       // expired and stale files are looked for this often
	staleAfter    = time.Hour              // decision tombstones and temp files older than this are removed
)

// Errors that Submit, Wait and Decide wrap; test them with errors.Is.
var (
	// ErrNotPending: no action with that id waits (decided, expired, never existed, or its
	// gateway is gone).
	ErrNotPending = errors.New("no pending action")
	// ErrExpired: the action's time ran out before the decision (silence is no).
	ErrExpired = errors.New("expired")
	// ErrDecided: someone else decided first.
	ErrDecided = errors.New("already decided")
	// ErrTooMany: MaxPending actions already wait.
	ErrTooMany = errors.New("too many actions waiting for approval")
)

// Action is one call waiting for a person.
type Action struct {
	ID        string    `json:"id"`         // 12 lowercase hex characters, filled by Submit
	Created   time.Time `json:"created"`    // filled by Submit
	Expires   time.Time `json:"expires"`    // when silence becomes no; zero at Submit = DefaultTimeout from now
	Actor     string    `json:"actor"`      // the MCP client: "stdio" or "http:<name>"
	Role      string    `json:"role"`       // the caller's policy role
	Tool      string    `json:"tool"`       // required
	Edge      string    `json:"edge"`       // the edge (or the fan-out target)
	Summary   string    `json:"summary"`    // one line a person reads (see Summarize): argv / command / path, never content, stdin or tokens
	RequestID string    `json:"request_id"` // ties it to the audit lines
}

// Decision is how an action ended. Approver names who decided, e.g. "cli:root",
// "mcp:http:ops", "elicitation:stdio"; it is empty when nobody did (timeout, cancelled call,
// gateway stopping), and Reason then says which.
type Decision struct {
	Approved bool      `json:"approved"`
	Approver string    `json:"approver"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// Store is the set of actions in STATE_DIR/actions. The gateway opens one for its lifetime;
// the admin CLI opens one per command. All methods are safe for concurrent use.
type Store struct {
	dir   string
	log   *slog.Logger
	poll  time.Duration
	max   int
	owner fileOwner

	watcher *fsnotify.Watcher // nil: no inotify, the poll alone notices decisions
	done    chan struct{}     // closed by Close
	bg      sync.WaitGroup    // the watch and sweep goroutine

	mu     sync.Mutex
	held   map[string]*held // actions submitted here and not concluded
	warned map[string]bool  // file names already logged as ignored
	closed bool
}

// held is an action this Store submitted: f is its pending file, kept open with a shared flock.
type held struct {
	f       *os.File
	action  Action
	waiting bool          // a Wait (or the sweep, or Close) owns the ending
	wake    chan struct{} // cap 1: "look at the decision file now"
}

// options are test knobs.
type options struct {
	noWatch bool
	poll    time.Duration
	max     int
}

// Open makes STATE_DIR/actions (0700) if needed, removes stale files, and starts watching
// the directory for decisions. Close releases it.
func Open(stateDir string, log *slog.Logger) (*Store, error) {
	return open(stateDir, log, options{})
}

func open(stateDir string, log *slog.Logger, o options) (*Store, error) {
	if stateDir == "" {
		return nil, errors.New("approval: no STATE_DIR configured")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir := filepath.Join(stateDir, DirName)
	owner, err := ensureDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir: dir, log: log, poll: orDefault(o.poll, pollInterval), max: orDefault(o.max, MaxPending), owner: owner,
		done: make(chan struct{}), held: map[string]*held{}, warned: map[string]bool{},
	}
	s.sweep(time.Now())
	var events <-chan fsnotify.Event
	var errs <-chan error
	if !o.noWatch {
		if w, err := fsnotify.NewWatcher(); err != nil {
			log.Warn("approval: no file watcher, decisions are noticed by polling", "err", err)
		} else if err := w.Add(dir); err != nil {
			w.Close()
			log.Warn("approval: cannot watch the actions directory, decisions are noticed by polling", "dir", dir, "err", err)
		} else {
			s.watcher, events, errs = w, w.Events, w.Errors
		}
	}
	s.bg.Go(func() { s.run(events, errs) })
	return s, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Close stops watching, refuses the actions submitted here that nobody waits for ("the gateway
// stopped"), and makes pending Waits return an error. It is safe to call more than once.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	var idle []*held
	for _, h := range s.held {
		if !h.waiting {
			h.waiting = true
			idle = append(idle, h)
		}
	}
	s.mu.Unlock()
	s.bg.Wait()
	var err error
	if s.watcher != nil {
		err = s.watcher.Close()
	}
	for _, h := range idle {
		s.conclude(h, Decision{Reason: "the gateway stopped before a decision", At: time.Now().UTC()}, false)
	}
	return err
}

// run notices decision files (inotify) and sweeps stale files, until Close.
func (s *Store) run(events <-chan fsnotify.Event, errs <-chan error) {
	t := time.NewTicker(sweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if id, ok := strings.CutSuffix(filepath.Base(ev.Name), decisionExt); ok {
				s.wake(id)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			s.log.Warn("approval: file watcher error, looking at every waiting action", "err", err)
			s.wakeAll()
		case now := <-t.C:
			s.sweep(now)
		}
	}
}

// Submit records a as waiting: it fills ID and Created (and Expires, when zero, as
// DefaultTimeout from now), cleans the text fields to one printable line each, and writes the
// pending file atomically. At most MaxPending actions wait at once. Call Wait next.
func (s *Store) Submit(a Action) (Action, error) {
	now := time.Now().UTC()
	a.Created = now
	if a.Expires.IsZero() {
		a.Expires = now.Add(DefaultTimeout)
	}
	a.Expires = a.Expires.UTC()
	a.clean()
	switch {
	case a.Tool == "":
		return Action{}, errors.New("approval: an action needs its tool")
	case !a.Expires.After(now):
		return Action{}, fmt.Errorf("approval: action for %s expires at %s, which is not in the future", a.Tool, a.Expires.Format(time.RFC3339))
	case a.Expires.Sub(now) > MaxTimeout:
		return Action{}, fmt.Errorf("approval: action for %s would wait %s, more than the %s allowed", a.Tool, a.Expires.Sub(now).Round(time.Second), MaxTimeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Action{}, errors.New("approval: the store is closed")
	}
	if len(s.held) >= s.max {
		return Action{}, fmt.Errorf("%w (%d at once): decide some with `mcp-ssh-gateway actions` or let them expire", ErrTooMany, s.max)
	}
	for range 4 {
		id, err := newID()
		if err != nil {
			return Action{}, err
		}
		if s.held[id] != nil || exists(s.pendingPath(id)) || exists(s.decisionPath(id)) {
			continue
		}
		a.ID = id
		f, err := s.writePending(a)
		if err != nil {
			return Action{}, err
		}
		s.held[id] = &held{f: f, action: a, wake: make(chan struct{}, 1)}
		s.log.Info("approval: action waits for a person", "id", id, "tool", a.Tool, "edge", a.Edge, "actor", a.Actor,
			"request_id", a.RequestID, "expires", a.Expires.Format(time.RFC3339))
		return a, nil
	}
	return Action{}, errors.New("approval: no free action id (the random source repeats itself)")
}

// Wait blocks until the action id, submitted by this Store, is decided (by anyone, in any
// process), its ctx is done, or it expires. Expiry is a refusal: Decision{Approved: false,
// Reason: "no decision within N s (silence is no)"} and a nil error. A done ctx or a closed
// Store return an error (and a refusal). Either way the pending file is removed and its
// decision file stays as a tombstone, so a decision that comes later is refused.
func (s *Store) Wait(ctx context.Context, id string) (Decision, error) {
	id = normID(id)
	s.mu.Lock()
	h := s.held[id]
	switch {
	case h == nil:
		s.mu.Unlock()
		return Decision{}, fmt.Errorf("%w %s in this gateway: it was decided, expired, or never submitted here", ErrNotPending, safeID(id))
	case h.waiting:
		s.mu.Unlock()
		return Decision{}, fmt.Errorf("approval: action %s is already being waited for", id)
	}
	h.waiting = true
	s.mu.Unlock()

	expiry := time.NewTimer(time.Until(h.action.Expires))
	defer expiry.Stop()
	poll := time.NewTicker(s.poll)
	defer poll.Stop()
	for {
		if d, st := s.readDecision(id); st == decisionValid {
			return s.conclude(h, d, true), nil
		}
		select {
		case <-ctx.Done():
			reason := "the call was cancelled before a decision"
			s.conclude(h, Decision{Reason: reason, At: time.Now().UTC()}, false)
			return Decision{Reason: reason, At: time.Now().UTC()}, fmt.Errorf("approval: action %s: %w", id, context.Cause(ctx))
		case <-s.done:
			reason := "the gateway stopped before a decision"
			s.conclude(h, Decision{Reason: reason, At: time.Now().UTC()}, false)
			return Decision{Reason: reason, At: time.Now().UTC()}, fmt.Errorf("approval: action %s: the store was closed", id)
		case <-expiry.C:
			return s.conclude(h, timeoutDecision(h.action), false), nil
		case <-h.wake:
		case <-poll.C:
		}
	}
}

// Decide approves or denies the waiting action id on behalf of approver (e.g. "cli:root",
// "mcp:http:ops", "elicitation:stdio"), with an optional reason the model reads. It works from
// any process on the same STATE_DIR. It fails with ErrNotPending, ErrExpired or ErrDecided
// (with the last two it still returns the action); of two deciders racing, exactly one
// succeeds.
func (s *Store) Decide(id string, approve bool, approver, reason string) (Action, error) {
	id = normID(id)
	if !ValidID(id) {
		return Action{}, fmt.Errorf("approval: %q is not an action id (12 hex characters)", safeID(id))
	}
	approver = oneLine(approver, maxField)
	reason = oneLine(reason, maxReason)
	if approver == "" {
		return Action{}, errors.New("approval: a decision needs its approver")
	}
	a, live, err := s.inspect(id)
	if err != nil {
		return Action{}, err
	}
	if !live {
		return Action{}, notPending(id)
	}
	now := time.Now().UTC()
	if !now.Before(a.Expires) {
		return a, fmt.Errorf("action %s %w at %s without a decision (silence is no)", id, ErrExpired, a.Expires.Format(time.RFC3339))
	}
	d := Decision{Approved: approve, Approver: approver, Reason: reason, At: now}
	if err := s.claim(id, d); errors.Is(err, errExists) {
		return a, s.decidedError(id)
	} else if err != nil {
		return Action{}, fmt.Errorf("approval: record the decision on action %s: %w", id, err)
	}
	s.wake(id)
	s.log.Info("approval: action decided", "id", id, "tool", a.Tool, "edge", a.Edge, "approved", approve, "approver", approver)
	return a, nil
}

// Get returns the action id if it waits now (as List would show it), so a caller can check
// what it is before deciding; else an error that wraps ErrNotPending, ErrExpired or ErrDecided.
func (s *Store) Get(id string) (Action, error) {
	id = normID(id)
	if !ValidID(id) {
		return Action{}, fmt.Errorf("approval: %q is not an action id (12 hex characters)", safeID(id))
	}
	a, live, err := s.inspect(id)
	switch {
	case err != nil:
		return Action{}, err
	case !live:
		return Action{}, notPending(id)
	case !time.Now().Before(a.Expires):
		return a, fmt.Errorf("action %s %w at %s without a decision (silence is no)", id, ErrExpired, a.Expires.Format(time.RFC3339))
	case exists(s.decisionPath(id)):
		return a, s.decidedError(id)
	}
	return a, nil
}

// List returns the actions that wait now (not expired, not decided, held by a live gateway),
// oldest first; never nil.
func (s *Store) List() ([]Action, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("approval: read %s: %w", s.dir, err)
	}
	now := time.Now()
	out := []Action{}
	for _, e := range entries {
		name := e.Name()
		id, ok := strings.CutSuffix(name, pendingExt)
		if !ok || !ValidID(id) {
			if !ours(name) {
				s.warnOnce(name, "approval: ignoring a file this gateway did not write", "file", filepath.Join(s.dir, name))
			}
			continue
		}
		a, live, err := s.inspect(id)
		if err != nil || !live || !now.Before(a.Expires) || exists(s.decisionPath(id)) {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Action) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// conclude ends h: unless have, it claims d as the decision (a decision already on disk wins
// over it), removes the pending file and releases the lock. It returns the decision that stands.
func (s *Store) conclude(h *held, d Decision, have bool) Decision {
	id := h.action.ID
	if !have {
		switch err := s.claim(id, d); {
		case errors.Is(err, errExists):
			if got, st := s.readDecision(id); st == decisionValid {
				d = got
			} else {
				d = Decision{Reason: "its decision file is unreadable, so it is refused", At: time.Now().UTC()}
			}
		case err != nil:
			s.log.Error("approval: cannot record how an action ended", "id", id, "err", err)
		}
	}
	if err := os.Remove(s.pendingPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("approval: cannot remove a pending action", "id", id, "err", err)
	}
	h.f.Close()
	s.mu.Lock()
	delete(s.held, id)
	s.mu.Unlock()
	s.log.Info("approval: action ended", "id", id, "tool", h.action.Tool, "edge", h.action.Edge, "request_id", h.action.RequestID,
		"approved", d.Approved, "approver", d.Approver, "reason", d.Reason)
	return d
}

func (s *Store) wake(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.held[id]; h != nil {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

func (s *Store) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.held {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// timeoutDecision is the refusal of an action nobody decided in time.
func timeoutDecision(a Action) Decision {
	secs := int(math.Round(a.Expires.Sub(a.Created).Seconds()))
	return Decision{Reason: fmt.Sprintf("no decision within %d s (silence is no)", secs), At: time.Now().UTC()}
}

func notPending(id string) error {
	return fmt.Errorf("%w %s: it was decided, expired, or never existed", ErrNotPending, id)
}

// decidedError describes the decision that is already on disk for id.
func (s *Store) decidedError(id string) error {
	d, st := s.readDecision(id)
	switch {
	case st != decisionValid:
		return fmt.Errorf("action %s is %w (its decision file is unreadable, so it will be refused)", id, ErrDecided)
	case d.Approver == "":
		return fmt.Errorf("action %s is %w: %s", id, ErrDecided, d.Reason)
	default:
		verb := "denied"
		if d.Approved {
			verb = "approved"
		}
		return fmt.Errorf("action %s is %w: %s by %s at %s", id, ErrDecided, verb, d.Approver, d.At.UTC().Format(time.RFC3339))
	}
}

// warnOnce logs msg for a file name the first time this Store sees it (bounded).
func (s *Store) warnOnce(name, msg string, args ...any) {
	s.mu.Lock()
	seen := s.warned[name]
	if !seen && len(s.warned) < maxWarned {
		s.warned[name] = true
	}
	s.mu.Unlock()
	if !seen {
		s.log.Warn(msg, args...)
	}
}
