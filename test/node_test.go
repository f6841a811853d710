package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestTypeScriptClient runs test/node/client.mjs, which drives the gateway with the official MCP
// TypeScript SDK client (it spawns the gateway itself over stdio, with its whole environment).
func TestTypeScriptClient(t *testing.T) {
	t.Parallel()
	nodeDir := filepath.Join(repoRoot, "test", "node")
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "@modelcontextprotocol", "sdk")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("run `npm ci` in test/node (make test does)")
		}
		t.Skip("test/node/node_modules missing: run `npm ci` in test/node")
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "client.mjs")); err != nil {
		t.Fatalf("test/node/client.mjs: %v", err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node not installed")
		}
		t.Skip("node not installed")
	}
	f := newFixture(t)
	k := f.newEdgeKey(t)
	f.authorize(t, k, "ts-edge", "role=ts")
	stranger := f.newEdgeKey(t) // not authorized: it shows as pending, and the client approves it

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = nodeDir
	env := f.gatewayEnv(map[string]string{
		"PROVISION_TOKEN": "a-long-provisioning-token-for-ts",
		"FILES_DIR":       t.TempDir(),
	})
	cmd.Env = append(env, "GATEWAY_BIN="+gatewayBin, "EXPECT_EDGE=ts-edge", "UPLOAD_DIR="+t.TempDir(),
		"PENDING_FP="+stranger.Fingerprint)
	cmd.WaitDelay = 5 * time.Second
	p := startProc(t, "node client.mjs", cmd) // its stdout and stderr, and the gateway's stderr
	// The client prints where the gateway it spawned listens (SSH_PORT=0); the edges dial that.
	addrLine := regexp.MustCompile(`(?m)^node-client: ssh_addr (\S+)$`)
	var addr string
	if !waitFor(30*time.Second, func() bool {
		if m := addrLine.FindStringSubmatch(p.Stderr()); m != nil {
			addr = m[1]
		}
		return addr != "" || !p.Running()
	}) || addr == "" {
		t.Fatalf("node client.mjs printed no ssh_addr line:\n%s", tail(p.Stderr(), 8000))
	}
	f.startEdge(t, k, addr, nil)
	f.startEdge(t, stranger, addr, map[string]string{"EDGE_NAME": "ts-stranger"})
	<-p.Done()
	if err := p.Err(); err != nil {
		t.Fatalf("node client.mjs: %v\n%s", err, tail(p.Stderr(), 8000))
	}
	t.Logf("node client.mjs:\n%s", tail(p.Stderr(), 2000))
}
