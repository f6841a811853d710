package tools

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// execGrace is how long past timeout_seconds the gateway waits for the edge's own answer
// (which carries the captured output) before giving up on the call.
const execGrace = 5 * time.Second

// Progress streaming bounds: at most one notification per progressEvery, each carrying at
// most progressChunk bytes of new output; a silent command still gets a heartbeat so that
// clients keep resetting their request timeout.
const (
	progressEvery     = 100 * time.Millisecond
	progressChunk     = 16 << 10
	progressHeartbeat = 10 * time.Second
)

// RunInput is run_command's arguments.
type RunInput struct {
	Edge           string            `json:"edge" jsonschema:"the edge to run on: its name from get_status (or its SHA256 key fingerprint)"`
	Argv           []string          `json:"argv,omitempty" jsonschema:"program and arguments, run directly without a shell, e.g. [\"systemctl\", \"status\", \"nginx\"]; preferred: no quoting problems. Give exactly one of argv or command"`
	Command        string            `json:"command,omitempty" jsonschema:"a shell command line run by /bin/sh -c; use only when you need pipes, redirection or globbing (the edge may forbid it). Give exactly one of argv or command"`
	Cwd            string            `json:"cwd,omitempty" jsonschema:"working directory on the edge (absolute path); default: the edge service's own directory"`
	Env            map[string]string `json:"env,omitempty" jsonschema:"extra environment variables (name to value) added to the edge's environment"`
	Stdin          string            `json:"stdin,omitempty" jsonschema:"text fed to the process's standard input; omitted: empty input"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty" jsonschema:"seconds before the whole process group is killed; default is the gateway's EXEC_TIMEOUT (usually 30), the maximum its EXEC_TIMEOUT_MAX. Raise it for long work such as package upgrades"`
	RunAs          string            `json:"run_as,omitempty" jsonschema:"user to run as (the edge switches user itself, no password or sudo involved); only users the edge lists in EDGE_ALLOW_RUN_AS; default: the edge service's user"`
}

// RunOutput is run_command's result; every field is always present.
type RunOutput struct {
	Edge            string `json:"edge" jsonschema:"the edge's name"`
	ExitCode        int    `json:"exit_code" jsonschema:"the process's exit status; -1 when it was killed by a signal (see signal)"`
	Signal          string `json:"signal" jsonschema:"the signal that killed the process, e.g. SIGKILL; empty when it exited normally"`
	Stdout          string `json:"stdout" jsonschema:"standard output (invalid UTF-8 replaced), cut at the gateway's MAX_OUTPUT_BYTES"`
	Stderr          string `json:"stderr" jsonschema:"standard error (invalid UTF-8 replaced), cut at the gateway's MAX_OUTPUT_BYTES"`
	StdoutTruncated bool   `json:"stdout_truncated" jsonschema:"true when stdout was cut; redirect to a file and read it in parts if you need it all"`
	StderrTruncated bool   `json:"stderr_truncated" jsonschema:"true when stderr was cut"`
	TimedOut        bool   `json:"timed_out" jsonschema:"true when the command hit timeout_seconds and was killed"`
	DurationMs      int64  `json:"duration_ms" jsonschema:"wall-clock run time in milliseconds"`
	JobID           string `json:"job_id" jsonschema:"set when the call ran as a background job (a timeout_seconds above 60 from a client that sends no progress notifications): stdout then holds stdout and stderr interleaved; if it is still running, follow it with get_command; empty otherwise"`
}

func runCommandTool() mcp.Tool {
	return mcp.NewTool("run_command",
		mcp.WithDescription("Run one program on an edge device and return its exit code, stdout and stderr. "+
			"Prefer argv (no shell); use command only for pipes or redirection. A non-zero exit is a normal result, not an error. "+
			"The process group is killed at timeout_seconds; raise it for long work (output streams as progress notifications meanwhile; "+
			"a client that sends none gets, past 60 s, a background job whose job_id comes back if it is still running after 45 s). "+
			"To write a file use upload_file rather than echo/cat; for hardware and OS facts use get_device_info."),
		hints("Run a command on an edge", false, true, false, true),
		mcp.WithInputSchema[RunInput](),
		mcp.WithOutputSchema[RunOutput](),
	)
}

// execParams validates the arguments and builds the RPC parameters and timeout.
func (h *handlers) execParams(in RunInput) (protocol.ExecParams, time.Duration, error) {
	var p protocol.ExecParams
	if err := checkEdgeArg(in.Edge); err != nil {
		return p, 0, err
	}
	hasArgv, hasCmd := in.Argv != nil, in.Command != ""
	switch {
	case hasArgv && hasCmd:
		return p, 0, errors.New("give exactly one of argv or command, not both: prefer argv")
	case !hasArgv && !hasCmd:
		return p, 0, errors.New("give exactly one of argv (preferred, e.g. [\"uname\", \"-a\"]) or command")
	case hasArgv && len(in.Argv) == 0:
		return p, 0, errors.New("argv is empty: give the program as argv[0]")
	case int64(len(in.Stdin)) > h.cfg.MaxUploadBytes:
		return p, 0, fmt.Errorf("stdin is %d bytes (max %d): upload large input with upload_file", len(in.Stdin), h.cfg.MaxUploadBytes)
	}
	// Sizes, NUL bytes and names are the wire protocol's rules (ExecParams.Validate, below),
	// which the edge applies again.

	timeout := h.cfg.ExecTimeout
	switch {
	case in.TimeoutSeconds < 0:
		return p, 0, fmt.Errorf("timeout_seconds must be positive (max %d)", int64(h.cfg.ExecTimeoutMax/time.Second))
	case in.TimeoutSeconds > 0:
		if time.Duration(in.TimeoutSeconds) > h.cfg.ExecTimeoutMax/time.Second {
			return p, 0, fmt.Errorf("timeout_seconds %d is above this gateway's maximum of %d (EXEC_TIMEOUT_MAX): ask for at most %d",
				in.TimeoutSeconds, int64(h.cfg.ExecTimeoutMax/time.Second), int64(h.cfg.ExecTimeoutMax/time.Second))
		}
		timeout = time.Duration(in.TimeoutSeconds) * time.Second
	}

	p = protocol.ExecParams{
		Argv:           in.Argv,
		Command:        in.Command,
		Cwd:            in.Cwd,
		Env:            in.Env,
		Stdin:          in.Stdin != "",
		TimeoutMs:      timeout.Milliseconds(),
		MaxOutputBytes: h.cfg.MaxOutputBytes,
		RunAs:          in.RunAs,
	}
	if err := p.Validate(); err != nil {
		return p, 0, err
	}
	return p, timeout, nil
}

func (h *handlers) runCommand(ctx context.Context, req mcp.CallToolRequest, in RunInput) *mcp.CallToolResult {
	const tool = "run_command"
	p, timeout, err := h.execParams(in)
	if err != nil {
		return errResult(err.Error())
	}
	c, res := h.begin(ctx, req, tool, in.Edge, execAsk(p, timeout), audit.Event{})
	if res != nil {
		return res
	}
	hasProgress := req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil
	if !hasProgress && timeout > clientPatience {
		if res := h.runAsJob(ctx, c, p, in.Stdin, timeout); res != nil {
			return res
		}
	}

	capt := newCapture(h.cfg.MaxOutputBytes)
	if hasProgress {
		pr := startProgress(ctx, req.Params.Meta.ProgressToken, h.cfg.Log)
		defer pr.stop()
		capt.progress = pr
	}
	var stdin io.Reader
	if p.Stdin {
		stdin = strings.NewReader(in.Stdin)
	}

	callCtx, cancel := context.WithTimeout(ctx, timeout+execGrace)
	defer cancel()
	start := time.Now()
	er, err := c.edge.Exec(callCtx, c.id, p, stdin, capt.write)
	elapsed := time.Since(start)

	out := capt.output(c.name, er)
	if out.DurationMs == 0 {
		out.DurationMs = elapsed.Milliseconds()
	}
	// Who stopped it: the client (cancellation), our deadline (the edge never answered in
	// time), or the edge itself (its timeout, reported in res.TimedOut).
	cancelled := ctx.Err() != nil
	if !cancelled && (errors.Is(err, context.DeadlineExceeded) || callCtx.Err() != nil && (err != nil || er.Cancelled)) {
		out.TimedOut, out.ExitCode = true, -1
		if out.Signal == "" {
			out.Signal = "SIGKILL"
		}
		err = nil
	}
	cancelled = cancelled || er.Cancelled && !out.TimedOut

	ev := audit.Event{ExitCode: audit.Ptr(out.ExitCode), DurationMs: audit.Ptr(out.DurationMs),
		Bytes: audit.Ptr(capt.total())}
	switch {
	case cancelled:
		c.end("cancelled", context.Canceled, ev)
		return errResultWith(fmt.Sprintf("run_command on %q was cancelled: the process group was killed; output captured until then is below", c.name), out)
	case out.TimedOut:
		c.end("timeout", errors.New("timed out"), ev)
		return errResultWith(fmt.Sprintf("run_command on %q timed out after %s and was killed: raise timeout_seconds (max %d) or split the work; output captured until then is below",
			c.name, timeout, int64(h.cfg.ExecTimeoutMax/time.Second)), out)
	case errors.Is(err, gateway.ErrDisconnected):
		// The process may have run: return what was captured, with no exit status known.
		out.ExitCode = -1
		c.end("error", err, ev)
		return errResultWith(edgeMessage(c.name, err)+"; output captured until then is below", out)
	case err != nil:
		c.end(outcomeOf(err), err, audit.Event{DurationMs: audit.Ptr(elapsed.Milliseconds())})
		return errResult(edgeMessage(c.name, err))
	}
	c.end("ok", nil, ev)
	return okResult(out)
}

// A client that sends no progress notifications gives up on a request after its own timeout
// (60 s in the official SDKs). A run_command asking longer than clientPatience from such a
// client runs as a background job instead; the call waits up to jobAnswerWait for it and
// then answers with the job's id, so the work is neither cut short nor lost.
const (
	clientPatience       = 60 * time.Second
	defaultJobAnswerWait = 45 * time.Second
)

// runAsJob runs p as a job and answers with its output once it ends, or with its job_id
// while it still runs. A nil result means the edge runs no jobs (a forward edge): the call
// then goes on as an ordinary exec.
func (h *handlers) runAsJob(ctx context.Context, c *edgeCall, p protocol.ExecParams, stdin string, timeout time.Duration) *mcp.CallToolResult {
	p.Stdin = false
	start := time.Now()
	st, err := c.edge.JobStart(ctx, c.id, protocol.JobStartParams{Exec: p, StdinData: stdin})
	var pe *protocol.Error
	if errors.As(err, &pe) && (pe.Code == protocol.CodeUnknownMethod || pe.Code == protocol.CodeUnsupported) {
		return nil
	}
	if err != nil {
		c.end(outcomeOf(err), err, audit.Event{})
		return errResult(edgeMessage(c.name, err))
	}
	jobID := c.name + jobIDSep + st.ID
	deadline := start.Add(h.cfg.JobAnswerWait)
	for st.Status == protocol.JobRunning && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			c.end("cancelled", ctx.Err(), audit.Event{Path: jobID})
			return errResult(fmt.Sprintf("the call was cancelled; job %s keeps running on %q: cancel_command stops it", jobID, c.name))
		case <-time.After(jobPoll):
		}
		if st, err = c.edge.JobGet(ctx, c.id, protocol.JobGetParams{ID: st.ID, MaxBytes: min(h.cfg.MaxOutputBytes, protocol.MaxJobRead)}); err != nil {
			c.end(outcomeOf(err), err, audit.Event{Path: jobID})
			return errResult(jobMessage(c.name, err) + "; job_id " + jobID)
		}
	}
	j := jobOutput(c.name, st)
	out := RunOutput{Edge: c.name, ExitCode: -1, Signal: j.Signal, Stdout: j.Output, Stderr: "",
		StdoutTruncated: j.Truncated || j.NextSince < j.OutputSize, TimedOut: j.Status == protocol.JobTimedOut,
		DurationMs: time.Since(start).Milliseconds(), JobID: jobID}
	if j.ExitCode != nil {
		out.ExitCode = *j.ExitCode
	}
	ev := audit.Event{Path: jobID, ExitCode: audit.Ptr(out.ExitCode), DurationMs: audit.Ptr(out.DurationMs)}
	switch j.Status {
	case protocol.JobRunning:
		c.end("ok", nil, ev)
		return errResultWith(fmt.Sprintf("still running after %s as background job %s (this client waits for no call longer than a minute): "+
			"follow it with get_command job_id=%s since=%d wait_seconds=30", h.cfg.JobAnswerWait, jobID, jobID, j.NextSince), out)
	case protocol.JobTimedOut:
		c.end("timeout", errors.New("timed out"), ev)
		return errResultWith(fmt.Sprintf("run_command on %q timed out after %s and was killed", c.name, timeout), out)
	}
	c.end("ok", nil, ev)
	return okResult(out)
}

// execAsk is what an exec asks, for the policy and the audit log.
func execAsk(p protocol.ExecParams, timeout time.Duration) ask {
	return ask{argv: p.Argv, command: p.Command, cwd: p.Cwd, env: p.Env, timeout: timeout}
}

// envNames lists env names for the audit log (never values), sorted.
func envNames(env map[string]string) []string {
	if len(env) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(env))
}

// capture collects a process's output as the edge streams it, capped per stream, and feeds
// the progress streamer.
type capture struct {
	max      int64
	mu       sync.Mutex
	stdout   []byte
	stderr   []byte
	outCut   bool
	errCut   bool
	seen     int64
	progress *progress
}

func newCapture(max int64) *capture { return &capture{max: max} }

// write is the Fleet's output callback. b is only valid during the call: it is copied.
func (c *capture) write(t protocol.FrameType, b []byte) {
	c.mu.Lock()
	c.seen += int64(len(b))
	switch t {
	case protocol.FrameStdout:
		c.stdout, c.outCut = appendCapped(c.stdout, b, c.max, c.outCut)
	case protocol.FrameStderr:
		c.stderr, c.errCut = appendCapped(c.stderr, b, c.max, c.errCut)
	}
	c.mu.Unlock()
	if c.progress != nil {
		c.progress.add(b)
	}
}

func appendCapped(buf, b []byte, max int64, cut bool) ([]byte, bool) {
	room := max - int64(len(buf))
	if room <= 0 {
		return buf, cut || len(b) > 0
	}
	if int64(len(b)) > room {
		return append(buf, b[:room]...), true
	}
	return append(buf, b...), cut
}

// total is the bytes of output captured (for the audit log).
func (c *capture) total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(len(c.stdout) + len(c.stderr))
}

// output builds the result from what was captured and what the edge reported.
func (c *capture) output(edge string, res protocol.ExecResult) RunOutput {
	c.mu.Lock()
	defer c.mu.Unlock()
	return RunOutput{
		Edge:            edge,
		ExitCode:        res.ExitCode,
		Signal:          res.Signal,
		Stdout:          strings.ToValidUTF8(string(c.stdout), "\uFFFD"),
		Stderr:          strings.ToValidUTF8(string(c.stderr), "\uFFFD"),
		StdoutTruncated: c.outCut || res.StdoutTruncated,
		StderrTruncated: c.errCut || res.StderrTruncated,
		TimedOut:        res.TimedOut,
		DurationMs:      res.DurationMs,
	}
}

// progress sends notifications/progress with new output, coalesced: one sender goroutine,
// at most one notification in flight, at most one per progressEvery.
type progress struct {
	token   mcp.ProgressToken
	srv     *server.MCPServer
	ctx     context.Context
	log     *slog.Logger
	mu      sync.Mutex
	pending []byte
	dropped int64
	kick    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

// startProgress starts the sender; it returns a progress whose add is a no-op when the
// request context carries no server (nothing to send through).
func startProgress(ctx context.Context, token mcp.ProgressToken, log *slog.Logger) *progress {
	p := &progress{token: token, srv: server.ServerFromContext(ctx), ctx: ctx, log: log,
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	if p.srv == nil {
		return p
	}
	p.wg.Add(1)
	go p.run()
	return p
}

// add queues new output for the next notification, keeping at most progressChunk bytes.
func (p *progress) add(b []byte) {
	if p.srv == nil || len(b) == 0 {
		return
	}
	p.mu.Lock()
	room := progressChunk - len(p.pending)
	if room < len(b) {
		p.dropped += int64(len(b) - max(room, 0))
		b = b[:max(room, 0)]
	}
	p.pending = append(p.pending, b...)
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *progress) run() {
	defer p.wg.Done()
	var seq float64
	heartbeat := time.NewTimer(progressHeartbeat)
	defer heartbeat.Stop()
	start := time.Now()
	for {
		var msg string
		select {
		case <-p.done:
			return
		case <-p.ctx.Done():
			return
		case <-heartbeat.C:
			msg = fmt.Sprintf("still running after %s", time.Since(start).Round(time.Second))
		case <-p.kick:
			p.mu.Lock()
			msg = strings.ToValidUTF8(string(p.pending), "\uFFFD")
			if p.dropped > 0 {
				msg += fmt.Sprintf("\n[%d bytes of output not streamed; the result carries the output]\n", p.dropped)
			}
			p.pending, p.dropped = nil, 0
			p.mu.Unlock()
		}
		if msg == "" {
			continue
		}
		seq++
		err := p.srv.SendNotificationToClient(p.ctx, "notifications/progress", map[string]any{
			"progressToken": p.token,
			"progress":      seq,
			"message":       msg,
		})
		if err != nil {
			p.log.Debug("progress notification not sent", "err", err)
		}
		heartbeat.Reset(progressHeartbeat)
		// Coalesce: whatever arrives in the next interval goes out as one notification.
		t := time.NewTimer(progressEvery)
		select {
		case <-p.done:
			t.Stop()
			return
		case <-p.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// stop ends the sender and waits for it; output not yet sent is left to the result.
func (p *progress) stop() {
	close(p.done)
	p.wg.Wait()
}
