package rpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// A job's journal is one directory, EDGE_STATE_DIR/jobs/<id>/, 0700, holding:
//
//	spec.json  how to start the process (argv, env, credential); removed once started
//	stdin      the job's standard input; removed once started
//	meta.json  what was asked (argv or command, run_as, start time): no env, no stdin
//	lock       flock'ed by the job's supervisor for as long as it lives
//	scope      the job's systemd scope unit, or why it has none (only where systemd runs)
//	pid        pid.json-style record of the process group the supervisor started, with the
//	           leader's start time (jobPid); cancel kills the group only after verifyJobGroup
//	output     stdout and stderr as produced, up to JobOutputMax bytes
//	truncated  present once output beyond that bound was dropped
//	cancel     present once cancel_command asked for the job to be killed
//	exit.json  the outcome, written atomically (fsync, rename) by the supervisor at the end
//
// Every file is written by the edge or the supervisor, read back bounded, and never leaves
// the state directory, which no RPC can read or write (checked by the identity of the
// directory opened, so a symlinked EDGE_STATE_DIR does not open a way in). JSON files are
// read only if they are regular files (not symlinks) owned by the edge's user with no
// group or other permissions (readJSONFile): what another user could write is not believed.
const (
	jobsDirName   = "jobs"
	jobSpecFile   = "spec.json"
	jobStdinFile  = "stdin"
	jobMetaFile   = "meta.json"
	jobLockFile   = "lock"
	jobScopeFile  = "scope"
	jobPidFile    = "pid"
	jobOutputFile = "output"
	jobTruncFile  = "truncated"
	jobCancelFile = "cancel"
	jobExitFile   = "exit.json"

	maxJournalJSON = 1 << 20 // spec.json (argv, env) is the largest JSON file
)

// jobSpec is spec.json: everything the supervisor needs to start the process.
type jobSpec struct {
	Path      string              `json:"path"`
	Args      []string            `json:"args"`
	Env       []string            `json:"env"`
	Dir       string              `json:"dir,omitempty"`
	TimeoutMs int64               `json:"timeout_ms"`
	MaxOutput int64               `json:"max_output"`
	Stdin     bool                `json:"stdin"`
	Cred      *syscall.Credential `json:"cred,omitempty"`
}

// jobMeta is meta.json: what a listing shows about the job.
type jobMeta struct {
	Argv      []string `json:"argv,omitempty"`
	Command   string   `json:"command,omitempty"`
	RunAs     string   `json:"run_as,omitempty"`
	StartedAt string   `json:"started_at"`
	TimeoutMs int64    `json:"timeout_ms"`
}

// jobExit is exit.json: how the job ended.
type jobExit struct {
	Status     string `json:"status"`
	ExitCode   int    `json:"exit_code"`
	Signal     string `json:"signal,omitempty"`
	FinishedAt string `json:"finished_at"`
	Error      string `json:"error,omitempty"`
}

// jobPid is the pid file: the job's process group and its leader's start time, in clock
// ticks since boot (/proc/<pid>/stat field 22), which tells a reused pid from the job's.
type jobPid struct {
	Pgid  int    `json:"pgid"`
	Start uint64 `json:"start"`
}

// readJSONFile decodes a bounded JSON file written by the edge or its supervisor: a regular
// file (a symlink is not followed), owned by the edge's user, 0600 or narrower (ownFile).
func readJSONFile(path string, v any) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := ownFile(f); err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxJournalJSON+1))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	n := len(b)
	if n > maxJournalJSON {
		return fmt.Errorf("%s is larger than %d bytes", path, maxJournalJSON)
	}
	if err := json.Unmarshal(b[:n], v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// ownFile refuses an open journal file that the edge or its supervisor did not write: not
// a regular file, owned by another user, or open to group or others.
func ownFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", f.Name())
	}
	if uid := owner(fi); uid != uint32(os.Geteuid()) {
		return fmt.Errorf("%s is owned by uid %d, not the edge's (%d): not trusted", f.Name(), uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s has mode %04o, not 0600: not trusted", f.Name(), fi.Mode().Perm())
	}
	return nil
}

// procStat is what verifyJobGroup reads from /proc/<pid>/stat.
type procStat struct {
	ppid, pgrp int
	start      uint64 // field 22, clock ticks since boot
}

// readProcStat parses /proc/<pid>/stat; the command name (field 2) may hold spaces and
// parentheses, so fields are counted from its last ')'.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ps procStat
	var e1, e2, e3 error
	ps.ppid, e1 = strconv.Atoi(f[1])
	ps.pgrp, e2 = strconv.Atoi(f[2])
	ps.start, e3 = strconv.ParseUint(f[19], 10, 64)
	if err := errors.Join(e1, e2, e3); err != nil {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %v", pid, err)
	}
	return ps, nil
}

// procEUID is a process's effective uid (/proc/<pid>/status, "Uid:" line, second field).
func procEUID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1, err
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) >= 2 {
				return strconv.Atoi(f[1])
			}
		}
	}
	return -1, fmt.Errorf("/proc/%d/status has no Uid line", pid)
}

// verifyJobGroup checks, before cancel sends SIGKILL to a process group, that the group in
// the pid file is the job's own, whatever wrote that file. The group's leader must:
//   - have started at the recorded time (a pid reused since is another process), and still
//     lead the recorded group;
//   - be the child of a process running as the edge's user whose command line is this
//     job's supervisor ("… --detached DIR" with DIR this very journal directory, compared by
//     identity).
//
// The supervisor starts exactly one process, in a group of its own, and only it reaps it;
// nobody but the edge's user (root, usually) can start a process as that user. So a forged
// pid file can at worst name the job's own group: it cannot make cancel_command kill an
// unrelated one. Reading the leader's environment for a job id was the alternative, but a job
// that runs `env -i` or exec's a program that clears it would then be uncancellable.
func verifyJobGroup(dir string, rec jobPid) error {
	if rec.Pgid <= 1 {
		return fmt.Errorf("no process group recorded")
	}
	ps, err := readProcStat(rec.Pgid)
	if err != nil {
		return fmt.Errorf("process %d: %v", rec.Pgid, err)
	}
	if ps.start != rec.Start {
		return fmt.Errorf("process %d started at tick %d, the job's at %d: not the job's", rec.Pgid, ps.start, rec.Start)
	}
	if ps.pgrp != rec.Pgid {
		return fmt.Errorf("process %d leads group %d, not %d", rec.Pgid, ps.pgrp, rec.Pgid)
	}
	if uid, err := procEUID(ps.ppid); err != nil || uid != os.Geteuid() {
		return fmt.Errorf("the parent of process %d (pid %d) does not run as the edge's user", rec.Pgid, ps.ppid)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", ps.ppid))
	if err != nil {
		return fmt.Errorf("the parent of process %d (pid %d): %v", rec.Pgid, ps.ppid, err)
	}
	args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	if n := len(args); n < 2 || args[n-2] != detachedFlag || !sameDir(args[n-1], dir) {
		return fmt.Errorf("the parent of process %d (pid %d) is not this job's supervisor", rec.Pgid, ps.ppid)
	}
	return nil
}

// sameDir reports whether a and b name the same directory (device and inode).
func sameDir(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && sa.IsDir() && os.SameFile(sa, sb)
}

// writeJSONFile writes v to path atomically (temp file, fsync, rename), mode 0600.
func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return keys.WriteFileAtomic(path, b, 0o600)
}

// supervisorAlive reports whether the job's supervisor still holds its lock.
func supervisorAlive(dir string) bool {
	f, err := os.Open(filepath.Join(dir, jobLockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		return errors.Is(err, unix.EWOULDBLOCK)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// exists reports whether path exists.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// readJob reads a job's state from its journal, with up to maxBytes of output from since.
func readJob(dir, id string, since, maxBytes int64) (protocol.JobStatus, error) {
	st := protocol.JobStatus{ID: id}
	var meta jobMeta
	if err := readJSONFile(filepath.Join(dir, jobMetaFile), &meta); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return st, errNoJob
		}
		return st, protocol.Errorf(protocol.CodeIO, "job %s: %v", id, err)
	}
	st.Argv, st.Command, st.RunAs, st.StartedAt = meta.Argv, meta.Command, meta.RunAs, meta.StartedAt
	ex, ok := readExit(dir)
	if !ok && !supervisorAlive(dir) {
		// The supervisor may have written exit.json and exited just now: look again.
		if ex, ok = readExit(dir); !ok {
			st.Status = protocol.JobLost
		}
	}
	switch {
	case ok:
		code := ex.ExitCode
		st.Status, st.ExitCode, st.Signal, st.FinishedAt = ex.Status, &code, ex.Signal, ex.FinishedAt
	case st.Status == "":
		st.Status = protocol.JobRunning
	}
	st.Truncated = exists(filepath.Join(dir, jobTruncFile))
	f, err := os.Open(filepath.Join(dir, jobOutputFile))
	if err != nil {
		st.NextSince = since
		return st, nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return st, protocol.Errorf(protocol.CodeIO, "job %s output: %v", id, err)
	}
	st.OutputSize = fi.Size()
	since = min(since, st.OutputSize)
	n := min(maxBytes, st.OutputSize-since)
	st.NextSince = since
	if n > 0 {
		buf := make([]byte, n)
		m, err := f.ReadAt(buf, since)
		if err != nil && m == 0 {
			return st, protocol.Errorf(protocol.CodeIO, "job %s output: %v", id, err)
		}
		st.Output = buf[:m]
		st.NextSince = since + int64(m)
	}
	return st, nil
}

// readExit reads exit.json, if the supervisor has written it.
func readExit(dir string) (jobExit, bool) {
	var ex jobExit
	if err := readJSONFile(filepath.Join(dir, jobExitFile), &ex); err != nil {
		return ex, false
	}
	return ex, ex.Status != ""
}

// finishedAt is when a job ended, or the zero time while it runs.
func finishedAt(dir string) (time.Time, string) {
	if ex, ok := readExit(dir); ok {
		t, _ := time.Parse(time.RFC3339Nano, ex.FinishedAt)
		return t, ex.Status
	}
	if supervisorAlive(dir) {
		return time.Time{}, protocol.JobRunning
	}
	fi, err := os.Stat(filepath.Join(dir, jobMetaFile))
	if err != nil {
		fi, err = os.Stat(dir)
	}
	if err != nil {
		return time.Now(), protocol.JobLost
	}
	return fi.ModTime(), protocol.JobLost
}
