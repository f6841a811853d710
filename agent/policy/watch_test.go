package policy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"
)

// reloadBudget is how soon a change must be in force.
const reloadBudget = 2 * time.Second

// stdioPolicy is a valid policy whose stdio client has the given role; pad changes its size.
func stdioPolicy(role string, pad int) string {
	return fmt.Sprintf("clients:\n  stdio: {role: %s}\nroles:\n  admin: [{tools: [\"*\"]}]\n  viewer: [{tools: [get_status]}]\n  operator: [{tools: [run_command]}]\n%s", role, strings.Repeat("#", pad))
}

type reloadEvent struct {
	p   *Policy
	err error
}

type harness struct {
	t      *testing.T
	dir    string
	path   string
	w      *Watcher
	events chan reloadEvent
	cancel context.CancelFunc
	done   chan error
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newHarness writes the first policy at path (under a temp dir unless set) and makes a
// Watcher for it, not yet running.
func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), events: make(chan reloadEvent, 100)}
	h.path = filepath.Join(h.dir, "policy.yaml")
	writeFile(t, h.path, stdioPolicy("admin", 0))
	h.newWatcher(opts...)
	return h
}

func (h *harness) newWatcher(opts ...Option) {
	h.t.Helper()
	w, err := NewWatcher(h.path, nil, func(p *Policy, err error) {
		select {
		case h.events <- reloadEvent{p, err}:
		default:
			h.t.Error("reload events overflow")
		}
	}, opts...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.w = w
}

// start runs the watcher; the test's cleanup stops it and checks nothing is left running.
func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.w.Run(ctx) }()
	h.t.Cleanup(h.stop)
	// Give Run a moment to set its watch up before the test changes the file.
	time.Sleep(50 * time.Millisecond)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
	goleak.VerifyNone(h.t)
}

// waitRole waits until the current policy's stdio role is role, and says how long it took.
func (h *harness) waitRole(role string, since time.Time) {
	h.t.Helper()
	for time.Since(since) < reloadBudget {
		if h.w.Current().StdioRole() == role {
			h.t.Logf("in force after %v", time.Since(since).Round(time.Millisecond))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("stdio role still %q %v after the change, want %q", h.w.Current().StdioRole(), reloadBudget, role)
}

// nextEvent waits for one onReload call.
func (h *harness) nextEvent() reloadEvent {
	h.t.Helper()
	select {
	case ev := <-h.events:
		return ev
	case <-time.After(reloadBudget):
		h.t.Fatal("no onReload call")
	}
	return reloadEvent{}
}

// waitEvent waits for an onReload call matching ok, skipping others (a write seen halfway).
func (h *harness) waitEvent(ok func(reloadEvent) bool) reloadEvent {
	h.t.Helper()
	deadline := time.After(reloadBudget)
	for {
		select {
		case ev := <-h.events:
			if ok(ev) {
				return ev
			}
		case <-deadline:
			h.t.Fatal("no matching onReload call")
		}
	}
}

func requireInotify(t *testing.T) {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Skipf("inotify unavailable: %v", err)
	}
	w.Close()
}

func TestWatcherStart(t *testing.T) {
	h := newHarness(t)
	if h.w.Current().StdioRole() != "admin" || h.w.Path() != h.path {
		t.Fatal(h.w.Current().StdioRole(), h.w.Path())
	}
	if _, err := NewWatcher(filepath.Join(h.dir, "missing.yaml"), nil, nil); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(h.dir, "bad.yaml")
	writeFile(t, bad, "roles: {r: [{tools: [a], shell: true, commands: [x]}]}\n")
	if _, err := NewWatcher(bad, nil, nil); err == nil || !strings.Contains(err.Error(), bad+": line 1: role r, rule 1: shell: true together with commands") {
		t.Errorf("broken file: %v", err)
	}
	if _, err := NewWatcher(h.path, nil, nil, WithKnownTools("run_command")); err == nil || !strings.Contains(err.Error(), `there is no tool "get_status"`) {
		t.Errorf("options at start: %v", err)
	}
	select {
	case ev := <-h.events:
		t.Errorf("onReload called for the first load: %+v", ev)
	default:
	}
}

func TestWatcherInPlaceWrite(t *testing.T) {
	h := newHarness(t)
	h.start()
	t0 := time.Now()
	writeFile(t, h.path, stdioPolicy("viewer", 3))
	h.waitRole("viewer", t0)
	ev := h.waitEvent(func(ev reloadEvent) bool { return ev.err == nil })
	if ev.p == nil || ev.p.StdioRole() != "viewer" {
		t.Fatalf("onReload(%v, %v)", ev.p, ev.err)
	}
	// Same size, new content: still seen.
	t0 = time.Now()
	writeFile(t, h.path, strings.Replace(stdioPolicy("viewer", 3), "viewer}", "admin} ", 1))
	h.waitRole("admin", t0)
}

// An editor's (or an atomic writer's) rename of a new file over the old one, seen by inotify
// alone: the poll is slowed down to an hour.
func TestWatcherRenameIntoPlace(t *testing.T) {
	requireInotify(t)
	h := newHarness(t)
	h.w.poll = time.Hour
	h.start()
	for i, role := range []string{"viewer", "operator", "admin"} {
		tmp := filepath.Join(h.dir, fmt.Sprintf(".policy.yaml.%d.tmp", i))
		writeFile(t, tmp, stdioPolicy(role, 0)) // same size each time
		t0 := time.Now()
		if err := os.Rename(tmp, h.path); err != nil {
			t.Fatal(err)
		}
		h.waitRole(role, t0)
	}
}

// A Kubernetes ConfigMap volume: policy.yaml → ..data/policy.yaml, ..data → ..<timestamp>;
// an update swaps the ..data symlink and never touches policy.yaml itself.
func TestWatcherSymlinkSwap(t *testing.T) {
	requireInotify(t)
	dir := t.TempDir()
	version := func(name, role string) {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "policy.yaml"), stdioPolicy(role, 0))
	}
	version("..2026_01_01_a", "admin")
	if err := os.Symlink("..2026_01_01_a", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/policy.yaml", filepath.Join(dir, "policy.yaml")); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: dir, path: filepath.Join(dir, "policy.yaml"), events: make(chan reloadEvent, 100)}
	h.newWatcher()
	h.w.poll = time.Hour
	h.start()
	for i, role := range []string{"viewer", "operator"} {
		name := fmt.Sprintf("..2026_01_01_%c", 'b'+i)
		version(name, role)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		h.waitRole(role, t0)
	}
}

// Without inotify the stat check alone finds a change within the budget.
func TestWatcherPollOnly(t *testing.T) {
	h := newHarness(t)
	h.w.noNotify = true
	h.start()
	t0 := time.Now()
	writeFile(t, h.path, stdioPolicy("viewer", 7))
	h.waitRole("viewer", t0)
	tmp := filepath.Join(h.dir, "new")
	writeFile(t, tmp, stdioPolicy("admin", 7)) // same size: the inode tells
	t0 = time.Now()
	if err := os.Rename(tmp, h.path); err != nil {
		t.Fatal(err)
	}
	h.waitRole("admin", t0)
}

func TestWatcherBrokenKeepsLastGood(t *testing.T) {
	h := newHarness(t)
	h.start()
	before := h.w.Current()

	writeFile(t, h.path, stdioPolicy("admin", 0)+"roles_typo: 1\n")
	// A read that caught the write halfway may report first; the typo's report must come.
	ev := h.waitEvent(func(ev reloadEvent) bool {
		return ev.p != nil || ev.err != nil && strings.Contains(ev.err.Error(), "roles_typo")
	})
	if ev.p != nil || !strings.Contains(ev.err.Error(), h.path+`: line 7: unknown key "roles_typo"`) {
		t.Fatalf("onReload(%v, %v)", ev.p, ev.err)
	}
	if h.w.Current() != before {
		t.Fatal("a broken file replaced the policy")
	}
	if d := h.w.Current().Decide(h.w.Current().StdioRole(), Request{Tool: "upload_file"}); !d.Allowed {
		t.Fatalf("last good policy not in force: %+v", d)
	}

	t0 := time.Now()
	writeFile(t, h.path, stdioPolicy("viewer", 0))
	h.waitRole("viewer", t0)
	if ev := h.waitEvent(func(ev reloadEvent) bool { return ev.err == nil }); ev.p != h.w.Current() {
		t.Error("onReload's policy is not Current")
	}
}

// Without onReload the Watcher logs each outcome itself.
func TestWatcherLogsWithoutCallback(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, stdioPolicy("admin", 0))
	var logs syncBuffer
	w, err := NewWatcher(path, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "roles: [\n")
	if err := w.Reload(); err == nil || !strings.Contains(logs.String(), "reload failed, keeping the last good policy") {
		t.Errorf("Reload = %v, log: %s", err, logs.String())
	}
	writeFile(t, path, stdioPolicy("viewer", 0))
	if err := w.Reload(); err != nil || !strings.Contains(logs.String(), "policy reloaded") || w.Current().StdioRole() != "viewer" {
		t.Errorf("Reload = %v, log: %s", err, logs.String())
	}
}

// Deleting the file keeps the last good policy (it does not fall back to AllowAll).
func TestWatcherDeletedKeepsLastGood(t *testing.T) {
	h := newHarness(t)
	h.start()
	writeFile(t, h.path, stdioPolicy("viewer", 1))
	h.waitRole("viewer", time.Now())
	h.waitEvent(func(ev reloadEvent) bool { return ev.err == nil })
	before := h.w.Current()
	if err := os.Remove(h.path); err != nil {
		t.Fatal(err)
	}
	ev := h.nextEvent()
	if ev.err == nil || !strings.Contains(ev.err.Error(), "no such file") {
		t.Fatalf("onReload(%v, %v)", ev.p, ev.err)
	}
	if h.w.Current() != before || h.w.Current().IsAllowAll() {
		t.Fatal("deleting the file changed the policy")
	}
	time.Sleep(1500 * time.Millisecond) // polls see the same missing file: no repeat
	select {
	case ev := <-h.events:
		t.Errorf("repeated onReload(%v, %v)", ev.p, ev.err)
	default:
	}
	t0 := time.Now()
	writeFile(t, h.path, stdioPolicy("operator", 0))
	h.waitRole("operator", t0)
}

// Reload (no Run) reports once per new content, and the options apply to reloads.
func TestWatcherReloadDirect(t *testing.T) {
	h := newHarness(t, WithKnownTools("get_status", "run_command"))
	if err := h.w.Reload(); err != nil { // same bytes as the first load
		t.Fatal(err)
	}
	writeFile(t, h.path, strings.Replace(stdioPolicy("viewer", 0), "run_command", "run_comand", 1))
	if err := h.w.Reload(); err == nil || !strings.Contains(err.Error(), `there is no tool "run_comand"`) {
		t.Fatalf("Reload = %v", err)
	}
	if err := h.w.Reload(); err == nil {
		t.Fatal("second Reload of the broken file succeeded")
	}
	writeFile(t, h.path, stdioPolicy("viewer", 0))
	if err := h.w.Reload(); err != nil || h.w.Current().StdioRole() != "viewer" {
		t.Fatal(err, h.w.Current().StdioRole())
	}
	if err := h.w.Reload(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(h.events) > 0 {
		ev := <-h.events
		got = append(got, fmt.Sprint(ev.p != nil, ev.err != nil))
	}
	if strings.Join(got, " ") != "false true true false" {
		t.Errorf("onReload calls (policy?, error?) = %q, want one error then one policy", got)
	}
}

// A directory whose other files never stop changing does not hold the reload back.
func TestWatcherBusyDirectory(t *testing.T) {
	requireInotify(t)
	h := newHarness(t)
	h.w.poll = time.Hour
	h.start()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		noise := filepath.Join(h.dir, "noise.log")
		for i := 0; ctx.Err() == nil; i++ {
			_ = os.WriteFile(noise, []byte(strconv.Itoa(i)), 0o600)
			time.Sleep(5 * time.Millisecond)
		}
	})
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	writeFile(t, h.path, stdioPolicy("viewer", 0))
	h.waitRole("viewer", t0)
}

func TestWatcherRunTwice(t *testing.T) {
	h := newHarness(t)
	h.start()
	if err := h.w.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run = %v", err)
	}
	h.stop()
	// After it returned it may run again.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Readers see a whole policy at every moment while it is swapped underneath them.
func TestWatcherConcurrentReaders(t *testing.T) {
	h := newHarness(t)
	h.start()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				p := h.w.Current()
				role := p.StdioRole()
				if role != "admin" && role != "viewer" {
					t.Errorf("role %q", role)
					return
				}
				d := p.Decide(role, Request{Tool: "get_status"})
				if !d.Allowed {
					t.Errorf("%+v", d)
					return
				}
			}
		})
	}
	for i := range 20 {
		role := "admin"
		if i%2 == 1 {
			role = "viewer"
		}
		tmp := filepath.Join(h.dir, "tmp")
		writeFile(t, tmp, stdioPolicy(role, i))
		if err := os.Rename(tmp, h.path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	writeFile(t, h.path, stdioPolicy("viewer", 100))
	h.waitRole("viewer", time.Now())
	cancel()
	wg.Wait()
}

// syncBuffer is a bytes.Buffer safe for the watcher's goroutine and the test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
