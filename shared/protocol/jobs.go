package protocol

import (
	"errors"
	"fmt"
	"regexp"
)

// Job methods: a job is a process the edge runs detached from itself, journalled under
// EDGE_STATE_DIR/jobs/<id>, so it and its result outlive the tunnel and the edge process.
const (
	MethodJobStart  = "job_start"
	MethodJobGet    = "job_get"
	MethodJobCancel = "job_cancel"
	MethodJobList   = "job_list"
)

// Job statuses, as job_get and job_list report them.
const (
	JobRunning  = "running"
	JobExited   = "exited"
	JobKilled   = "killed"
	JobTimedOut = "timed_out"
	JobLost     = "lost" // the job's supervisor died without recording an exit
)

// Bounds of the job RPCs.
const (
	MaxJobRead = 512 << 10 // output bytes one job_get returns (base64 in a JSON frame)
	MaxJobList = 1000      // jobs one job_list returns
)

// jobIDRE is the shape of an edge-local job id.
var jobIDRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

// ValidJobID reports whether s is an edge-local job id.
func ValidJobID(s string) bool { return jobIDRE.MatchString(s) }

// JobStartParams starts a job: ExecParams' process description (Stdin is carried inline,
// MaxOutputBytes bounds the journal's output file).
type JobStartParams struct {
	Exec      ExecParams `json:"exec"`
	StdinData string     `json:"stdin_data,omitempty"`
}

// Validate checks the bounds; the edge applies its policy on top.
func (p *JobStartParams) Validate() error {
	if p.Exec.Stdin {
		return errors.New("job stdin is sent inline in stdin_data, not as data frames")
	}
	if len(p.StdinData) > MaxJSONFrame/2 {
		return fmt.Errorf("stdin_data is %d bytes (max %d)", len(p.StdinData), MaxJSONFrame/2)
	}
	return p.Exec.Validate()
}

// JobRef names one job on the edge.
type JobRef struct {
	ID string `json:"id"`
}

// JobGetParams reads a job's state and its output from byte offset Since.
type JobGetParams struct {
	ID       string `json:"id"`
	Since    int64  `json:"since"`
	MaxBytes int64  `json:"max_bytes"`
}

// Validate checks the id and bounds.
func (p *JobGetParams) Validate() error {
	if !ValidJobID(p.ID) {
		return fmt.Errorf("job id %q is not valid", trunc(p.ID))
	}
	if p.Since < 0 {
		return errors.New("since is negative")
	}
	if p.MaxBytes < 0 || p.MaxBytes > MaxJobRead {
		return fmt.Errorf("max_bytes must be between 0 and %d", MaxJobRead)
	}
	return nil
}

// JobStatus is a job's state as the edge's journal records it.
type JobStatus struct {
	ID         string   `json:"id"`
	Status     string   `json:"status"`
	ExitCode   *int     `json:"exit_code,omitempty"` // set once finished (-1 for a signal)
	Signal     string   `json:"signal,omitempty"`
	Argv       []string `json:"argv,omitempty"`
	Command    string   `json:"command,omitempty"`
	RunAs      string   `json:"run_as,omitempty"`
	StartedAt  string   `json:"started_at"`            // RFC 3339 UTC
	FinishedAt string   `json:"finished_at,omitempty"` // RFC 3339 UTC
	OutputSize int64    `json:"output_size"`           // bytes in the journal so far
	Truncated  bool     `json:"truncated"`             // output beyond the journal's bound was dropped
	Output     []byte   `json:"output,omitempty"`      // job_get: bytes from Since
	NextSince  int64    `json:"next_since"`            // job_get: offset to ask for next
}

// JobList is job_list's result, newest first.
type JobList struct {
	Jobs []JobStatus `json:"jobs"`
}
