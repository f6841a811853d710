package rpc

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// pipeGrace bounds how long exec waits for output pipes that grandchildren keep open after the
// main process exited or the group was killed.
const pipeGrace = 2 * time.Second

// streamEvent is what the stream watcher saw after the request: a cancel frame or the end of
// the gateway's side.
type streamEvent int

const (
	eventCancel streamEvent = iota + 1
	eventGone
)

// exec runs one process and streams its output; see protocol.ExecParams.
func (s *Server) exec(ctx context.Context, c *call) (any, error) {
	var p protocol.ExecParams
	if err := decodeValid(c, &p); err != nil {
		return nil, err
	}
	c.entry.Argv, c.entry.Command = p.Argv, p.Command
	pr, err := s.prepare(&p)
	if err != nil {
		return nil, err
	}
	r, err := startExec(c, pr, &p, s.nullInput())
	if err != nil {
		return nil, err
	}
	res, waitErr := r.wait(ctx, time.Duration(p.TimeoutMs)*time.Millisecond)
	if err := r.finish(c, &res, waitErr); err != nil {
		return nil, err
	}
	code := res.ExitCode
	c.entry.ExitCode = &code
	switch {
	case res.TimedOut:
		c.entry.Outcome = "timed_out"
	case res.Cancelled:
		c.entry.Outcome = "cancelled"
	}
	return res, nil
}

// execRun is one started exec: the process, its output writers, and the goroutines that
// watch the stream (stdin, cancel) and wait for the process.
type execRun struct {
	cmd            *exec.Cmd
	stdout, stderr *cappedWriter
	start          time.Time
	events         chan streamEvent // from watchStream
	watch          sync.WaitGroup   // watchStream
	waitDone       chan error       // cmd.Wait's result
}

// nullInput is the shared /dev/null for processes without input; nil (os/exec then opens
// it itself) if it cannot be opened.
func (s *Server) nullInput() *os.File {
	s.devNullOnce.Do(func() {
		f, err := os.Open(os.DevNull)
		if err != nil {
			s.log.Debug("cannot keep /dev/null open", "err", err)
			return
		}
		s.devNull = f
	})
	return s.devNull
}

// startExec starts pr with its output sent as frames on c (capped at p.MaxOutputBytes) and,
// when p.Stdin, its input fed from the data frames that follow the request; otherwise its
// input is null (an open /dev/null, or nil for os/exec to open one).
func startExec(c *call, pr proc, p *protocol.ExecParams, null *os.File) (*execRun, error) {
	cmd := pr.command()
	cmd.WaitDelay = pipeGrace
	r := &execRun{cmd: cmd, events: make(chan streamEvent, 1), waitDone: make(chan error, 1),
		stdout: &cappedWriter{fw: c.w, t: protocol.FrameStdout, max: p.MaxOutputBytes},
		stderr: &cappedWriter{fw: c.w, t: protocol.FrameStderr, max: p.MaxOutputBytes}}
	cmd.Stdout, cmd.Stderr = r.stdout, r.stderr
	var stdin io.WriteCloser
	if null != nil && !p.Stdin {
		cmd.Stdin = null
	}
	if p.Stdin {
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return nil, protocol.Errorf(protocol.CodeInternal, "stdin pipe: %v", err)
		}
	}
	r.start = time.Now()
	if err := cmd.Start(); err != nil {
		code := protocol.CodeIO
		if errors.Is(err, os.ErrNotExist) {
			code = protocol.CodeNotFound
		}
		return nil, protocol.Errorf(code, "start %s: %v", cmd.Path, err)
	}
	r.watch.Go(func() { r.events <- watchStream(c.fr, stdin) })
	go func() {
		awaitExit(cmd.Process.Pid)
		r.waitDone <- cmd.Wait()
	}()
	return r, nil
}

// wait waits for the process to end. On timeout, a cancel frame, the gateway going away or
// the edge shutting down (ctx) it kills the whole process group, once, and keeps waiting.
func (r *execRun) wait(ctx context.Context, timeout time.Duration) (res protocol.ExecResult, waitErr error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	for {
		select {
		case waitErr = <-r.waitDone:
			return res, waitErr
		case <-timer.C:
			res.TimedOut = true
			kill()
		case ev := <-r.events:
			if ev != 0 {
				res.Cancelled = true
				kill()
			}
		case <-ctx.Done():
			res.Cancelled = true
			kill()
		}
	}
}

// finish completes res once the process has ended: duration, truncation and exit status. It
// first stops the stream watcher (it may sit in a read), so the caller can write the result.
func (r *execRun) finish(c *call, res *protocol.ExecResult, waitErr error) error {
	res.DurationMs = time.Since(r.start).Milliseconds()
	if rd, ok := c.stream.(readDeadliner); ok {
		_ = rd.SetReadDeadline(time.Now())
		r.watch.Wait()
		_ = rd.SetReadDeadline(time.Time{})
	}
	res.StdoutTruncated, res.StderrTruncated = r.stdout.truncated, r.stderr.truncated
	if r.cmd.ProcessState == nil {
		return protocol.Errorf(protocol.CodeIO, "wait %s: %v", r.cmd.Path, waitErr)
	}
	res.ExitCode, res.Signal = exitStatus(r.cmd.ProcessState)
	return nil
}

// watchStream feeds stdin (if any) from data frames until the empty one, then waits for a
// cancel frame or the end of the stream. Stdin is closed when the body ends or the stream does.
func watchStream(fr *protocol.Reader, stdin io.WriteCloser) streamEvent {
	closeStdin := func() {
		if stdin != nil {
			stdin.Close()
			stdin = nil
		}
	}
	defer closeStdin()
	inBody := stdin != nil
	stdinOK := true
	for {
		typ, p, err := fr.Next()
		if err != nil {
			return eventGone
		}
		switch typ {
		case protocol.FrameCancel:
			return eventCancel
		case protocol.FrameData:
			if !inBody {
				continue
			}
			if len(p) == 0 {
				inBody = false
				closeStdin()
				continue
			}
			if stdinOK {
				if _, err := stdin.Write(p); err != nil {
					stdinOK = false // the process stopped reading; drain the rest of the body
				}
			}
		default:
			return eventGone
		}
	}
}

// cappedWriter sends process output as frames up to max bytes, then discards the rest (so the
// pipe keeps draining) and records the truncation. It never returns an error: a gateway that
// went away must not make the process block or die of SIGPIPE before it is killed.
type cappedWriter struct {
	fw        *frameWriter
	t         protocol.FrameType
	max       int64
	sent      int64
	truncated bool
	broken    bool
}

// Write implements io.Writer; exec's copier calls it from one goroutine.
func (w *cappedWriter) Write(p []byte) (int, error) {
	n := len(p)
	if room := w.max - w.sent; int64(len(p)) > room {
		p = p[:max(room, 0)]
		w.truncated = true
	}
	for len(p) > 0 && !w.broken {
		k := min(len(p), protocol.MaxDataFrame)
		if err := w.fw.frame(w.t, p[:k]); err != nil {
			w.broken = true
		}
		w.sent += int64(k)
		p = p[k:]
	}
	return n, nil
}
