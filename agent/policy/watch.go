package policy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/configfile"
)

// Timings of the watcher. The poll is the fallback for when inotify is unavailable or misses
// a change (a symlink elsewhere, a re-mounted directory); with it a change is in force within
// about pollInterval+debounce even without events.
const (
	watchDebounce     = 100 * time.Millisecond
	watchPollInterval = time.Second
)

// Watcher keeps the current policy of a POLICY_FILE, reloading it when the file changes.
// A file that fails to load or parse keeps the last good policy in force (deleting the file
// does not fall back to AllowAll). Current is safe to call from any goroutine at any time.
type Watcher struct {
	path     string
	log      *slog.Logger
	onReload func(p *Policy, err error)
	opts     []Option

	// Timings and inotify use; fixed before Run (tests change them).
	debounce time.Duration
	poll     time.Duration
	noNotify bool

	cur     atomic.Pointer[Policy]
	running atomic.Bool

	mu   sync.Mutex // serializes reloads and guards last
	last attempt
}

// attempt is what the last reload read, so an unchanged file is not reported again.
type attempt struct {
	stamp   fileStamp
	sum     [sha256.Size]byte // of the bytes read; zero when the read failed
	readErr string            // the read error, when it failed
	errMsg  string            // why the attempt kept the last good policy; "" when it loaded
}

// NewWatcher loads the policy at path once and returns a Watcher serving it. An error here
// (unreadable or invalid file) is returned, and the gateway should refuse to start. log may
// be nil. onReload (may be nil) is called after every later reload attempt that read
// something new: onReload(p, nil) when p is now in force, onReload(nil, err) when the file
// is broken and the last good policy stays. It is not called for the first load. It runs on
// Run's goroutine (or Reload's caller), one call at a time, and must not call Reload. With an
// onReload the outcome of a reload is its to log and audit; without one the Watcher logs it.
// log always receives the Watcher's own warnings (no inotify, watcher errors). opts apply to
// every load.
func NewWatcher(path string, log *slog.Logger, onReload func(p *Policy, err error), opts ...Option) (*Watcher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("policy file %s: %w", path, err)
	}
	w := &Watcher{
		path:     abs,
		log:      log,
		onReload: onReload,
		opts:     opts,
		debounce: watchDebounce,
		poll:     watchPollInterval,
	}
	data, stamp, err := readFile(abs)
	if err != nil {
		return nil, err
	}
	p, err := Parse(data, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", abs, err)
	}
	w.cur.Store(p)
	w.last = attempt{stamp: stamp, sum: sha256.Sum256(data)}
	return w, nil
}

// Current returns the policy in force: an atomic load, no lock, never nil.
func (w *Watcher) Current() *Policy { return w.cur.Load() }

// Path returns the absolute path of the watched file.
func (w *Watcher) Path() string { return w.path }

// Reload reads the file now (e.g. on SIGHUP), whatever its stamp says, and returns the
// error that kept the last good policy, or nil when the file's policy is in force.
func (w *Watcher) Reload() error { return w.reload(true) }

// Run watches the file until ctx is done, reloading it within about a second of a change:
// inotify on the file's directory (so an editor's rename into place and a Kubernetes-style
// symlink swap are seen, not only writes), debounced, plus a stat check every second
// comparing size, mtime and inode, for when inotify is unavailable or misses. It returns nil
// once ctx is done, having stopped everything it started; running it twice at once is an
// error.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("policy watcher is already running")
	}
	defer w.running.Store(false)

	configfile.Watch(ctx, configfile.WatchOptions{Path: w.path, What: "policy", Poll: w.poll, Debounce: w.debounce,
		NoNotify: w.noNotify, Log: w.log}, w.stampChanged, func(force bool) { _ = w.reload(force) })
	return nil
}

// stampChanged reports whether the file's size, mtime or inode differ from the last read.
func (w *Watcher) stampChanged() bool {
	st := statFile(w.path)
	w.mu.Lock()
	defer w.mu.Unlock()
	return st != w.last.stamp
}

// reload reads the file when force is set or its stamp changed, and swaps a good policy in.
// An attempt that read the same bytes (or met the same error) as the last one does nothing,
// so neither onReload nor the log repeats itself.
func (w *Watcher) reload(force bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !force && statFile(w.path) == w.last.stamp {
		return w.lastErr()
	}
	data, stamp, err := readFile(w.path)
	var next attempt
	if err != nil {
		next = attempt{stamp: statFile(w.path), readErr: err.Error(), errMsg: err.Error()}
	} else {
		next = attempt{stamp: stamp, sum: sha256.Sum256(data)}
	}
	same := next.sum == w.last.sum && next.readErr == w.last.readErr
	w.last.stamp = next.stamp
	if same {
		return w.lastErr()
	}
	var p *Policy
	if err == nil {
		if p, err = Parse(data, w.opts...); err != nil {
			err = fmt.Errorf("%s: %w", w.path, err)
			next.errMsg = err.Error()
		}
	}
	w.last = next
	if err != nil {
		if w.onReload != nil {
			w.onReload(nil, err)
		} else {
			w.log.Error("policy: reload failed, keeping the last good policy", "file", w.path, "err", err)
		}
		return err
	}
	w.cur.Store(p)
	if w.onReload != nil {
		w.onReload(p, nil)
	} else {
		w.log.Info("policy reloaded", "file", w.path, "roles", len(p.roleOrder), "http_clients", len(p.clients))
	}
	return nil
}

// lastErr is the error of the last attempt, or nil when it succeeded.
func (w *Watcher) lastErr() error {
	if w.last.errMsg == "" {
		return nil
	}
	return errors.New(w.last.errMsg)
}
