package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer collects log output from many goroutines.
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

// openT opens a Store on stateDir with test options and closes it at the end of the test.
func openT(t *testing.T, stateDir string, o options) (*Store, *syncBuffer) {
	t.Helper()
	var logs syncBuffer
	s, err := open(stateDir, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &logs
}

func action(timeout time.Duration) Action {
	a := Action{Actor: "http:ops", Role: "admin", Tool: "upload_file", Edge: "cam1", Summary: "path: /etc/x", RequestID: "r1"}
	if timeout > 0 {
		a.Expires = time.Now().Add(timeout)
	}
	return a
}

type waitResult struct {
	d   Decision
	err error
	at  time.Time
}

// waitAsync runs Wait in a goroutine; the result arrives on the channel.
func waitAsync(ctx context.Context, s *Store, id string) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		d, err := s.Wait(ctx, id)
		ch <- waitResult{d, err, time.Now()}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan waitResult, within time.Duration) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("Wait did not return within %v", within)
		return waitResult{}
	}
}

func TestWaitOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		timeout     time.Duration
		gateway     options // the Store that submits and waits
		other       bool    // decide from a second Store on the same directory (the CLI's process)
		decide      bool    // false: nobody decides
		approve     bool
		wantOK      bool
		wantBy      string
		wantReason  string
		noticeWithi time.Duration // from Decide to Wait returning
	}{
		{name: "approved in process", timeout: time.Minute, decide: true, approve: true, wantOK: true, wantBy: "elicitation:stdio", noticeWithi: 200 * time.Millisecond},
		{name: "denied in process", timeout: time.Minute, decide: true, wantBy: "elicitation:stdio", wantReason: "not now", noticeWithi: 200 * time.Millisecond},
		{name: "approved by another process", timeout: time.Minute, other: true, decide: true, approve: true, wantOK: true, wantBy: "cli:root", noticeWithi: time.Second},
		{name: "denied by another process", timeout: time.Minute, other: true, decide: true, wantBy: "cli:root", wantReason: "not now", noticeWithi: time.Second},
		{name: "another process, no inotify: the poll notices", timeout: time.Minute, gateway: options{noWatch: true}, other: true, decide: true, approve: true, wantOK: true, wantBy: "cli:root", noticeWithi: time.Second},
		{name: "silence is no", timeout: time.Second, wantReason: "no decision within 1 s (silence is no)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			gw, _ := openT(t, dir, tc.gateway)
			decider, approver := gw, "elicitation:stdio"
			if tc.other {
				decider, _ = openT(t, dir, options{})
				approver = "cli:root"
			}
			a, err := gw.Submit(action(tc.timeout))
			if err != nil {
				t.Fatal(err)
			}
			if !ValidID(a.ID) || a.Created.IsZero() {
				t.Fatalf("Submit filled %+v", a)
			}
			ch := waitAsync(t.Context(), gw, a.ID)
			var decidedAt time.Time
			if tc.decide {
				time.Sleep(100 * time.Millisecond) // Wait is parked by now
				reason := ""
				if !tc.approve {
					reason = "not now"
				}
				decidedAt = time.Now()
				got, err := decider.Decide(a.ID, tc.approve, approver, reason)
				if err != nil || got.ID != a.ID || got.Tool != "upload_file" {
					t.Fatalf("Decide = %+v, %v", got, err)
				}
			}
			r := recv(t, ch, tc.timeout+3*time.Second)
			if r.err != nil || r.d.Approved != tc.wantOK || r.d.Approver != tc.wantBy || r.d.Reason != tc.wantReason || r.d.At.IsZero() {
				t.Fatalf("Wait = %+v, %v; want approved %v by %q reason %q", r.d, r.err, tc.wantOK, tc.wantBy, tc.wantReason)
			}
			if tc.decide {
				if lag := r.at.Sub(decidedAt); lag > tc.noticeWithi {
					t.Errorf("the decision was noticed after %v, want within %v", lag, tc.noticeWithi)
				}
			}
			// The pending file is gone, the decision stays as a tombstone, a late decision is refused.
			if exists(gw.pendingPath(a.ID)) || !exists(gw.decisionPath(a.ID)) {
				t.Errorf("after Wait: pending file %v, decision file %v", exists(gw.pendingPath(a.ID)), exists(gw.decisionPath(a.ID)))
			}
			if _, err := decider.Decide(a.ID, true, "cli:late", ""); !errors.Is(err, ErrNotPending) ||
				!strings.Contains(err.Error(), "no pending action "+a.ID+": it was decided, expired, or never existed") {
				t.Errorf("late Decide: %v", err)
			}
			if l, err := decider.List(); err != nil || len(l) != 0 {
				t.Errorf("List after the end = %v, %v", l, err)
			}
		})
	}
}

func TestWaitCancelled(t *testing.T) {
	dir := t.TempDir()
	gw, _ := openT(t, dir, options{})
	cli, _ := openT(t, dir, options{})
	a, err := gw.Submit(action(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	ch := waitAsync(ctx, gw, a.ID)
	time.Sleep(50 * time.Millisecond)
	cancel()
	r := recv(t, ch, time.Second)
	if !errors.Is(r.err, context.Canceled) || r.d.Approved {
		t.Fatalf("Wait after cancel = %+v, %v", r.d, r.err)
	}
	if _, err := cli.Decide(a.ID, true, "cli:root", ""); !errors.Is(err, ErrNotPending) {
		t.Errorf("Decide after the call was cancelled: %v", err)
	}
	if d, st := cli.readDecision(a.ID); st != decisionValid || d.Approved || !strings.Contains(d.Reason, "cancelled") {
		t.Errorf("tombstone = %+v (%v)", d, st)
	}
	if _, err := gw.Wait(t.Context(), a.ID); !errors.Is(err, ErrNotPending) {
		t.Errorf("second Wait: %v", err)
	}
}

// pick alternates between two Stores.
func pick(a, b *Store, i int) *Store { return []*Store{a, b}[i%2] }

// TestDecideRace: deciders in two processes (Stores) race on one action; exactly one wins
// and the waiting call gets that one's decision.
func TestDecideRace(t *testing.T) {
	dir := t.TempDir()
	gw, _ := openT(t, dir, options{})
	cli, _ := openT(t, dir, options{})
	for round := range 20 {
		a, err := gw.Submit(action(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		ch := waitAsync(t.Context(), gw, a.ID)
		const n = 8
		errs := make([]error, n)
		got := make([]Action, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				s := pick(gw, cli, i)
				<-start
				got[i], errs[i] = s.Decide(a.ID, i%2 == 0, fmt.Sprintf("d%d", i), "")
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: deciders %d and %d both won", round, winner, i)
			case err == nil:
				winner = i
			case errors.Is(err, ErrDecided):
				if got[i].ID != a.ID || !strings.Contains(err.Error(), "by d") {
					t.Errorf("round %d: loser %d got %+v, %v", round, i, got[i], err)
				}
				if _, err := pick(gw, cli, i).Get(a.ID); !errors.Is(err, ErrDecided) && !errors.Is(err, ErrNotPending) {
					t.Errorf("round %d: Get after the decision: %v", round, err)
				}
			case !errors.Is(err, ErrNotPending):
				t.Errorf("round %d: decider %d: %v", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody won: %v", round, errs)
		}
		r := recv(t, ch, 2*time.Second)
		if r.err != nil || r.d.Approver != fmt.Sprintf("d%d", winner) || r.d.Approved != (winner%2 == 0) {
			t.Fatalf("round %d: Wait = %+v, %v; winner %d", round, r.d, r.err, winner)
		}
	}
}

func TestSubmitBounded(t *testing.T) {
	gw, _ := openT(t, t.TempDir(), options{})
	var ids []string
	for range MaxPending {
		a, err := gw.Submit(action(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	if _, err := gw.Submit(action(time.Minute)); !errors.Is(err, ErrTooMany) || !strings.Contains(err.Error(), "too many actions waiting for approval") {
		t.Fatalf("Submit beyond %d: %v", MaxPending, err)
	}
	if l, err := gw.List(); err != nil || len(l) != MaxPending {
		t.Fatalf("List = %d actions, %v", len(l), err)
	}
	if _, err := gw.Decide(ids[0], false, "cli:root", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Wait(t.Context(), ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Submit(action(time.Minute)); err != nil {
		t.Errorf("Submit after one ended: %v", err)
	}
	// Close refuses every action nobody waits for and removes its pending file.
	gw.Close()
	if m, _ := filepath.Glob(filepath.Join(gw.dir, "*"+pendingExt)); len(m) != 0 {
		t.Errorf("after Close, %d pending files remain", len(m))
	}
}

func TestSubmitChecks(t *testing.T) {
	gw, _ := openT(t, t.TempDir(), options{})
	for _, tc := range []struct {
		name    string
		a       Action
		wantErr string
	}{
		{"no tool", Action{Edge: "cam1"}, "needs its tool"},
		{"expired already", Action{Tool: "upload_file", Expires: time.Now().Add(-time.Second)}, "not in the future"},
		{"too far", Action{Tool: "upload_file", Expires: time.Now().Add(MaxTimeout + time.Hour)}, "more than"},
		{"default timeout, one line", Action{Tool: "run_command", Summary: "argv: ls\n\x1b[2J\u202etxt.exe\r\t-l", Edge: "cam\x001"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := gw.Submit(tc.a)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Submit = %+v, %v; want error %q", a, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Expires.Sub(a.Created); got != DefaultTimeout {
				t.Errorf("default timeout %v", got)
			}
			if a.Summary != "argv: ls  [2J txt.exe  -l" || a.Edge != "cam 1" {
				t.Errorf("summary %q, edge %q: control characters kept", a.Summary, a.Edge)
			}
		})
	}
}

func TestDecideChecks(t *testing.T) {
	dir := t.TempDir()
	gw, _ := openT(t, dir, options{})
	cli, _ := openT(t, dir, options{})
	a, err := gw.Submit(action(300 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, approver string
		want         string
	}{
		{"../../etc/pa", "cli:root", "is not an action id"},
		{"ABCDEF", "cli:root", "is not an action id"},
		{"0123456789ab", "cli:root", "no pending action 0123456789ab"},
		{a.ID, "  ", "needs its approver"},
	} {
		if _, err := cli.Decide(tc.id, true, tc.approver, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decide(%q, %q) = %v, want %q", tc.id, tc.approver, err, tc.want)
		}
	}
	if got, err := cli.Get(a.ID); err != nil || got.ID != a.ID || got.Tool != "upload_file" {
		t.Errorf("Get while it waits = %+v, %v", got, err)
	}
	if _, err := cli.Get("0123456789ab"); !errors.Is(err, ErrNotPending) {
		t.Errorf("Get of an unknown id: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	if got, err := cli.Decide(strings.ToUpper(a.ID), true, "cli:root", ""); !errors.Is(err, ErrExpired) || got.ID != a.ID {
		t.Errorf("Decide after expiry = %+v, %v", got, err)
	}
	if _, err := cli.Get(a.ID); !errors.Is(err, ErrExpired) {
		t.Errorf("Get after expiry: %v", err)
	}
	if l, _ := cli.List(); len(l) != 0 {
		t.Errorf("an expired action is listed: %+v", l)
	}
	d, err := gw.Wait(t.Context(), a.ID)
	if err != nil || d.Approved || !strings.Contains(d.Reason, "silence is no") {
		t.Errorf("Wait on an expired action = %+v, %v", d, err)
	}
}

// TestUntrustedFiles: files the gateway did not write, or that are broken, are ignored with
// a log line; pending files whose gateway is gone are removed.
func TestUntrustedFiles(t *testing.T) {
	state := t.TempDir()
	dir := filepath.Join(state, DirName)
	if err := os.Mkdir(dir, 0o755); err != nil { // too open: Open tightens it
		t.Fatal(err)
	}
	now := time.Now().UTC()
	valid := func(id string) []byte {
		b, _ := json.Marshal(Action{ID: id, Tool: "run_command", Created: now, Expires: now.Add(time.Hour)})
		return b
	}
	outside := filepath.Join(state, "elsewhere.json")
	os.WriteFile(outside, valid("aaaaaaaaaaaa"), 0o600)
	files := map[string][]byte{
		"notes.txt":         []byte("hello"),
		"abcdefabcdef.json": []byte(`{"id":"abcdefabcdef","tool":"run_co`), // half-written
		"0123456789ab.json": valid("ffffffffffff"),                         // names another id
		"cccccccccccc.json": valid("cccccccccccc"),                         // nobody holds it: its gateway is gone
		"dddddddddddd.json": valid("dddddddddddd")[:0],                     // empty
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink(outside, filepath.Join(dir, "aaaaaaaaaaaa.json"))
	if err := syscall.Mkfifo(filepath.Join(dir, "bbbbbbbbbbbb.json"), 0o600); err != nil {
		t.Fatal(err)
	}

	gw, logs := openT(t, state, options{})
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("actions directory mode %v", st.Mode().Perm())
	}
	if exists(filepath.Join(dir, "cccccccccccc.json")) {
		t.Error("a pending file nobody holds was kept")
	}
	a, err := gw.Submit(action(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	cli, cliLogs := openT(t, state, options{})
	l, err := cli.List()
	if err != nil || len(l) != 1 || l[0].ID != a.ID {
		t.Fatalf("List = %+v, %v; want only %s", l, err, a.ID)
	}
	for _, id := range []string{"abcdefabcdef", "0123456789ab", "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc", "dddddddddddd"} {
		if _, err := cli.Decide(id, true, "cli:root", ""); !errors.Is(err, ErrNotPending) {
			t.Errorf("Decide(%s) on an untrusted file: %v", id, err)
		}
	}
	all := logs.String() + cliLogs.String()
	for _, name := range []string{"notes.txt", "abcdefabcdef.json", "0123456789ab.json", "aaaaaaaaaaaa.json", "bbbbbbbbbbbb.json", "dddddddddddd.json"} {
		if !strings.Contains(all, name) {
			t.Errorf("no log line names %s", name)
		}
	}
	if !exists(filepath.Join(dir, "notes.txt")) {
		t.Error("a foreign file was removed")
	}

	// A decision file that is not ours does not approve: the call is refused when it expires,
	// and another decider is told it is taken.
	if err := os.WriteFile(gw.decisionPath(a.ID), []byte(`{"id":"`+a.ID+`","approved":true`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Decide(a.ID, true, "cli:root", ""); !errors.Is(err, ErrDecided) || !strings.Contains(err.Error(), "unreadable") {
		t.Errorf("Decide next to a broken decision file: %v", err)
	}
	d, err := gw.Wait(t.Context(), a.ID)
	if err != nil || d.Approved || !strings.Contains(d.Reason, "unreadable") {
		t.Errorf("Wait with a broken decision file = %+v, %v", d, err)
	}
	if !strings.Contains(logs.String(), a.ID+decisionExt) {
		t.Error("the broken decision file was not logged")
	}
}

func TestSweep(t *testing.T) {
	state := t.TempDir()
	gw, _ := openT(t, state, options{})
	long := time.Now().Add(-2 * time.Hour)
	plant := func(name string, old bool) string {
		p := filepath.Join(gw.dir, name)
		os.WriteFile(p, []byte("{}"), 0o600)
		if old {
			os.Chtimes(p, long, long)
		}
		return p
	}
	oldTomb, newTomb := plant("111111111111.decision", true), plant("222222222222.decision", false)
	oldTmp, newTmp := plant(".333333333333.json.tmp-1", true), plant(".444444444444.json.tmp-2", false)

	// Submitted, never waited for, expired: the sweep refuses it.
	a, err := gw.Submit(action(100 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(gw.pendingPath(a.ID)); st.Mode().Perm() != 0o600 {
		t.Errorf("pending file mode %v", st.Mode().Perm())
	}
	time.Sleep(150 * time.Millisecond)
	gw.sweep(time.Now())
	for p, want := range map[string]bool{oldTomb: false, newTomb: true, oldTmp: false, newTmp: true, gw.pendingPath(a.ID): false, gw.decisionPath(a.ID): true} {
		if exists(p) != want {
			t.Errorf("after the sweep %s exists = %v, want %v", filepath.Base(p), !want, want)
		}
	}
	if d, st := gw.readDecision(a.ID); st != decisionValid || d.Approved || !strings.Contains(d.Reason, "silence is no") {
		t.Errorf("swept action's decision = %+v (%v)", d, st)
	}
	if st, _ := os.Stat(gw.decisionPath(a.ID)); st.Mode().Perm() != 0o600 {
		t.Errorf("decision file mode %v", st.Mode().Perm())
	}
	if _, err := gw.Wait(t.Context(), a.ID); !errors.Is(err, ErrNotPending) {
		t.Errorf("Wait after the sweep: %v", err)
	}
}

func TestCloseEndsWait(t *testing.T) {
	dir := t.TempDir()
	gw, err := open(dir, nil, options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := gw.Submit(action(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	ch := waitAsync(t.Context(), gw, a.ID)
	time.Sleep(50 * time.Millisecond)
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	if r := recv(t, ch, time.Second); r.err == nil || r.d.Approved {
		t.Errorf("Wait across Close = %+v, %v", r.d, r.err)
	}
	if _, err := gw.Submit(action(time.Minute)); err == nil {
		t.Error("Submit after Close worked")
	}
	if err := gw.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{"run_command", map[string]any{"edge": "cam1", "argv": []any{"ls", "-l", "/my dir", "it's"}, "cwd": "/tmp", "env": map[string]any{"B": "secret", "A": "x"}, "stdin": "password"},
			`argv: ls -l '/my dir' 'it'\''s'; cwd: /tmp; env names: A,B; stdin: 8 bytes (not shown)`},
		{"run_command", map[string]any{"command": "rm -rf /tmp/x\nreboot", "timeout_seconds": 60.0}, "command: rm -rf /tmp/x reboot; timeout_seconds: 60"},
		{"upload_file", map[string]any{"path": "/etc/app.conf", "content": "s3cret", "mode": "0600", "overwrite": true, "create_dirs": false}, "path: /etc/app.conf; mode: 0600; overwrite: true; content: 6 bytes (not shown)"},
		{"register_edge_key", map[string]any{"token": "tok-123", "public_key": "ssh-ed25519 AAAA", "name": "cam2", "labels": map[string]string{"env": "lab"}}, "name: cam2; labels: env=lab"},
		{"get_status", map[string]any{"token": "x"}, "get_status"},
	} {
		if got := Summarize(tc.tool, tc.args); got != tc.want {
			t.Errorf("Summarize(%s) =\n  %s\nwant\n  %s", tc.tool, got, tc.want)
		}
		if got := Summarize(tc.tool, tc.args); strings.Contains(got, "secret") || strings.Contains(got, "tok-") || strings.Contains(got, "password") {
			t.Errorf("Summarize(%s) shows a secret: %s", tc.tool, got)
		}
	}
}

// TestAnotherProcess: the admin CLI is another process; it sees the waiting action as live
// (the flock crosses processes) and its decision reaches the waiting call within a second.
func TestAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	gw, _ := openT(t, dir, options{})
	a, err := gw.Submit(action(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	ch := waitAsync(t.Context(), gw, a.ID)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "APPROVAL_HELPER_DIR="+dir, "APPROVAL_HELPER_ID="+a.ID)
	out, err := cmd.CombinedOutput()
	exited := time.Now()
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	r := recv(t, ch, 2*time.Second)
	if r.err != nil || !r.d.Approved || r.d.Approver != "cli:proc" {
		t.Fatalf("Wait = %+v, %v", r.d, r.err)
	}
	if lag := r.at.Sub(exited); lag > time.Second {
		t.Errorf("noticed %v after the process decided", lag)
	}

	// A gateway process that dies with an action waiting: its lock goes with it, so the
	// action is neither listed nor decidable, and the next Open removes it.
	cmd = exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "APPROVAL_HELPER_DIR="+dir, "APPROVAL_HELPER_ID=submit-and-die")
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	dead := strings.TrimSpace(string(out))
	if !ValidID(dead) || !exists(gw.pendingPath(dead)) {
		t.Fatalf("the dying process submitted %q", out)
	}
	if l, err := gw.List(); err != nil || len(l) != 0 {
		t.Errorf("List shows a dead gateway's action: %+v, %v", l, err)
	}
	if _, err := gw.Decide(dead, true, "cli:root", ""); !errors.Is(err, ErrNotPending) {
		t.Errorf("Decide on a dead gateway's action: %v", err)
	}
	openT(t, dir, options{})
	if exists(gw.pendingPath(dead)) {
		t.Error("Open kept a dead gateway's action")
	}
}

// TestHelperProcess is the other process of TestAnotherProcess.
func TestHelperProcess(t *testing.T) {
	dir, id := os.Getenv("APPROVAL_HELPER_DIR"), os.Getenv("APPROVAL_HELPER_ID")
	if dir == "" {
		t.Skip("the other process of TestAnotherProcess")
	}
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id == "submit-and-die" {
		a, err := s.Submit(action(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(a.ID)
		os.Exit(0) // no Close: as if the gateway were killed
	}
	defer s.Close()
	l, err := s.List()
	if err != nil || len(l) != 1 || l[0].ID != id {
		t.Fatalf("List in another process = %+v, %v", l, err)
	}
	if _, err := s.Decide(id, true, "cli:proc", "from another process"); err != nil {
		t.Fatal(err)
	}
}
