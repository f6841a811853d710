package localfleet

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

const (
	// stopGrace is how long Stop waits after SIGTERM before it kills.
	stopGrace = 5 * time.Second
	// reapWait bounds how long Kill waits for a killed process to be reaped.
	reapWait = 10 * time.Second
	// maxKeptLog bounds what a Proc keeps of its output; Stderr says when it was cut.
	maxKeptLog = 64 << 20
)

// errExitedZero is a process that stopped on its own without an error.
var errExitedZero = errors.New("exited early with status 0")

// Proc is a child process of the fleet (a gateway, an edge, or any helper a test starts) in a
// process group of its own. Everything it writes to stderr is kept in memory, readable with
// Stderr, and copied to the writer StartProc was given.
type Proc struct {
	cmd  *exec.Cmd
	log  *keptLog
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // Wait's result, valid after done
}

// StartProc starts cmd in a process group of its own. Unless the caller set cmd.Stderr, what
// the process writes there (and to stdout too, if cmd.Stdout is unset as well) is kept, see
// Stderr, and copied to also when that is not nil.
func StartProc(cmd *exec.Cmd, also io.Writer) (*Proc, error) {
	p := &Proc{cmd: cmd, log: &keptLog{}, done: make(chan struct{})}
	var w io.Writer = p.log
	if also != nil {
		w = io.MultiWriter(p.log, also)
	}
	if cmd.Stderr == nil {
		if cmd.Stdout == nil {
			cmd.Stdout = w
		}
		cmd.Stderr = w
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process's id, e.g. to read its memory use from /proc.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Stderr is everything the process has written to stderr so far (the first 64 MiB).
func (p *Proc) Stderr() string { return p.log.String() }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is how the process ended (nil for exit status 0), once Done is closed; nil before.
func (p *Proc) Err() error {
	if p.Running() {
		return nil
	}
	return p.err
}

// Exited reports why the process stopped, or nil while it runs; stopping with status 0 is an
// error too, for a process that should run until it is stopped.
func (p *Proc) Exited() error {
	if p.Running() {
		return nil
	}
	if p.err == nil {
		return fmt.Errorf("%s %w", p.cmd.Path, errExitedZero)
	}
	return fmt.Errorf("%s exited early: %w", p.cmd.Path, p.err)
}

// Signal sends sig to the process (not to its group).
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL to the process group, so that what the process started dies with it,
// and waits for the process to be reaped. It may be called more than once.
func (p *Proc) Kill() error {
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	select {
	case <-p.done:
		return nil
	case <-time.After(reapWait):
		return fmt.Errorf("pid %d did not exit %v after SIGKILL", p.PID(), reapWait)
	}
}

// Stop ends the process: SIGTERM, then Kill if it has not exited within 5 s. It returns once
// the process is gone and may be called more than once.
func (p *Proc) Stop() error {
	if !p.Running() {
		return nil
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopGrace):
	}
	if err := p.Kill(); err != nil {
		return err
	}
	return fmt.Errorf("pid %d ignored SIGTERM for %v and was killed", p.PID(), stopGrace)
}

// keptLog keeps the first maxKeptLog bytes written to it; safe for concurrent use.
type keptLog struct {
	mu      sync.Mutex
	b       []byte
	dropped int64
}

func (k *keptLog) Write(p []byte) (int, error) {
	k.mu.Lock()
	room := max(0, maxKeptLog-len(k.b))
	k.b = append(k.b, p[:min(room, len(p))]...)
	k.dropped += int64(len(p) - min(room, len(p)))
	k.mu.Unlock()
	return len(p), nil
}

func (k *keptLog) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.dropped > 0 {
		return fmt.Sprintf("%s\n[… %d more bytes not kept]\n", k.b, k.dropped)
	}
	return string(k.b)
}
