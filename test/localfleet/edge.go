package localfleet

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// stopGrace is how long Stop waits after SIGTERM before it kills.
const stopGrace = 5 * time.Second

// Edge is a running mcp-ssh-edge process of a fleet.
type Edge struct {
	// Name is the edge's enrolled name, the `edge` argument of the tools.
	Name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
}

// StartEdge starts the enrolled edge called name, dialling the gateway's port on 127.0.0.1.
// The gateway need not be up yet: the edge retries with its backoff (capped at 2 s here)
// until it is. extraEnv (`EDGE_…=value`) is appended last, so it overrides the defaults.
// The caller must Stop the edge.
func (l *Layout) StartEdge(name string, extraEnv ...string) (*Edge, error) {
	el, err := l.Edge(name)
	if err != nil {
		return nil, err
	}
	bin := l.EdgeBin
	gw := "127.0.0.1:" + strconv.Itoa(l.SSHPort)
	cmd := exec.Command(bin)
	cmd.Env = append(CleanEnv("EDGE_", "LOG_"),
		"EDGE_GATEWAY="+gw,
		"EDGE_GATEWAY_HOST_KEY="+l.HostKeyFP,
		"EDGE_KEY_FILE="+el.KeyFile,
		"EDGE_STATE_DIR="+el.StateDir,
		"EDGE_NAME="+el.Name,
		"EDGE_UPLOAD_DIRS="+l.UploadDir,
		"EDGE_BACKOFF_MAX=2s",
		"LOG_LEVEL=warn",
	)
	if el.ReportedLabels != "" {
		cmd.Env = append(cmd.Env, "EDGE_LABELS="+el.ReportedLabels)
	}
	cmd.Env = append(cmd.Env, extraEnv...)
	cmd.Stdout = os.Stderr // the edge writes nothing to stdout; keep the caller's for results
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	e := &Edge{Name: el.Name, cmd: cmd, done: make(chan struct{})}
	go func() {
		e.err = cmd.Wait()
		close(e.done)
	}()
	slog.Info("started edge", "pid", cmd.Process.Pid, "gateway", gw)
	return e, nil
}

// PID is the edge process's id, e.g. to read its memory use from /proc.
func (e *Edge) PID() int { return e.cmd.Process.Pid }

// Done is closed when the edge process has exited.
func (e *Edge) Done() <-chan struct{} { return e.done }

// Exited reports why the edge stopped, or nil while it runs.
func (e *Edge) Exited() error {
	select {
	case <-e.done:
		if e.err == nil {
			return errExitedZero
		}
		return fmt.Errorf("edge %s exited early: %w", e.Name, e.err)
	default:
		return nil
	}
}

// Stop ends the edge: SIGTERM, then SIGKILL if it has not exited within 5 s. It returns once
// the process is gone and may be called more than once.
func (e *Edge) Stop() {
	select {
	case <-e.done:
		return
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(stopGrace):
		slog.Warn("edge ignored SIGTERM; killing it", "edge", e.Name, "grace", stopGrace)
		_ = e.cmd.Process.Kill()
		<-e.done
	}
}
