package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// detachedFlag marks the second stage of RunJob: the long-lived supervisor.
const detachedFlag = "--detached"

// statusFD is the descriptor on which a starting supervisor reports "ok" or an error line
// to the edge that started it.
const statusFD = 3

// RunJob is the job supervisor, run as its own process (`mcp-ssh-edge job-supervise DIR`)
// so that a job outlives the edge process, the tunnel and the gateway. self is the argv
// prefix that runs RunJob again (the edge binary and its subcommand), args its arguments.
//
// The edge starts RunJob(DIR); that first stage starts the second stage in a new session
// and exits at once, so the edge reaps it immediately and the supervisor is nobody's child.
// The second stage holds the journal's lock for its whole life, moves itself into a systemd
// scope of its own where systemd runs (enterScope), starts the process in its own process
// group with stdout and stderr on one pipe, copies that pipe into the bounded output file,
// enforces the timeout, and finally writes exit.json atomically. It returns the exit status
// for os.Exit.
func RunJob(self []string, args []string) int {
	// Inherited descriptors are not close-on-exec: without this the job's process would
	// hold the status pipe open and the edge would wait for the job instead of its start.
	unix.CloseOnExec(statusFD)
	status := os.NewFile(statusFD, "job-status")
	switch {
	case len(args) == 1:
		return startDetached(self, args[0], status)
	case len(args) == 2 && args[0] == detachedFlag:
		return supervise(args[1], status)
	}
	fmt.Fprintln(os.Stderr, "job-supervise: usage: job-supervise [--detached] DIR (internal to mcp-ssh-edge)")
	return 2
}

// report writes one status line for the edge, if it is still listening.
func report(status *os.File, format string, args ...any) {
	if status != nil {
		fmt.Fprintf(status, format, args...)
	}
}

// startDetached is the first stage: start the supervisor in a new session, then exit.
func startDetached(self []string, dir string, status *os.File) int {
	if status == nil {
		return 2
	}
	defer status.Close()
	exe := self[0]
	if _, err := os.Stat("/proc/self/exe"); err == nil {
		exe = "/proc/self/exe" // the same binary even if a package upgrade replaced the file
	}
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        append(append([]string{self[0]}, self[1:]...), detachedFlag, dir),
		Env:         os.Environ(),
		ExtraFiles:  []*os.File{status},
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		report(status, "error: start job supervisor: %v", err)
		return 1
	}
	_ = cmd.Process.Release()
	return 0
}

// supervise is the second stage; see RunJob.
func supervise(dir string, status *os.File) int {
	fail := func(format string, args ...any) int {
		report(status, "error: "+format, args...)
		return 1
	}
	lock, err := os.OpenFile(filepath.Join(dir, jobLockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fail("job lock: %v", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fail("job lock: another supervisor holds it: %v", err)
	}
	// Before the job starts, so that it and everything it starts are in the scope too.
	unit, err := enterScope(context.Background(), systemHost(), filepath.Base(dir), os.Getpid())
	recordScope(dir, unit, err)
	var spec jobSpec
	specPath := filepath.Join(dir, jobSpecFile)
	if err := readJSONFile(specPath, &spec); err != nil {
		return fail("job spec: %v", err)
	}
	_ = os.Remove(specPath) // it holds env values: not kept once read
	out, err := os.OpenFile(filepath.Join(dir, jobOutputFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fail("job output: %v", err)
	}
	defer out.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return fail("pipe: %v", err)
	}
	defer pr.Close()
	cmd := spec.proc().command()
	cmd.Stdout, cmd.Stderr = pw, pw
	stdinPath := filepath.Join(dir, jobStdinFile)
	if spec.Stdin {
		f, err := os.Open(stdinPath)
		if err != nil {
			return fail("job stdin: %v", err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	err = cmd.Start()
	pw.Close()
	_ = os.Remove(stdinPath)
	if err != nil {
		return fail("start %s: %v", spec.Path, err)
	}
	pgid := cmd.Process.Pid
	// The leader cannot be reaped before cmd.Wait below, so its /proc entry (a zombie at
	// worst) and start time are there to read.
	rec := jobPid{Pgid: pgid}
	if ps, err := readProcStat(pgid); err == nil {
		rec.Start = ps.start
	}
	if err := writeJSONFile(filepath.Join(dir, jobPidFile), rec); err != nil {
		fmt.Fprintf(os.Stderr, "job-supervise: pid file: %v\n", err)
	}
	report(status, "ok")
	if status != nil {
		status.Close()
	}

	var timedOut atomic.Bool
	if spec.TimeoutMs > 0 {
		t := time.AfterFunc(time.Duration(spec.TimeoutMs)*time.Millisecond, func() {
			timedOut.Store(true)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		})
		defer t.Stop()
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		copyJournal(out, pr, spec.MaxOutput, filepath.Join(dir, jobTruncFile))
	}()
	waitErr := cmd.Wait()
	cancel, cancelled := readCancel(dir)
	if cancelled {
		killStragglers(dir, pgid)
		cancel, _ = readCancel(dir)
	}
	// Grandchildren may keep the pipe open: give them a moment, then stop reading.
	select {
	case <-copied:
	case <-time.After(pipeGrace):
		_ = pr.SetReadDeadline(time.Now())
		<-copied
	}
	_ = out.Sync()

	ex := jobExit{Status: protocol.JobExited, FinishedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	ps := cmd.ProcessState
	switch {
	case ps == nil:
		ex.Status, ex.ExitCode, ex.Error = protocol.JobLost, -1, fmt.Sprint(waitErr)
	default:
		if ex.ExitCode, ex.Signal = exitStatus(ps); ex.Signal != "" {
			ex.Status = protocol.JobKilled
		}
	}
	switch {
	case timedOut.Load():
		ex.Status = protocol.JobTimedOut
	case cancelled && ps != nil:
		// Cancelled: killed, whether the signal ended it or it ended by itself on SIGTERM;
		// the signal is the one that ended it, else the one last sent.
		ex.Status = protocol.JobKilled
		if ex.Signal == "" {
			ex.Signal = cancel.Signal
		}
	}
	if err := writeJSONFile(filepath.Join(dir, jobExitFile), ex); err != nil {
		fmt.Fprintf(os.Stderr, "job-supervise: %v\n", err)
		return 1
	}
	return 0
}

// killStragglers is the supervisor's part of a cancel once the job's leader has ended: the
// rest of its process group has until the cancel record's kill_at to end (the leader may
// have ended on SIGTERM while others ignore it), then gets SIGKILL. The supervisor, parent of
// the reaped leader, may signal the group without the edge's checks: Linux does not reuse
// a pid as long as it names a process group with members, and an empty group is no target.
func killStragglers(dir string, pgid int) {
	for {
		if syscall.Kill(-pgid, 0) != nil {
			return // the group is empty
		}
		rec, _ := readCancel(dir)
		if rec.Signal == "SIGKILL" || !time.Now().Before(rec.KillAt) {
			if rec.Signal != "SIGKILL" {
				_ = writeJSONFile(filepath.Join(dir, jobCancelFile), jobCancelRecord{Signal: "SIGKILL", KillAt: time.Now().UTC()})
			}
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copyJournal copies r into the output file up to max bytes, then drains r (so the process
// never blocks on a full pipe) and marks the journal truncated.
func copyJournal(out *os.File, r io.Reader, limit int64, truncMarker string) {
	buf := make([]byte, 64<<10)
	var written int64
	marked := false
	for {
		n, err := r.Read(buf)
		if n > 0 {
			p := buf[:n]
			if room := limit - written; int64(n) > room {
				p = p[:max(room, 0)]
				if !marked {
					marked = true
					_ = os.WriteFile(truncMarker, nil, 0o600)
				}
			}
			if len(p) > 0 {
				if _, werr := out.Write(p); werr != nil && !marked {
					marked = true // disk full: keep draining, flag the loss
					_ = os.WriteFile(truncMarker, nil, 0o600)
				}
				written += int64(len(p))
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) {
				fmt.Fprintf(os.Stderr, "job-supervise: read output: %v\n", err)
			}
			return
		}
	}
}
