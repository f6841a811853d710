package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	f.startEdge(t, k, addr, nil)
	// An edge whose key is not authorized: it shows as pending, and the client approves it.
	stranger := f.newEdgeKey(t)
	f.startEdge(t, stranger, addr, map[string]string{"EDGE_NAME": "ts-stranger"})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs")
	cmd.Dir = nodeDir
	env := f.gatewayEnv(map[string]string{
		"SSH_PORT":        strconv.Itoa(port),
		"PROVISION_TOKEN": "a-long-provisioning-token-for-ts",
		"FILES_DIR":       t.TempDir(),
	})
	cmd.Env = append(env, "GATEWAY_BIN="+gatewayBin, "EXPECT_EDGE=ts-edge", "UPLOAD_DIR="+t.TempDir(),
		"PENDING_FP="+stranger.fp)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node client.mjs: %v\n%s", err, tail(string(out), 8000))
	}
	t.Logf("node client.mjs:\n%s", tail(string(out), 2000))
}
