package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// How a command runs on a forward edge, and how it is killed.
//
// The exec request carries one command line for the login user's shell (which must be a
// POSIX shell, as on OpenSSH and dropbear devices). Built by BuildCommandLine, it is
//
//	echo $$; export NAME='value' …; cd 'cwd' && exec 'argv0' 'argv1' …
//
// (with command instead of argv: exec /bin/sh -c 'command'). Every argument is single-quoted
// with ' written as '\'' so it arrives byte for byte. sshd starts that shell in a new session
// (setsid), so the shell's pid, which it prints first on stdout and which the gateway strips
// from the output, is the process group of everything the command starts (no job control in a
// non-interactive shell); exec keeps the command itself as that pid, so its exit status and
// signal come back unaltered. On timeout or cancellation the gateway opens a second session
// and runs kill -9 -PGID there, then waits KillGrace for the exit status. A child that calls
// setsid itself leaves the group and survives, as it would under the companion. A device
// whose sshd does not setsid (none known) only has the command itself killed.

// maxCommandLine bounds the command line: Linux passes it to the shell as one argument,
// which may not exceed 128 KiB (MAX_ARG_STRLEN).
const maxCommandLine = 128<<10 - 1024

// maxTimeoutMs bounds a command's timeout (30 days), whatever the caller asks.
const maxTimeoutMs = 30 * 24 * 3600 * 1000

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ShellQuote quotes s for a POSIX shell: single quotes, each ' written as '\”. The shell
// reads the result back as exactly s, whatever bytes it holds (NUL excepted).
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// BuildCommandLine is the command line the exec request carries for p (see the comment on
// how commands run). It refuses what a shell cannot carry: env names that are not shell
// identifiers, argv[0] starting with '-', and lines longer than 127 KiB.
func BuildCommandLine(p protocol.ExecParams) (string, error) {
	var b strings.Builder
	b.WriteString("echo $$; ")
	if len(p.Env) > 0 {
		b.WriteString("export")
		for _, k := range slices.Sorted(maps.Keys(p.Env)) {
			if !envNameRE.MatchString(k) {
				return "", protocol.Errorf(protocol.CodeBadRequest, "env name %q cannot be set on a forward edge: use letters, digits and '_', not starting with a digit", trunc(k, 40))
			}
			b.WriteString(" " + k + "=" + ShellQuote(p.Env[k]))
		}
		b.WriteString("; ")
	}
	if p.Cwd != "" {
		b.WriteString("cd " + ShellQuote(p.Cwd) + " && ")
	}
	b.WriteString("exec")
	if p.Command != "" {
		b.WriteString(" /bin/sh -c " + ShellQuote(p.Command))
	} else {
		if strings.HasPrefix(p.Argv[0], "-") {
			return "", protocol.Errorf(protocol.CodeBadRequest, "argv[0] %q starts with '-': give the program's path", trunc(p.Argv[0], 40))
		}
		for _, a := range p.Argv {
			b.WriteString(" " + ShellQuote(a))
		}
	}
	if b.Len() > maxCommandLine {
		return "", protocol.Errorf(protocol.CodeBadRequest, "the command line is %d bytes quoted (max %d on a forward edge): put long input in a file with upload_file or pass it on stdin", b.Len(), maxCommandLine)
	}
	return b.String(), nil
}

// Exec implements gateway.Edge: the command runs in its own SSH session (see
// BuildCommandLine), stdin is piped, stdout and stderr stream to out capped at
// p.MaxOutputBytes each, and a timeout or a cancelled ctx kills its process group.
func (e *Edge) Exec(ctx context.Context, rid string, p protocol.ExecParams, stdin io.Reader,
	out func(t protocol.FrameType, b []byte)) (protocol.ExecResult, error) {
	var res protocol.ExecResult
	p.Stdin = stdin != nil
	if err := p.Validate(); err != nil {
		return res, fmt.Errorf("exec: %w", err)
	}
	if p.RunAs != "" {
		return res, protocol.Errorf(CodeUnsupported, "run_as needs the mcp-ssh-edge companion: forward edge %s runs commands as its SSH user %s", e.h.entry.Name, e.h.entry.User)
	}
	line, err := BuildCommandLine(p)
	if err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	c, release, err := e.begin(ctx)
	if err != nil {
		return res, err
	}
	defer release()
	r, err := e.startRun(c, line, stdin, out, p.MaxOutputBytes)
	if err != nil {
		return res, err
	}
	return r.wait(ctx, time.Duration(min(p.TimeoutMs, maxTimeoutMs))*time.Millisecond)
}

// run is one command started on a session channel.
type run struct {
	e      *Edge
	c      *conn
	ch     ssh.Channel
	start  time.Time
	pgid   chan int      // the process group from the stdout header, then closed; closed alone without one
	exited chan struct{} // closed at exit-status or exit-signal
	ended  chan struct{} // closed when the channel's requests end (channel closed)
	output sync.WaitGroup

	mu      sync.Mutex // guards the fields below and serializes out
	code    int
	signal  string
	gotExit bool
	outCap  *cappedOut
	errCap  *cappedOut
}

// Session opens refused by the device are retried this long: sshd frees a closed session a
// moment after the client sees it closed, so calls in quick succession can find its MaxSessions
// (10 per connection) still taken although fewer are open.
const (
	sessionRetryFor   = time.Second
	sessionRetryFirst = 5 * time.Millisecond
)

// openSession opens a session channel, retrying a refusal briefly (see retryRefused).
func openSession(c *conn) (ssh.Channel, <-chan *ssh.Request, error) {
	var reqs <-chan *ssh.Request
	ch, err := retryRefused(func() (ssh.Channel, error) {
		ch, r, err := c.client.OpenChannel("session", nil)
		reqs = r
		return ch, err
	})
	return ch, reqs, err
}

// retryRefused calls open until it succeeds or fails otherwise than by the device refusing
// the channel, for at most sessionRetryFor, with growing pauses.
func retryRefused[T any](open func() (T, error)) (T, error) {
	deadline := time.Now().Add(sessionRetryFor)
	pause := sessionRetryFirst
	for {
		v, err := open()
		var oce *ssh.OpenChannelError
		if err == nil || !errors.As(err, &oce) || time.Now().Add(pause).After(deadline) {
			return v, err
		}
		time.Sleep(pause)
		pause = min(2*pause, 100*time.Millisecond)
	}
}

// startRun opens a session channel, sends the exec request and starts the readers.
func (e *Edge) startRun(c *conn, line string, stdin io.Reader, out func(protocol.FrameType, []byte), max int64) (*run, error) {
	ch, reqs, err := openSession(c)
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			return nil, fmt.Errorf("forward edge %s refused a new SSH session (%s): too many at once for its sshd (MaxSessions); retry shortly", e.h.entry.Name, oce.Message)
		}
		return nil, e.lost(c, "session open", fmt.Errorf("open SSH session on %s: %w", e.h.entry.Name, err))
	}
	r := &run{e: e, c: c, ch: ch, pgid: make(chan int, 1), exited: make(chan struct{}), ended: make(chan struct{})}
	r.outCap = &cappedOut{t: protocol.FrameStdout, max: max, out: out, mu: &r.mu}
	r.errCap = &cappedOut{t: protocol.FrameStderr, max: max, out: out, mu: &r.mu}
	go r.requests(reqs)
	ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{line}))
	if err != nil || !ok {
		ch.Close()
		if err == nil {
			err = errors.New("the device's sshd refused the exec request")
		}
		return nil, e.lost(c, "exec", fmt.Errorf("exec on %s: %w", e.h.entry.Name, err))
	}
	r.start = time.Now()
	r.output.Add(2)
	go func() {
		defer r.output.Done()
		r.readStdout()
	}()
	go func() {
		defer r.output.Done()
		copyChunks(r.errCap, ch.Stderr())
	}()
	go func() {
		if stdin != nil {
			_, _ = io.CopyBuffer(ch, stdin, make([]byte, 32<<10))
		}
		_ = ch.CloseWrite()
	}()
	return r, nil
}

// requests collects exit-status and exit-signal, answering no to anything else.
func (r *run) requests(reqs <-chan *ssh.Request) {
	defer close(r.ended)
	for req := range reqs {
		switch req.Type {
		case "exit-status":
			var m struct{ Status uint32 }
			if ssh.Unmarshal(req.Payload, &m) == nil {
				r.setExit(int(m.Status), "")
			}
		case "exit-signal":
			var m struct {
				Signal     string
				CoreDumped bool
				Error      string
				Lang       string
			}
			if ssh.Unmarshal(req.Payload, &m) == nil {
				r.setExit(-1, "SIG"+strings.TrimPrefix(m.Signal, "SIG"))
			}
		}
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
	}
}

func (r *run) setExit(code int, sig string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gotExit {
		return
	}
	r.code, r.signal, r.gotExit = code, sig, true
	close(r.exited)
}

// maxHeader bounds the "PGID\n" header line.
const maxHeader = 24

// readStdout strips the "PGID\n" header the command line prints first, then streams the rest.
// A first line that is not a process id is kept as output (and the group is not known).
func (r *run) readStdout() {
	buf := make([]byte, 32<<10)
	var head []byte
	header := true
	endHeader := func(pg int) {
		if pg > 0 {
			r.pgid <- pg
		}
		close(r.pgid)
		header = false
	}
	for {
		n, err := r.ch.Read(buf)
		b := buf[:n]
		if header && len(b) > 0 {
			i := bytes.IndexByte(b, '\n')
			switch {
			case i >= 0 && len(head)+i <= maxHeader:
				head = append(head, b[:i]...)
				b = b[i+1:]
				if pg, perr := strconv.Atoi(string(head)); perr == nil && pg > 1 {
					endHeader(pg)
				} else {
					r.outCap.write(append(head, '\n'))
					endHeader(0)
				}
			case i >= 0 || len(head)+len(b) > maxHeader:
				r.outCap.write(head)
				endHeader(0)
			default:
				head, b = append(head, b...), nil
			}
		}
		if len(b) > 0 {
			r.outCap.write(b)
		}
		if err != nil {
			if header {
				r.outCap.write(head)
				endHeader(0)
			}
			return
		}
	}
}

func copyChunks(w *cappedOut, rd io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := rd.Read(buf)
		if n > 0 {
			w.write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// cappedOut passes output to the callback up to max bytes, then counts it as truncated and
// keeps draining, so the remote command never blocks on a full pipe.
type cappedOut struct {
	t         protocol.FrameType
	max, sent int64
	truncated bool
	out       func(protocol.FrameType, []byte)
	mu        *sync.Mutex
}

func (w *cappedOut) write(b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.max - w.sent; int64(len(b)) > room {
		b = b[:max(room, 0)]
		w.truncated = true
	}
	if len(b) == 0 {
		return
	}
	w.sent += int64(len(b))
	if w.out != nil {
		w.out(w.t, b)
	}
}

// wait waits for the command to end, killing its process group on timeout or cancellation.
func (r *run) wait(ctx context.Context, timeout time.Duration) (protocol.ExecResult, error) {
	var res protocol.ExecResult
	opts := r.e.h.f.opts
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	outputDone := make(chan struct{})
	go func() {
		r.output.Wait()
		close(outputDone)
	}()
	var grace, killWait <-chan time.Time
	ctxDone, timerC, exited, outCh := ctx.Done(), timer.C, r.exited, (<-chan struct{})(outputDone)
	killed, outFinished := false, false
	kill := func() {
		if !killed {
			killed, ctxDone, timerC = true, nil, nil
			r.kill()
			killWait = time.After(opts.KillGrace)
		}
	}
loop:
	for {
		select {
		case <-exited:
			exited = nil
			if outFinished {
				break loop
			}
			grace = time.After(opts.PipeGrace)
		case <-outCh:
			outCh, outFinished = nil, true
			if exited == nil {
				break loop
			}
		case <-grace:
			break loop // background children hold the pipes open: stop reading
		case <-r.ended:
			break loop
		case <-timerC:
			res.TimedOut = true
			kill()
		case <-ctxDone:
			res.Cancelled = true
			kill()
		case <-killWait:
			break loop
		}
	}
	r.ch.Close()
	select {
	case <-r.ended:
	case <-time.After(opts.KillGrace):
		// The device does not even confirm the close: the connection is stuck. Drop it
		// (the host reconnects) rather than hang the call until keepalives notice.
		opts.Log.Warn("forward: session close not confirmed, dropping the connection", "edge", r.e.h.entry.Name)
		r.c.close()
		<-r.ended
	}
	r.output.Wait()
	res.DurationMs = time.Since(r.start).Milliseconds()
	res = r.fill(res)
	r.mu.Lock()
	got := r.gotExit
	r.mu.Unlock()
	switch {
	case got:
	case killed:
		res.ExitCode, res.Signal = -1, "SIGKILL"
	default:
		return res, r.e.lost(r.c, "run_command", protocol.Errorf(protocol.CodeIO,
			"forward edge %s closed the session without an exit status", r.e.h.entry.Name))
	}
	return res, nil
}

// fill copies exit status and truncation into res.
func (r *run) fill(res protocol.ExecResult) protocol.ExecResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res.ExitCode, res.Signal = r.code, r.signal
	if !r.gotExit {
		res.ExitCode = -1
	}
	res.StdoutTruncated, res.StderrTruncated = r.outCap.truncated, r.errCap.truncated
	return res
}

// kill kills the command's process group from a second session, in the background: the
// exit status that causes ends the wait. Without a known group it closes the channel.
func (r *run) kill() {
	opts := r.e.h.f.opts
	go func() {
		var pg int
		select {
		case v, ok := <-r.pgid:
			if !ok {
				r.ch.Close()
				return
			}
			pg = v
		case <-time.After(opts.KillGrace):
			r.ch.Close()
			return
		}
		// Before the exit status arrives the command's pid is still held by it (sshd has not
		// reaped it), so killing it by pid is safe; after, only its group is killed (a pid
		// is never reused while a group of that id has a member).
		single := true
		select {
		case <-r.exited:
			single = false
		default:
		}
		if err := killGroup(r.c, pg, single, opts.KillGrace); err != nil {
			opts.Log.Warn("forward: killing the process group failed; closing the session", "edge", r.e.h.entry.Name, "pgid", pg, "err", err)
			r.ch.Close()
		}
	}()
}

// killGroup runs kill -9 -pg on a new session of c (and, with single, kill -9 pg when there
// is no such group: an sshd that did not make the command a group leader), waiting at most d.
func killGroup(c *conn, pg int, single bool, d time.Duration) error {
	cmd := fmt.Sprintf("kill -9 -%d", pg)
	if single {
		cmd = fmt.Sprintf("kill -9 -%d 2>/dev/null || kill -9 %d", pg, pg)
	}
	done := make(chan error, 1)
	go func() {
		s, err := retryRefused(c.client.NewSession)
		if err != nil {
			done <- fmt.Errorf("open kill session: %w", err)
			return
		}
		defer s.Close()
		out, err := s.CombinedOutput(cmd)
		if err != nil {
			err = fmt.Errorf("kill -9 -%d: %w: %s", pg, err, bytes.TrimSpace(out))
		}
		done <- err
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errors.New("kill session got no answer")
	}
}
