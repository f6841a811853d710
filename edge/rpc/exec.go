package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	if err := c.req.DecodeParams(&p); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, protocol.Errorf(protocol.CodeBadRequest, "exec: %v", err)
	}
	c.entry.Argv, c.entry.Command = p.Argv, p.Command
	path, err := s.checkExec(&p)
	if err != nil {
		return nil, err
	}
	if err := checkCwd(p.Cwd); err != nil {
		return nil, err
	}
	cred, userEnv, err := s.runAs(p.RunAs)
	if err != nil {
		return nil, err
	}

	cmd := &exec.Cmd{Path: path, Args: p.Argv, Dir: p.Cwd}
	if p.Command != "" {
		cmd.Path, cmd.Args = "/bin/sh", []string{"/bin/sh", "-c", p.Command}
	}
	cmd.Env = mergeEnv(mergeEnv(os.Environ(), userEnv), p.Env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.WaitDelay = pipeGrace
	stdout := &cappedWriter{fw: c.w, t: protocol.FrameStdout, max: p.MaxOutputBytes}
	stderr := &cappedWriter{fw: c.w, t: protocol.FrameStderr, max: p.MaxOutputBytes}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	var stdin io.WriteCloser
	if p.Stdin {
		if stdin, err = cmd.StdinPipe(); err != nil {
			return nil, protocol.Errorf(protocol.CodeInternal, "stdin pipe: %v", err)
		}
	}

	start := time.Now()
	if err := cmd.Start(); err != nil {
		code := protocol.CodeIO
		if errors.Is(err, os.ErrNotExist) {
			code = protocol.CodeNotFound
		}
		return nil, protocol.Errorf(code, "start %s: %v", cmd.Path, err)
	}
	pgid := cmd.Process.Pid

	events := make(chan streamEvent, 1)
	var watch sync.WaitGroup
	watch.Go(func() { events <- watchStream(c.fr, stdin) })
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()

	timer := time.NewTimer(time.Duration(p.TimeoutMs) * time.Millisecond)
	defer timer.Stop()
	res := protocol.ExecResult{}
	var waitErr error
	killed := false
	kill := func() {
		if !killed {
			killed = true
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}
wait:
	for {
		select {
		case waitErr = <-waitDone:
			break wait
		case <-timer.C:
			res.TimedOut = true
			kill()
		case ev := <-events:
			if ev != 0 {
				res.Cancelled = true
				kill()
			}
		case <-ctx.Done():
			res.Cancelled = true
			kill()
		}
	}
	res.DurationMs = time.Since(start).Milliseconds()
	// Unblock the stream watcher (it may sit in a read) before the caller writes the result.
	if rd, ok := c.stream.(readDeadliner); ok {
		_ = rd.SetReadDeadline(time.Now())
		watch.Wait()
		_ = rd.SetReadDeadline(time.Time{})
	}
	res.StdoutTruncated, res.StderrTruncated = stdout.truncated, stderr.truncated
	ps := cmd.ProcessState
	if ps == nil {
		return nil, protocol.Errorf(protocol.CodeIO, "wait %s: %v", cmd.Path, waitErr)
	}
	res.ExitCode = ps.ExitCode()
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res.ExitCode = -1
		res.Signal = unix.SignalName(ws.Signal())
		if res.Signal == "" {
			res.Signal = fmt.Sprintf("SIG%d", int(ws.Signal()))
		}
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

// checkCwd refuses a working directory that does not exist or is not a directory.
func checkCwd(cwd string) error {
	if cwd == "" {
		return nil
	}
	st, err := os.Stat(cwd)
	if err != nil {
		return protocol.Errorf(protocol.CodeNotFound, "cwd %s: %v", cwd, errors.Unwrap(err))
	}
	if !st.IsDir() {
		return protocol.Errorf(protocol.CodeBadRequest, "cwd %s is not a directory", cwd)
	}
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

// mergeEnv overlays over on the edge's own environment; the result is sorted by name.
func mergeEnv(base []string, over map[string]string) []string {
	m := make(map[string]string, len(base)+len(over))
	for _, kv := range base {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				m[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	maps.Copy(m, over)
	out := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
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
