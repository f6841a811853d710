package e2e

import (
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startRawGateway runs the gateway with exec.Cmd directly, stdin a pipe we control.
func startRawGateway(t *testing.T, f *fixture, env map[string]string) (*proc, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command(gatewayBin)
	cmd.Env = f.gatewayEnv(env)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	p := startProc(t, "gateway", cmd)
	return p, stdin
}

func waitListeningLog(t *testing.T, p *proc) {
	t.Helper()
	if !waitFor(10*time.Second, func() bool { return strings.Contains(p.stderr.String(), `"ssh listening"`) }) {
		t.Fatalf("gateway never logged ssh listening:\n%s", tail(p.stderr.String(), 3000))
	}
}

// TestStdinCloseExits: with MCP_TRANSPORT=stdio the gateway exits 0 when its stdin closes, also
// with an edge connected.
func TestStdinCloseExits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "", "")
	port := freePort(t)
	f.startEdge(t, k, "127.0.0.1:"+strconv.Itoa(port), nil)
	p, stdin := startRawGateway(t, f, map[string]string{"SSH_PORT": strconv.Itoa(port)})
	waitListeningLog(t, p)
	// The gateway logs the edge's fingerprint when it connects; give it the chance to.
	waitFor(10*time.Second, func() bool { return strings.Contains(p.stderr.String(), k.fp) })
	time.Sleep(300 * time.Millisecond)
	stdin.Close()
	select {
	case <-p.done:
		if p.err != nil {
			t.Errorf("gateway exited with %v after stdin closed, want 0", p.err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("gateway still running 10 s after stdin closed")
	}
}

// TestStateDirLocked: a second gateway on the same STATE_DIR refuses to start and names the
// first one's pid.
func TestStateDirLocked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	first, _ := startRawGateway(t, f, nil)
	waitListeningLog(t, first)
	second, _ := startRawGateway(t, f, nil)
	select {
	case <-second.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("second gateway on the same STATE_DIR still running after 10 s")
	}
	if second.err == nil {
		t.Errorf("second gateway exited 0, want a non-zero exit")
	}
	if pid := strconv.Itoa(first.cmd.Process.Pid); !strings.Contains(second.stderr.String(), pid) {
		t.Errorf("second gateway's stderr does not name the first one's pid %s:\n%s", pid, tail(second.stderr.String(), 2000))
	}
	if first.exited() {
		t.Errorf("the first gateway died: %v", first.err)
	}
}
