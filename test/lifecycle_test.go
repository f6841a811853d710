package e2e

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// TestStdinCloseExits: with MCP_TRANSPORT=stdio the gateway exits 0 when its stdin closes, also
// with an edge connected.
func TestStdinCloseExits(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "", "")
	g := f.startGateway(t, nil)
	f.startEdge(t, k, g.addr, nil)
	g.waitConnected(t, k.Fingerprint, nil)
	time.Sleep(300 * time.Millisecond)
	closed := time.Now()
	err := g.Close() // closes the client and with it the gateway's stdin, then waits for the exit
	switch took := time.Since(closed); {
	case errors.Is(err, localfleet.ErrStillRunning) || took > 10*time.Second:
		t.Errorf("gateway still running %v after stdin closed (%v)", took.Round(time.Millisecond), err)
	case g.Err() != nil:
		t.Errorf("gateway exited with %v after stdin closed, want 0", g.Err())
	}
}

// TestStateDirLocked: a second gateway on the same STATE_DIR refuses to start and names the
// first one's pid.
func TestStateDirLocked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	first := f.startGateway(t, nil)
	second := f.spawnGateway(t, nil)
	select {
	case <-second.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("second gateway on the same STATE_DIR still running after 10 s")
	}
	if second.Err() == nil {
		t.Errorf("second gateway exited 0, want a non-zero exit")
	}
	if pid := strconv.Itoa(first.PID()); !strings.Contains(second.Stderr(), pid) {
		t.Errorf("second gateway's stderr does not name the first one's pid %s:\n%s", pid, tail(second.Stderr(), 2000))
	}
	if !first.Running() {
		t.Errorf("the first gateway died: %v", first.Err())
	}
}
