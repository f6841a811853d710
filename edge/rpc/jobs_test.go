package rpc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// startJob starts a job and returns its status.
func (h *harness) startJob(p protocol.JobStartParams) (protocol.JobStatus, outcome) {
	h.t.Helper()
	if p.Exec.TimeoutMs == 0 {
		p.Exec.TimeoutMs = 30000
	}
	if p.Exec.MaxOutputBytes == 0 {
		p.Exec.MaxOutputBytes = 1 << 20
	}
	var st protocol.JobStatus
	o := h.open(protocol.MethodJobStart, p).wait(&st)
	return st, o
}

func (h *harness) getJob(id string, since, max int64) protocol.JobStatus {
	h.t.Helper()
	var st protocol.JobStatus
	if o := h.open(protocol.MethodJobGet, protocol.JobGetParams{ID: id, Since: since, MaxBytes: max}).wait(&st); o.err != nil {
		h.t.Fatalf("job_get %s: %v", id, o.err)
	}
	return st
}

// waitJob polls job_get until the job is no longer running (bounded).
func (h *harness) waitJob(id string, timeout time.Duration) protocol.JobStatus {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := h.getJob(id, 0, protocol.MaxJobRead)
		if st.Status != protocol.JobRunning {
			return st
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("job %s still running after %v: %+v", id, timeout, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestJobLifecycle(t *testing.T) {
	tests := []struct {
		name       string
		exec       protocol.ExecParams
		stdin      string
		outputMax  int64
		wantStatus string
		wantExit   int
		wantSignal string
		wantOutput string
		wantTrunc  bool
	}{
		{"exit code and interleaved output", protocol.ExecParams{Command: "echo a; sleep 0.2; echo b >&2; echo c; exit 3"}, "", 0,
			protocol.JobExited, 3, "", "a\nb\nc\n", false},
		{"argv and stdin", protocol.ExecParams{Argv: []string{"cat"}}, "from stdin", 0,
			protocol.JobExited, 0, "", "from stdin", false},
		{"timeout kills the group", protocol.ExecParams{Command: "echo started; sleep 30", TimeoutMs: 300}, "", 0,
			protocol.JobTimedOut, -1, "SIGKILL", "started\n", false},
		{"journal is bounded", protocol.ExecParams{Command: "printf 0123456789abcdef"}, "", 10,
			protocol.JobExited, 0, "", "0123456789", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{AllowShell: true, JobOutputMax: tc.outputMax})
			st, o := h.startJob(protocol.JobStartParams{Exec: tc.exec, StdinData: tc.stdin})
			if o.err != nil {
				t.Fatalf("job_start: %v", o.err)
			}
			if !protocol.ValidJobID(st.ID) || st.StartedAt == "" {
				t.Fatalf("job_start returned %+v", st)
			}
			st = h.waitJob(st.ID, 20*time.Second)
			if st.Status != tc.wantStatus || st.ExitCode == nil || *st.ExitCode != tc.wantExit || st.Signal != tc.wantSignal {
				t.Errorf("status %s exit %v signal %q, want %s %d %q", st.Status, st.ExitCode, st.Signal, tc.wantStatus, tc.wantExit, tc.wantSignal)
			}
			if string(st.Output) != tc.wantOutput || st.Truncated != tc.wantTrunc || st.NextSince != int64(len(tc.wantOutput)) {
				t.Errorf("output %q truncated %v next %d, want %q %v", st.Output, st.Truncated, st.NextSince, tc.wantOutput, tc.wantTrunc)
			}
			if st.FinishedAt == "" {
				t.Error("finished_at is empty")
			}
			dir := filepath.Join(h.cfg.StateDir, jobsDirName, st.ID)
			for _, gone := range []string{jobSpecFile, jobStdinFile} {
				if exists(filepath.Join(dir, gone)) {
					t.Errorf("%s still in the journal after the job started", gone)
				}
			}
		})
	}
}

// TestJobOutlivesServer: the edge process's server goes away mid-job (as when the edge is
// killed) and a new one on the same state directory reads the finished job.
func TestJobOutlivesServer(t *testing.T) {
	state := t.TempDir()
	h1 := newHarness(t, Config{AllowShell: true, StateDir: state})
	st, o := h1.startJob(protocol.JobStartParams{Exec: protocol.ExecParams{Command: "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done; exit 5"}})
	if o.err != nil {
		t.Fatal(o.err)
	}
	h1.client.Close()
	h2 := newHarness(t, Config{AllowShell: true, StateDir: state})
	got := h2.waitJob(st.ID, 20*time.Second)
	if got.Status != protocol.JobExited || *got.ExitCode != 5 || string(got.Output) != "line1\nline2\nline3\nline4\nline5\n" {
		t.Fatalf("after a new server: %+v (output %q)", got, got.Output)
	}
	// Paging: since and max_bytes.
	p := h2.getJob(st.ID, 6, 6)
	if string(p.Output) != "line2\n" || p.NextSince != 12 || p.OutputSize != 30 {
		t.Errorf("page from 6: %q next %d size %d", p.Output, p.NextSince, p.OutputSize)
	}
	var list protocol.JobList
	if o := h2.open(protocol.MethodJobList, struct{}{}).wait(&list); o.err != nil || len(list.Jobs) != 1 || list.Jobs[0].ID != st.ID {
		t.Fatalf("job_list: %+v %v", list, o.err)
	}
}

func TestJobCancelAndLost(t *testing.T) {
	h := newHarness(t, Config{AllowShell: true})
	st, o := h.startJob(protocol.JobStartParams{Exec: protocol.ExecParams{Command: "sleep 60 & sleep 60; wait"}})
	if o.err != nil {
		t.Fatal(o.err)
	}
	dir := filepath.Join(h.cfg.StateDir, jobsDirName, st.ID)
	pgid := readPid(t, dir).Pgid
	var cancelled protocol.JobStatus
	if o := h.open(protocol.MethodJobCancel, protocol.JobRef{ID: st.ID}).wait(&cancelled); o.err != nil {
		t.Fatal(o.err)
	}
	if cancelled.Status != protocol.JobKilled || cancelled.Signal != "SIGTERM" {
		t.Errorf("after cancel: %+v, want killed by SIGTERM", cancelled)
	}
	// Killed processes are reaped by their parent or init: allow a moment for that.
	gone := false
	for range 100 {
		if gone = syscall.Kill(-pgid, 0) != nil; gone {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !gone {
		t.Errorf("process group %d still exists after cancel", pgid)
	}

	// A supervisor that dies without recording an end makes the job "lost".
	st, o = h.startJob(protocol.JobStartParams{Exec: protocol.ExecParams{Argv: []string{"sleep", "60"}}})
	if o.err != nil {
		t.Fatal(o.err)
	}
	dir = filepath.Join(h.cfg.StateDir, jobsDirName, st.ID)
	child := readPid(t, dir).Pgid
	stat, _ := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat")
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	super, _ := strconv.Atoi(fields[1])
	if super <= 1 {
		t.Fatalf("no supervisor parent for %d: %q", child, stat)
	}
	syscall.Kill(super, syscall.SIGKILL)
	syscall.Kill(-child, syscall.SIGKILL)
	for range 100 {
		if !supervisorAlive(dir) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := h.getJob(st.ID, 0, 0); got.Status != protocol.JobLost || got.ExitCode != nil {
		t.Errorf("supervisor killed: %+v, want lost", got)
	}
}

func TestJobErrors(t *testing.T) {
	h := newHarness(t, Config{AllowShell: false, AllowRunAs: []string{"nobody"}})
	for _, tc := range []struct {
		name string
		p    protocol.JobStartParams
		code string
	}{
		{"shell refused by policy", protocol.JobStartParams{Exec: protocol.ExecParams{Command: "true"}}, protocol.CodePolicy},
		{"missing executable", protocol.JobStartParams{Exec: protocol.ExecParams{Argv: []string{"no-such-program-xyz"}}}, protocol.CodeNotFound},
		{"run_as not allowed", protocol.JobStartParams{Exec: protocol.ExecParams{Argv: []string{"true"}, RunAs: "root"}}, protocol.CodePolicy},
		{"bad cwd", protocol.JobStartParams{Exec: protocol.ExecParams{Argv: []string{"true"}, Cwd: "/no/such/dir"}}, protocol.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, o := h.startJob(tc.p); o.code() != tc.code {
				t.Errorf("code %q (%v), want %s", o.code(), o.err, tc.code)
			}
		})
	}
	var st protocol.JobStatus
	if o := h.open(protocol.MethodJobGet, protocol.JobGetParams{ID: "0123456789abcdef"}).wait(&st); o.code() != protocol.CodeNotFound {
		t.Errorf("unknown job: %v", o.err)
	}
	if o := h.open(protocol.MethodJobGet, protocol.JobGetParams{ID: "../../etc"}).wait(&st); o.code() != protocol.CodeBadRequest {
		t.Errorf("bad job id: %v", o.err)
	}
	ents, _ := os.ReadDir(filepath.Join(h.cfg.StateDir, jobsDirName))
	if len(ents) != 0 {
		t.Errorf("refused jobs left %d journals", len(ents))
	}
}

func TestJobRetention(t *testing.T) {
	h := newHarness(t, Config{AllowShell: true})
	st, o := h.startJob(protocol.JobStartParams{Exec: protocol.ExecParams{Argv: []string{"true"}}})
	if o.err != nil {
		t.Fatal(o.err)
	}
	h.waitJob(st.ID, 10*time.Second)
	dir := filepath.Join(h.cfg.StateDir, jobsDirName, st.ID)
	// Age the record beyond the default retention of 24 h.
	ex, _ := readExit(dir)
	ex.FinishedAt = time.Now().Add(-25 * time.Hour).UTC().Format(time.RFC3339Nano)
	if err := writeJSONFile(filepath.Join(dir, jobExitFile), ex); err != nil {
		t.Fatal(err)
	}
	var list protocol.JobList
	if o := h.open(protocol.MethodJobList, struct{}{}).wait(&list); o.err != nil || len(list.Jobs) != 0 || list.Jobs == nil {
		t.Errorf("expired job still listed: %+v %v", list, o.err)
	}
	if exists(dir) {
		t.Error("expired journal not removed")
	}
}

func TestRunAs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("run_as needs root")
	}
	h := newHarness(t, Config{AllowShell: true, AllowRunAs: []string{"nobody"}})
	var res protocol.ExecResult
	c := h.open(protocol.MethodExec, protocol.ExecParams{Argv: []string{"id", "-un"}, RunAs: "nobody", TimeoutMs: 10000, MaxOutputBytes: 1000})
	o := c.wait(&res)
	if o.err != nil || strings.TrimSpace(string(o.stdout)) != "nobody" {
		t.Fatalf("exec as nobody: %q %v", o.stdout, o.err)
	}
	st, o := h.startJob(protocol.JobStartParams{Exec: protocol.ExecParams{Command: "id -un; echo $HOME", RunAs: "nobody"}})
	if o.err != nil {
		t.Fatal(o.err)
	}
	st = h.waitJob(st.ID, 10*time.Second)
	if !strings.HasPrefix(string(st.Output), "nobody\n") {
		t.Errorf("job as nobody printed %q", st.Output)
	}
}

// readPid reads a job's pid file as the edge does.
func readPid(t *testing.T, dir string) jobPid {
	t.Helper()
	var rec jobPid
	if err := readJSONFile(filepath.Join(dir, jobPidFile), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestJobCancelGrace: cancel sends SIGTERM to the job's process group and SIGKILL only to
// what still runs after the grace; the status is killed either way, with the signal.
func TestJobCancelGrace(t *testing.T) {
	defer func(g time.Duration) { jobCancelGrace = g }(jobCancelGrace)
	jobCancelGrace = time.Second
	for _, tc := range []struct {
		name       string
		command    string
		wantSignal string
		wantExit   int
		wantOutput string        // how the output ends
		min, max   time.Duration // how long cancel takes
	}{
		{"ends on SIGTERM", "trap 'echo cleaned up; exit 0' TERM; echo ready; while :; do sleep 0.05; done",
			"SIGTERM", 0, "cleaned up\n", 0, 900 * time.Millisecond},
		{"ignores SIGTERM", "trap '' TERM; echo ready; while :; do sleep 0.05; done",
			"SIGKILL", -1, "ready\n", time.Second, 5 * time.Second},
		{"leader ends, a child ignores SIGTERM", "(trap '' TERM; exec sleep 30) & echo ready; wait",
			"SIGTERM", -1, "ready\n", 900 * time.Millisecond, 5 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{AllowShell: true})
			st, o := h.startJob(protocol.JobStartParams{Exec: protocol.ExecParams{Command: tc.command}})
			if o.err != nil {
				t.Fatal(o.err)
			}
			for deadline := time.Now().Add(5 * time.Second); !strings.Contains(string(h.getJob(st.ID, 0, 100).Output), "ready"); {
				if time.Now().After(deadline) {
					t.Fatal("the job never got ready")
				}
				time.Sleep(20 * time.Millisecond)
			}
			pgid := readPid(t, filepath.Join(h.cfg.StateDir, jobsDirName, st.ID)).Pgid
			start := time.Now()
			var got protocol.JobStatus
			if o := h.open(protocol.MethodJobCancel, protocol.JobRef{ID: st.ID}).wait(&got); o.err != nil {
				t.Fatal(o.err)
			}
			took := time.Since(start)
			if got.Status != protocol.JobKilled || got.Signal != tc.wantSignal || got.ExitCode == nil || *got.ExitCode != tc.wantExit {
				t.Errorf("after cancel: status %s signal %q exit %v, want killed, %s, %d", got.Status, got.Signal, got.ExitCode, tc.wantSignal, tc.wantExit)
			}
			if out := string(h.getJob(st.ID, 0, 100).Output); !strings.HasSuffix(out, tc.wantOutput) {
				t.Errorf("output %q, want %q", out, tc.wantOutput)
			}
			if took < tc.min || took > tc.max {
				t.Errorf("cancel took %s, want within [%s, %s]", took, tc.min, tc.max)
			}
			gone := false
			for range 100 {
				if gone = syscall.Kill(-pgid, 0) != nil; gone {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if !gone {
				syscall.Kill(-pgid, syscall.SIGKILL)
				t.Errorf("process group %d still exists after cancel", pgid)
			}
		})
	}
}
