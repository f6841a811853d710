package tools

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Job output paging bounds for get_command.
const (
	defaultJobRead = 64 << 10
	jobIDSep       = "/"
	// maxJobWait bounds get_command's wait_seconds below the usual 60 s client request
	// timeout; jobPoll is how often the edge is asked meanwhile.
	maxJobWait = 50
	jobPoll    = 500 * time.Millisecond
)

// JobOutput is a job's state: start_command's, get_command's and cancel_command's result.
type JobOutput struct {
	JobID      string   `json:"job_id" jsonschema:"the job's id (<edge>/<id>): pass it to get_command and cancel_command"`
	Edge       string   `json:"edge" jsonschema:"the edge the job runs on"`
	Status     string   `json:"status" jsonschema:"running, exited, killed (cancelled or signalled), timed_out, or lost (the edge lost track of it, e.g. the device rebooted)"`
	ExitCode   *int     `json:"exit_code,omitempty" jsonschema:"exit status once finished; -1 when killed by a signal; absent while running or when lost"`
	Signal     string   `json:"signal" jsonschema:"the signal that killed the process, e.g. SIGTERM or SIGKILL; for a cancelled job that exited by itself on SIGTERM, the signal sent; empty otherwise"`
	Output     string   `json:"output" jsonschema:"stdout and stderr as produced, from byte offset since (invalid UTF-8 replaced)"`
	NextSince  int64    `json:"next_since" jsonschema:"pass this as since in the next get_command to read only new output"`
	OutputSize int64    `json:"output_size" jsonschema:"bytes of output the edge has recorded so far"`
	Truncated  bool     `json:"truncated" jsonschema:"true when output beyond the edge's journal bound was dropped"`
	Argv       []string `json:"argv" jsonschema:"the program and arguments, when started with argv"`
	Command    string   `json:"command" jsonschema:"the shell command, when started with command"`
	RunAs      string   `json:"run_as" jsonschema:"the user it runs as; empty for the edge service's user"`
	StartedAt  string   `json:"started_at" jsonschema:"when it started (RFC 3339 UTC)"`
	FinishedAt string   `json:"finished_at" jsonschema:"when it ended (RFC 3339 UTC); empty while running"`
}

// GetCommandInput is get_command's arguments.
type GetCommandInput struct {
	JobID       string `json:"job_id" jsonschema:"the job_id start_command returned (it names the edge)"`
	Since       int64  `json:"since,omitempty" jsonschema:"byte offset of the output to start from: 0 (default) for the beginning, or the previous next_since to read only new output"`
	MaxBytes    int64  `json:"max_bytes,omitempty" jsonschema:"most output bytes to return (default 65536, max 524288)"`
	WaitSeconds int    `json:"wait_seconds,omitempty" jsonschema:"wait up to this many seconds (max 50) for new output or the end of the job before answering, instead of polling in a tight loop; default 0 answers at once"`
}

// JobRefInput names a job (cancel_command).
type JobRefInput struct {
	JobID string `json:"job_id" jsonschema:"the job_id start_command returned"`
}

// ListCommandsInput is list_commands' arguments.
type ListCommandsInput struct {
	Edge string `json:"edge" jsonschema:"the edge whose jobs to list: its name from get_status (or its SHA256 key fingerprint)"`
}

// ListCommandsOutput is list_commands' result.
type ListCommandsOutput struct {
	Edge string      `json:"edge" jsonschema:"the edge's name"`
	Jobs []JobOutput `json:"jobs" jsonschema:"jobs the edge keeps (running, and finished within its EDGE_JOB_RETENTION), newest first; output is empty here: use get_command"`
}

func startCommandTool() mcp.Tool {
	return mcp.NewTool("start_command",
		mcp.WithDescription("Start a long-running program on an edge as a background job and return its job_id at once. "+
			"Use it for anything that may take longer than a minute (package upgrades, builds, backups): the job keeps running and its output is kept on the edge "+
			"even if the connection drops, the gateway restarts or the edge service restarts. Poll get_command with since=next_since until status is not running. "+
			"Takes run_command's arguments; timeout_seconds defaults to the gateway's EXEC_TIMEOUT_MAX. For short commands run_command is simpler."),
		hints("Start a background job on an edge", false, true, false, true),
		mcp.WithInputSchema[RunInput](),
		mcp.WithOutputSchema[JobOutput](),
	)
}

func getCommandTool() mcp.Tool {
	return mcp.NewTool("get_command",
		mcp.WithDescription("Read a background job's status, exit code and output. Pass since=next_since from the previous call to get only new output, "+
			"so a long build can be followed without re-reading it. Status running means ask again; pass wait_seconds (up to 50) to have the gateway wait for new output or the end of the job rather than polling quickly."),
		hints("Read a background job", true, false, true, false),
		mcp.WithInputSchema[GetCommandInput](),
		mcp.WithOutputSchema[JobOutput](),
	)
}

func cancelCommandTool() mcp.Tool {
	return mcp.NewTool("cancel_command",
		mcp.WithDescription("Stop a running background job: its whole process group gets SIGTERM, so that it can clean up (a package manager finishes its step), "+
			"and whatever still runs 10 seconds later gets SIGKILL; the call answers once the job ended (at most about 13 s). "+
			"Its status becomes killed either way, with signal saying which signal ended it (SIGTERM, or SIGKILL after the grace; for a job that exited by itself on SIGTERM, the one sent). "+
			"A finished job is left as it is. Its output stays readable with get_command."),
		hints("Cancel a background job", false, true, true, false),
		mcp.WithInputSchema[JobRefInput](),
		mcp.WithOutputSchema[JobOutput](),
	)
}

func listCommandsTool() mcp.Tool {
	return mcp.NewTool("list_commands",
		mcp.WithDescription("List the background jobs an edge keeps (running ones, and finished ones within its retention), newest first, "+
			"with status and exit code. Use it to find a job_id again; read output with get_command."),
		hints("List background jobs on an edge", true, false, true, false),
		mcp.WithInputSchema[ListCommandsInput](),
		mcp.WithOutputSchema[ListCommandsOutput](),
	)
}

// parseJobID splits "<edge>/<id>".
func parseJobID(jobID string) (edge, id string, err error) {
	edge, id, ok := strings.Cut(jobID, jobIDSep)
	if !ok || edge == "" || len(edge) > maxEdgeArg || !protocol.ValidJobID(id) {
		return "", "", fmt.Errorf("job_id %q is not a job id (<edge>/<16 hex digits>, as start_command returns): list_commands shows an edge's jobs", oneLine(jobID))
	}
	return edge, id, nil
}

// jobOutput converts the edge's job status; output is cut back to whole UTF-8 characters
// while more may follow, so next_since never splits one.
func jobOutput(edge string, st protocol.JobStatus) JobOutput {
	out := st.Output
	if n := len(out); n > 0 && (st.Status == protocol.JobRunning || st.NextSince < st.OutputSize) {
		for i := n - 1; i >= 0 && i >= n-utf8.UTFMax; i-- {
			if utf8.RuneStart(out[i]) {
				if !utf8.FullRune(out[i:]) {
					out = out[:i]
				}
				break
			}
		}
	}
	next := st.NextSince - int64(len(st.Output)-len(out))
	return JobOutput{
		JobID: edge + jobIDSep + st.ID, Edge: edge, Status: st.Status, ExitCode: st.ExitCode, Signal: st.Signal,
		Output: strings.ToValidUTF8(string(out), "\uFFFD"), NextSince: next, OutputSize: st.OutputSize,
		Truncated: st.Truncated, Argv: nonNil(st.Argv), Command: st.Command, RunAs: st.RunAs,
		StartedAt: st.StartedAt, FinishedAt: st.FinishedAt,
	}
}

func (h *handlers) startCommand(ctx context.Context, req mcp.CallToolRequest, in RunInput) *mcp.CallToolResult {
	const tool = "start_command"
	if in.TimeoutSeconds == 0 {
		in.TimeoutSeconds = int(h.cfg.ExecTimeoutMax.Seconds())
	}
	p, timeout, err := h.execParams(in)
	if err != nil {
		return errResult(err.Error())
	}
	p.Stdin = false
	c, res := h.begin(ctx, req, tool, in.Edge, execAsk(p, timeout), audit.Event{})
	if res != nil {
		return res
	}
	st, err := c.edge.JobStart(ctx, c.id, protocol.JobStartParams{Exec: p, StdinData: in.Stdin})
	if err != nil {
		c.end(outcomeOf(err), err, audit.Event{})
		return errResult(edgeMessage(c.name, err))
	}
	out := jobOutput(c.name, st)
	c.end("ok", nil, audit.Event{Path: out.JobID})
	return okResult(out)
}

func (h *handlers) getCommand(ctx context.Context, req mcp.CallToolRequest, in GetCommandInput) *mcp.CallToolResult {
	edge, id, err := parseJobID(in.JobID)
	if err != nil {
		return errResult(err.Error())
	}
	max := in.MaxBytes
	switch {
	case max == 0:
		max = min(defaultJobRead, h.cfg.MaxOutputBytes)
	case max < 0 || max > protocol.MaxJobRead:
		return errResult(fmt.Sprintf("max_bytes must be between 1 and %d", protocol.MaxJobRead))
	}
	if in.Since < 0 {
		return errResult("since must be 0 or a next_since from a previous get_command")
	}
	if in.WaitSeconds < 0 || in.WaitSeconds > maxJobWait {
		return errResult(fmt.Sprintf("wait_seconds must be between 0 and %d", maxJobWait))
	}
	c, res := h.open(ctx, req, "get_command", edge, ask{})
	if res != nil {
		return res
	}
	deadline := time.Now().Add(time.Duration(in.WaitSeconds) * time.Second)
	for {
		st, err := c.edge.JobGet(ctx, c.id, protocol.JobGetParams{ID: id, Since: in.Since, MaxBytes: max})
		if err != nil {
			return errResult(jobMessage(c.name, err))
		}
		if st.Status != protocol.JobRunning || len(st.Output) > 0 || !time.Now().Add(jobPoll).Before(deadline) {
			return okResult(jobOutput(c.name, st))
		}
		select {
		case <-ctx.Done():
			return okResult(jobOutput(c.name, st))
		case <-time.After(jobPoll):
		}
	}
}

func (h *handlers) cancelCommand(ctx context.Context, req mcp.CallToolRequest, in JobRefInput) *mcp.CallToolResult {
	const tool = "cancel_command"
	edge, id, err := parseJobID(in.JobID)
	if err != nil {
		return errResult(err.Error())
	}
	c, res := h.begin(ctx, req, tool, edge, ask{}, audit.Event{Path: in.JobID})
	if res != nil {
		return res
	}
	st, err := c.edge.JobCancel(ctx, c.id, id)
	if err != nil {
		c.end(outcomeOf(err), err, audit.Event{Path: in.JobID})
		return errResult(jobMessage(c.name, err))
	}
	c.end("ok", nil, audit.Event{Path: in.JobID, ExitCode: st.ExitCode})
	return okResult(jobOutput(c.name, st))
}

func (h *handlers) listCommands(ctx context.Context, req mcp.CallToolRequest, in ListCommandsInput) *mcp.CallToolResult {
	c, res := h.open(ctx, req, "list_commands", in.Edge, ask{})
	if res != nil {
		return res
	}
	list, err := c.edge.JobList(ctx, c.id)
	if err != nil {
		return errResult(edgeMessage(c.name, err))
	}
	out := ListCommandsOutput{Edge: c.name, Jobs: make([]JobOutput, 0, len(list.Jobs))}
	for _, st := range list.Jobs {
		out.Jobs = append(out.Jobs, jobOutput(c.name, st))
	}
	return okResult(out)
}

// jobMessage is edgeMessage with a hint for jobs whose edge is away.
func jobMessage(edge string, err error) string {
	msg := edgeMessage(edge, err)
	if errors.Is(err, gateway.ErrEdgeOffline) || errors.Is(err, gateway.ErrDisconnected) {
		msg += " (the job keeps running on the edge; ask again once it is connected)"
	}
	return msg
}
