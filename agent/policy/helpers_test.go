package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Tokens of the test policy's HTTP clients.
const (
	viewerToken   = "viewer-token-0123456789"
	operatorToken = "operator-token-0123456789"
)

func sum(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

// testPolicyYAML is the README's Policy section example plus roles that exercise the other rule types.
func testPolicyYAML() string {
	return fmt.Sprintf(`# the README's Policy section example, extended
clients:
  stdio: {role: admin}
  http:
    - {name: openwebui, token_sha256: "%s", role: viewer}
    - {name: ops, token_sha256: "%s", role: operator}
roles:
  viewer:
    - edges: "env=prod"
      tools: [get_status, find_edges, get_device_info, run_command, download_file]
      commands: [uptime, df, journalctl]
      shell: false
      paths: [/var/log/]
      max_timeout_seconds: 60
  auditor:
    - edges: "env=prod"
      tools: [run_command, start_command]
      commands: [/usr/bin/free, /bin/cat]
  operator:
    - edges: "env=lab"
      tools: [run_command, upload_file, download_file]
      shell: false
      approval: [upload_file]
    - edges: "env=lab,site=a"
      tools: [upload_file]
      paths: [/srv/a]
  shelly:
    - {edges: "*", tools: [run_command]}
  mixed:
    - {edges: "*", tools: [get_status]}
    - {edges: "env=prod", tools: [run_command], commands: [uptime]}
  gated:
    - {edges: "env=lab", tools: ["*"], approval: ["*"]}
    - {edges: "env=lab,!frozen", tools: [get_device_info, run_command], approval: [run_command]}
  nobody: []
  admin:
    - {edges: "*", tools: ["*"], approval: [upload_file]}
approval_timeout_seconds: 90
`, sum(viewerToken), sum(operatorToken))
}

func mustParse(t testing.TB, y string, opts ...Option) *Policy {
	t.Helper()
	p, err := Parse([]byte(y), opts...)
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, y)
	}
	return p
}

// minimal is a valid policy with one role, for Parse error tests to build on.
func minimal(rules string) string {
	return "clients:\n  stdio: {role: r}\nroles:\n  r:\n" + rules
}

func oneLineOK(t *testing.T, s string) {
	t.Helper()
	if strings.ContainsAny(s, "\n\r") {
		t.Errorf("message is not one line: %q", s)
	}
}
