package rpc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Job bounds and defaults.
const (
	defaultJobRetention = 24 * time.Hour
	defaultJobOutputMax = 64 << 20
	maxJobsKept         = 256              // journals kept at once; the oldest finished go first
	jobStartWait        = 10 * time.Second // time a supervisor has to report that it started
	jobCancelWait       = 3 * time.Second  // time a cancelled job has to record its end
)

// errNoJob: no journal for that id (never started, or pruned after EDGE_JOB_RETENTION).
var errNoJob = errors.New("no such job")

// jobsDir is EDGE_STATE_DIR/jobs.
func (s *Server) jobsDir() string { return filepath.Join(s.cfg.StateDir, jobsDirName) }

// job dispatches the four job methods.
func (s *Server) job(_ context.Context, c *call) (any, error) {
	if s.cfg.StateDir == "" {
		return nil, protocol.Errorf(protocol.CodeInternal, "this edge has no state directory for jobs")
	}
	switch c.req.Method {
	case protocol.MethodJobStart:
		return s.jobStart(c)
	case protocol.MethodJobGet:
		var p protocol.JobGetParams
		if err := decodeValid(c, &p); err != nil {
			return nil, err
		}
		return s.jobRead(p.ID, p.Since, p.MaxBytes)
	case protocol.MethodJobCancel:
		var p protocol.JobRef
		if err := c.req.DecodeParams(&p); err != nil {
			return nil, err
		}
		if !protocol.ValidJobID(p.ID) {
			return nil, protocol.Errorf(protocol.CodeBadRequest, "job_cancel: job id is not valid")
		}
		return s.jobCancel(p.ID)
	default:
		return s.jobList()
	}
}

// jobRead is readJob with the edge's error for a missing journal.
func (s *Server) jobRead(id string, since, maxBytes int64) (protocol.JobStatus, error) {
	st, err := readJob(filepath.Join(s.jobsDir(), id), id, since, maxBytes)
	if errors.Is(err, errNoJob) {
		return st, protocol.Errorf(protocol.CodeNotFound,
			"no job %s on this edge (finished jobs are kept for %s): list_commands shows the jobs it has", id, s.retention())
	}
	return st, err
}

func (s *Server) retention() time.Duration {
	if s.cfg.JobRetention > 0 {
		return s.cfg.JobRetention
	}
	return defaultJobRetention
}

// jobStart prepares the process as exec does, writes the journal and starts the supervisor.
func (s *Server) jobStart(c *call) (any, error) {
	var p protocol.JobStartParams
	if err := decodeValid(c, &p); err != nil {
		return nil, err
	}
	e := &p.Exec
	c.entry.Argv, c.entry.Command = e.Argv, e.Command
	pr, err := s.prepare(e)
	if err != nil {
		return nil, err
	}
	if len(s.cfg.JobCommand) == 0 {
		return nil, protocol.Errorf(protocol.CodeInternal, "this edge cannot start jobs (no supervisor command)")
	}
	running, err := s.pruneJobs()
	if err != nil {
		return nil, err
	}
	if running >= maxJobsKept {
		return nil, protocol.Errorf(protocol.CodeBusy, "%d jobs are running on this edge (the most it keeps): wait for some to finish", running)
	}

	spec := pr.jobSpec()
	spec.TimeoutMs, spec.Stdin = e.TimeoutMs, p.StdinData != ""
	spec.MaxOutput = s.cfg.JobOutputMax
	if spec.MaxOutput <= 0 {
		spec.MaxOutput = defaultJobOutputMax
	}
	spec.MaxOutput = min(spec.MaxOutput, max(e.MaxOutputBytes, 1))
	meta := jobMeta{Argv: e.Argv, Command: e.Command, RunAs: e.RunAs, TimeoutMs: e.TimeoutMs,
		StartedAt: time.Now().UTC().Format(time.RFC3339Nano)}
	id, err := s.createJob(spec, meta, p.StdinData)
	if err != nil {
		return nil, err
	}
	s.log.Info("job started", "job", id, "argv", e.Argv, "command", e.Command, "run_as", e.RunAs)
	return s.jobRead(id, 0, 0)
}

// createJob writes a new job's journal (spec, stdin, meta) under a fresh id and starts
// its supervisor. On failure nothing of the journal is left.
func (s *Server) createJob(spec jobSpec, meta jobMeta, stdin string) (id string, err error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	id = hex.EncodeToString(rnd[:])
	dir := filepath.Join(s.jobsDir(), id)
	if err := os.MkdirAll(s.jobsDir(), 0o700); err != nil {
		return "", protocol.Errorf(protocol.CodeIO, "job journal: %v", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", protocol.Errorf(protocol.CodeIO, "job journal: %v", err)
	}
	fail := func(err error) (string, error) {
		_ = os.RemoveAll(dir)
		return "", err
	}
	if err := writeJSONFile(filepath.Join(dir, jobSpecFile), spec); err != nil {
		return fail(protocol.Errorf(protocol.CodeIO, "job journal: %v", err))
	}
	if spec.Stdin {
		if err := os.WriteFile(filepath.Join(dir, jobStdinFile), []byte(stdin), 0o600); err != nil {
			return fail(protocol.Errorf(protocol.CodeIO, "job journal: %v", err))
		}
	}
	if err := writeJSONFile(filepath.Join(dir, jobMetaFile), meta); err != nil {
		return fail(protocol.Errorf(protocol.CodeIO, "job journal: %v", err))
	}
	if err := s.startSupervisor(dir); err != nil {
		return fail(err)
	}
	return id, nil
}

// startSupervisor runs RunJob's first stage and waits for the supervisor's "ok".
func (s *Server) startSupervisor(dir string) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return protocol.Errorf(protocol.CodeIO, "job status pipe: %v", err)
	}
	defer pr.Close()
	name := s.cfg.JobCommand[0]
	cmd := &exec.Cmd{Path: name, Args: append(slices.Clone(s.cfg.JobCommand), dir), Env: os.Environ(),
		ExtraFiles: []*os.File{pw}, SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	if filepath.Base(name) == name {
		if cmd.Path, err = exec.LookPath(name); err != nil {
			pw.Close()
			return protocol.Errorf(protocol.CodeInternal, "job supervisor %s: %v", name, err)
		}
	}
	err = cmd.Start()
	pw.Close()
	if err != nil {
		return protocol.Errorf(protocol.CodeInternal, "start job supervisor: %v", err)
	}
	_ = cmd.Wait() // the first stage exits as soon as the supervisor is started
	_ = pr.SetReadDeadline(time.Now().Add(jobStartWait))
	msg, _ := io.ReadAll(io.LimitReader(pr, 4096))
	switch m := strings.TrimSpace(string(msg)); {
	case m == "ok":
		return nil
	case strings.HasPrefix(m, "error: "):
		m = strings.TrimPrefix(m, "error: ")
		code := protocol.CodeIO
		if strings.Contains(m, "no such file") {
			code = protocol.CodeNotFound
		}
		return protocol.Errorf(code, "job did not start: %s", m)
	default:
		return protocol.Errorf(protocol.CodeInternal, "job supervisor did not report within %s", jobStartWait)
	}
}

// jobCancelGrace is how long a cancelled job has, after SIGTERM to its process group, to
// end by itself before the group is killed (SIGKILL). A variable for tests.
var jobCancelGrace = 10 * time.Second

// jobCancelRecord is the journal's cancel file: the signal last sent to the job's group,
// and when the supervisor kills what is left of the group if it still runs (for a leader
// that ended on SIGTERM while others of its group ignored it). An empty file (written by an
// older edge) means SIGKILL at once.
type jobCancelRecord struct {
	Signal string    `json:"signal"`
	KillAt time.Time `json:"kill_at"`
}

// readCancel reads the cancel file of dir; ok is false when the job was not cancelled.
func readCancel(dir string) (rec jobCancelRecord, ok bool) {
	p := filepath.Join(dir, jobCancelFile)
	if !exists(p) {
		return rec, false
	}
	if err := readJSONFile(p, &rec); err != nil || rec.Signal == "" {
		rec = jobCancelRecord{Signal: "SIGKILL"}
	}
	return rec, true
}

// jobCancel stops a running job: SIGTERM to its process group, jobCancelGrace for it to end,
// then SIGKILL to the group if its leader still runs, and a short wait for the supervisor to
// record the end. Each signal goes only to a group verifiably this job's (verifyJobGroup,
// checked again before SIGKILL); the supervisor kills, at the same deadline, what is left of
// the group once the leader is gone.
func (s *Server) jobCancel(id string) (protocol.JobStatus, error) {
	dir := filepath.Join(s.jobsDir(), id)
	st, err := s.jobRead(id, 0, 0)
	if err != nil || st.Status != protocol.JobRunning {
		return st, err
	}
	var rec jobPid
	if err := readJSONFile(filepath.Join(dir, jobPidFile), &rec); err != nil {
		return st, protocol.Errorf(protocol.CodeIO, "job %s has no recorded process group: %v", id, err)
	}
	// The pid file is not enough: signal only a group that is verifiably this job's.
	if err := verifyJobGroup(dir, rec); err != nil {
		s.log.Warn("job cancel refused: the recorded process group is not the job's", "job", id, "pgid", rec.Pgid, "err", err)
		return st, protocol.Errorf(protocol.CodeIO, "job %s: refusing to kill process group %d: %v", id, rec.Pgid, err)
	}
	grace := jobCancelGrace
	cancelPath := filepath.Join(dir, jobCancelFile)
	if err := writeJSONFile(cancelPath, jobCancelRecord{Signal: "SIGTERM", KillAt: time.Now().Add(grace).UTC()}); err != nil {
		return st, protocol.Errorf(protocol.CodeIO, "job %s: %v", id, err)
	}
	_ = syscall.Kill(-rec.Pgid, syscall.SIGTERM)
	s.log.Info("job cancel: SIGTERM sent to its process group", "job", id, "pgid", rec.Pgid, "grace", grace)
	if !waitExit(dir, grace) && verifyJobGroup(dir, rec) == nil {
		if err := writeJSONFile(cancelPath, jobCancelRecord{Signal: "SIGKILL", KillAt: time.Now().UTC()}); err != nil {
			s.log.Warn("job cancel: cannot update the cancel record", "job", id, "err", err)
		}
		_ = syscall.Kill(-rec.Pgid, syscall.SIGKILL)
		s.log.Info("job cancel: still running after the grace: SIGKILL sent", "job", id, "pgid", rec.Pgid)
	}
	waitExit(dir, jobCancelWait)
	return s.jobRead(id, 0, 0)
}

// waitExit polls for the job's recorded end for at most d, reporting whether it came.
func waitExit(dir string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if _, ok := readExit(dir); ok {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jobList lists the journals, newest first, after pruning expired ones.
func (s *Server) jobList() (protocol.JobList, error) {
	out := protocol.JobList{Jobs: []protocol.JobStatus{}}
	if _, err := s.pruneJobs(); err != nil {
		return out, err
	}
	ents, err := os.ReadDir(s.jobsDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return out, protocol.Errorf(protocol.CodeIO, "jobs: %v", err)
	}
	for _, ent := range ents {
		if !ent.IsDir() || !protocol.ValidJobID(ent.Name()) {
			continue
		}
		if st, err := readJob(filepath.Join(s.jobsDir(), ent.Name()), ent.Name(), 0, 0); err == nil {
			out.Jobs = append(out.Jobs, st)
		}
	}
	slices.SortFunc(out.Jobs, func(a, b protocol.JobStatus) int { return strings.Compare(b.StartedAt, a.StartedAt) })
	if len(out.Jobs) > protocol.MaxJobList {
		out.Jobs = out.Jobs[:protocol.MaxJobList]
	}
	return out, nil
}

// pruneJobs removes journals finished longer ago than the retention, then the oldest
// finished ones beyond maxJobsKept. It returns how many jobs are still running.
func (s *Server) pruneJobs() (running int, err error) {
	ents, err := os.ReadDir(s.jobsDir())
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, protocol.Errorf(protocol.CodeIO, "jobs: %v", err)
	}
	type done struct {
		dir string
		at  time.Time
	}
	var finished []done
	cutoff := time.Now().Add(-s.retention())
	for _, ent := range ents {
		if !ent.IsDir() || !protocol.ValidJobID(ent.Name()) {
			continue
		}
		dir := filepath.Join(s.jobsDir(), ent.Name())
		at, status := finishedAt(dir)
		switch {
		case status == protocol.JobRunning:
			running++
		case at.Before(cutoff):
			if err := os.RemoveAll(dir); err != nil {
				s.log.Warn("cannot remove expired job journal", "dir", dir, "err", err)
			}
		default:
			finished = append(finished, done{dir, at})
		}
	}
	if extra := running + len(finished) - maxJobsKept + 1; extra > 0 {
		slices.SortFunc(finished, func(a, b done) int { return a.at.Compare(b.at) })
		for _, d := range finished[:min(extra, len(finished))] {
			_ = os.RemoveAll(d.dir)
		}
	}
	return running, nil
}

// DefaultJobCommand is the argv prefix that runs the job supervisor from the edge binary.
func DefaultJobCommand() []string {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	return []string{exe, JobSubcommand}
}

// JobSubcommand is the hidden mcp-ssh-edge subcommand that runs RunJob.
const JobSubcommand = "job-supervise"
