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

// policyOps is the policy TestTypeScriptPolicy runs under: the stdio client's role reaches the
// prod edge with uptime only, and uploads there wait for a person.
const policyOps = `clients:
  stdio: {role: ops}
roles:
  ops:
    - edges: "env=prod"
      tools: [get_status, run_command]
      commands: [uptime]
      shell: false
    - edges: "env=prod"
      tools: [upload_file]
      approval: [upload_file]
approval_timeout_seconds: 30
`

// TestTypeScriptPolicy runs test/node/policy.mjs: a POLICY_FILE role through the official MCP
// TypeScript SDK client (what it lists, sees and may run) and approval by MCP elicitation.
func TestTypeScriptPolicy(t *testing.T) {
	t.Parallel()
	nodeDir := filepath.Join(repoRoot, "test", "node")
	node, err := exec.LookPath("node")
	if err != nil || func() bool {
		_, err := os.Stat(filepath.Join(nodeDir, "node_modules", "@modelcontextprotocol", "sdk"))
		return err != nil
	}() {
		if os.Getenv("CI") == "true" {
			t.Fatal("node or test/node/node_modules missing (make test runs npm ci)")
		}
		t.Skip("node or test/node/node_modules missing")
	}
	f := newFixture(t)
	prod, lab := f.newEdgeKey(t), f.newEdgeKey(t)
	f.authorize(t, prod, "prod1", "env=prod")
	f.authorize(t, lab, "lab1", "env=lab")
	policyFile := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(policyOps), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "policy.mjs")
	cmd.Dir = nodeDir
	cmd.Env = append(f.gatewayEnv(map[string]string{"POLICY_FILE": policyFile}),
		"GATEWAY_BIN="+gatewayBin, "PROD_EDGE=prod1", "LAB_EDGE=lab1", "UPLOAD_DIR="+t.TempDir())
	cmd.WaitDelay = 5 * time.Second
	p := startProc(t, "node policy.mjs", cmd)
	addrLine := regexp.MustCompile(`(?m)^node-policy: ssh_addr (\S+)$`)
	var addr string
	if !waitFor(30*time.Second, func() bool {
		if m := addrLine.FindStringSubmatch(p.Stderr()); m != nil {
			addr = m[1]
		}
		return addr != "" || !p.Running()
	}) || addr == "" {
		t.Fatalf("node policy.mjs printed no ssh_addr line:\n%s", tail(p.Stderr(), 8000))
	}
	f.startEdge(t, prod, addr, nil)
	f.startEdge(t, lab, addr, nil)
	<-p.Done()
	if err := p.Err(); err != nil {
		t.Fatalf("node policy.mjs: %v\n%s", err, tail(p.Stderr(), 8000))
	}
	t.Logf("node policy.mjs:\n%s", tail(p.Stderr(), 3000))
}
