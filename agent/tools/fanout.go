package tools

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/policy"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Fan-out bounds.
const (
	defaultFanout = 8
	maxFanout     = 64
)

// FanoutInput is run_on_edges' arguments: a target plus run_command's.
type FanoutInput struct {
	Target         string            `json:"target" jsonschema:"which edges: a label selector over the labels bound at the gateway (labels in get_status): comma-separated terms key=value, key!=value, key (present) or !key (absent), all must hold, e.g. role=web,site=paris; * for every known edge"`
	Argv           []string          `json:"argv,omitempty" jsonschema:"program and arguments, run directly without a shell (preferred). Give exactly one of argv or command"`
	Command        string            `json:"command,omitempty" jsonschema:"a shell command line run by /bin/sh -c; only for pipes or redirection. Give exactly one of argv or command"`
	Cwd            string            `json:"cwd,omitempty" jsonschema:"working directory on each edge (absolute path)"`
	Env            map[string]string `json:"env,omitempty" jsonschema:"extra environment variables (name to value)"`
	Stdin          string            `json:"stdin,omitempty" jsonschema:"text fed to each process's standard input"`
	TimeoutSeconds int               `json:"timeout_seconds,omitempty" jsonschema:"per-edge timeout in seconds; default the gateway's EXEC_TIMEOUT"`
	RunAs          string            `json:"run_as,omitempty" jsonschema:"user to run as; only users each edge lists in EDGE_ALLOW_RUN_AS"`
	Concurrency    int               `json:"concurrency,omitempty" jsonschema:"edges run at once (default 8, max 64)"`
}

// FanoutResult is one edge's outcome: run_command's fields plus error.
type FanoutResult struct {
	Edge            string `json:"edge" jsonschema:"the edge's name (or fingerprint when it has none)"`
	ExitCode        int    `json:"exit_code" jsonschema:"the process's exit status; -1 when killed by a signal or when it did not run (see error)"`
	Signal          string `json:"signal" jsonschema:"the signal that killed the process; empty otherwise"`
	Stdout          string `json:"stdout" jsonschema:"standard output, cut at MAX_OUTPUT_BYTES"`
	Stderr          string `json:"stderr" jsonschema:"standard error, cut at MAX_OUTPUT_BYTES"`
	StdoutTruncated bool   `json:"stdout_truncated" jsonschema:"true when stdout was cut"`
	StderrTruncated bool   `json:"stderr_truncated" jsonschema:"true when stderr was cut"`
	TimedOut        bool   `json:"timed_out" jsonschema:"true when the command hit timeout_seconds and was killed"`
	DurationMs      int64  `json:"duration_ms" jsonschema:"wall-clock run time in milliseconds"`
	Error           string `json:"error" jsonschema:"why this edge has no normal result (offline, refused, timed out, disconnected); empty when the command ran to its end (whatever its exit code)"`
}

// FanoutOutput is run_on_edges' result.
type FanoutOutput struct {
	Target    string         `json:"target" jsonschema:"the selector as given"`
	Matched   int            `json:"matched" jsonschema:"number of edges the target matched"`
	Succeeded int            `json:"succeeded" jsonschema:"edges where the command ran and exited 0"`
	Failed    int            `json:"failed" jsonschema:"edges with a non-zero exit or an error"`
	Results   []FanoutResult `json:"results" jsonschema:"one entry per matched edge, sorted by edge name"`
}

func runOnEdgesTool() mcp.Tool {
	return mcp.NewTool("run_on_edges",
		mcp.WithDescription("Run the same program on every edge a label selector matches (e.g. role=web,site=paris, or * for all), "+
			"a few at a time, and return each edge's exit code, stdout, stderr and error. "+
			"An edge that is offline, slow or failing gets its own error entry and never hides the others. "+
			"Labels are the ones bound at the gateway (labels in get_status). For one edge use run_command."),
		hints("Run a command on many edges", false, true, false, true),
		mcp.WithInputSchema[FanoutInput](),
		mcp.WithOutputSchema[FanoutOutput](),
	)
}

// matchEdges lists the known edges whose gateway-bound labels satisfy sel, sorted by name.
func matchEdges(edges []gateway.EdgeStatus, sel policy.Selector) []gateway.EdgeStatus {
	var out []gateway.EdgeStatus
	for _, e := range edges {
		if sel.Matches(e.Labels) {
			out = append(out, e)
		}
	}
	return out
}

func (h *handlers) runOnEdges(ctx context.Context, req mcp.CallToolRequest, in FanoutInput) *mcp.CallToolResult {
	const tool = "run_on_edges"
	if strings.TrimSpace(in.Target) == "" {
		return errResult("target is required: a label selector such as role=web,site=paris, or * for every edge")
	}
	sel, err := policy.ParseSelector(in.Target)
	if err != nil {
		return errResult("target: " + err.Error())
	}
	conc := in.Concurrency
	switch {
	case conc == 0:
		conc = defaultFanout
	case conc < 0 || conc > maxFanout:
		return errResult(fmt.Sprintf("concurrency must be between 1 and %d", maxFanout))
	}
	run := RunInput{Edge: "*", Argv: in.Argv, Command: in.Command, Cwd: in.Cwd, Env: in.Env, Stdin: in.Stdin,
		TimeoutSeconds: in.TimeoutSeconds, RunAs: in.RunAs}
	p, timeout, err := h.execParams(run)
	if err != nil {
		return errResult(err.Error())
	}
	edges := matchEdges(visibleEdges(h.fleet.Edges(false), h.edgeFilter(ctx)), sel)
	out := FanoutOutput{Target: in.Target, Matched: len(edges), Results: make([]FanoutResult, len(edges))}
	if len(edges) == 0 {
		return errResultWith(fmt.Sprintf("target %q matches no edge: get_status shows each edge's labels", oneLine(in.Target)), out)
	}

	var pr *progress
	if req.Params.Meta != nil && req.Params.Meta.ProgressToken != nil {
		pr = startProgress(ctx, req.Params.Meta.ProgressToken, h.cfg.Log)
		defer pr.stop()
	}
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for i, e := range edges {
		ref := e.Name
		if ref == "" {
			ref = e.Fingerprint
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				out.Results[i] = FanoutResult{Edge: ref, ExitCode: -1, Error: "not run: the call was cancelled"}
				return
			}
			r := h.execOn(ctx, req, tool, ref, e, p, timeout, in.Stdin)
			out.Results[i] = r
			if pr != nil {
				mu.Lock()
				done++
				msg := fmt.Sprintf("%d/%d %s: exit %d %s\n", done, len(edges), ref, r.ExitCode, r.Error)
				mu.Unlock()
				pr.add([]byte(msg))
			}
		})
	}
	wg.Wait()
	for _, r := range out.Results {
		if r.Error == "" && r.ExitCode == 0 {
			out.Succeeded++
		} else {
			out.Failed++
		}
	}
	return okResult(out)
}

// execOn runs p on one edge of a fan-out and turns every outcome into a result entry.
func (h *handlers) execOn(ctx context.Context, req mcp.CallToolRequest, tool, ref string, e gateway.EdgeStatus, p protocol.ExecParams,
	timeout time.Duration, stdinText string) FanoutResult {
	res := FanoutResult{Edge: ref, ExitCode: -1}
	if !e.Connected {
		res.Error = edgeMessage(ref, gateway.ErrEdgeOffline)
		return res
	}
	c, refused := h.begin(ctx, req, tool, cmp.Or(e.Fingerprint, ref), execAsk(p, timeout), audit.Event{})
	if refused != nil {
		res.Error = resultMessage(refused)
		return res
	}
	capt := newCapture(h.cfg.MaxOutputBytes)
	var stdin io.Reader
	if p.Stdin {
		stdin = strings.NewReader(stdinText)
	}
	callCtx, cancel := context.WithTimeout(ctx, timeout+execGrace)
	defer cancel()
	start := time.Now()
	r, err := c.edge.Exec(callCtx, c.id, p, stdin, capt.write)
	o := capt.output(ref, r)
	res = FanoutResult{Edge: ref, ExitCode: o.ExitCode, Signal: o.Signal, Stdout: o.Stdout, Stderr: o.Stderr,
		StdoutTruncated: o.StdoutTruncated, StderrTruncated: o.StderrTruncated, TimedOut: o.TimedOut, DurationMs: o.DurationMs}
	if res.DurationMs == 0 {
		res.DurationMs = time.Since(start).Milliseconds()
	}
	ev := audit.Event{ExitCode: audit.Ptr(res.ExitCode), DurationMs: audit.Ptr(res.DurationMs), Bytes: audit.Ptr(capt.total())}
	switch {
	case ctx.Err() != nil:
		res.ExitCode, res.Error = -1, "cancelled: the process group was killed"
		c.end("cancelled", context.Canceled, ev)
	case res.TimedOut || callCtx.Err() != nil:
		res.TimedOut, res.ExitCode = true, -1
		res.Error = fmt.Sprintf("timed out after %s and was killed", timeout)
		c.end("timeout", errors.New("timed out"), ev)
	case err != nil:
		res.ExitCode, res.Error = -1, edgeMessage(ref, err)
		c.end(outcomeOf(err), err, ev)
	default:
		c.end("ok", nil, ev)
	}
	return res
}
