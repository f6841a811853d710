package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
//	pid        the process group the supervisor started
//	output     stdout and stderr as produced, up to JobOutputMax bytes
//	truncated  present once output beyond that bound was dropped
//	cancel     present once cancel_command asked for the job to be killed
//	exit.json  the outcome, written atomically (fsync, rename) by the supervisor at the end
//
// Every file is written by the edge or the supervisor, read back bounded, and never leaves
// the state directory, which no RPC can read or write.
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

// readJSONFile decodes a bounded JSON file.
func readJSONFile(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
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
