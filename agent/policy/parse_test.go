package policy

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseSpecExample(t *testing.T) {
	y := `clients:
  stdio: {role: admin}
  http:
    - {name: openwebui, token_sha256: "` + sum("t") + `", role: viewer}
roles:
  viewer:
    - edges: "env=prod"
      tools: [get_status, find_edges, get_device_info, run_command, download_file]
      commands: [uptime, df, journalctl]
      shell: false
      paths: [/var/log/]
      max_timeout_seconds: 60
  admin:
    - {edges: "*", tools: ["*"], approval: [upload_file]}
approval_timeout_seconds: 120
`
	p := mustParse(t, y, WithKnownTools("get_status", "find_edges", "get_device_info", "run_command", "download_file", "upload_file"))
	if p.StdioRole() != "admin" || p.ApprovalTimeout() != 120*time.Second {
		t.Error(p.StdioRole(), p.ApprovalTimeout())
	}
	if name, role, ok := p.HTTPClient("t"); !ok || name != "openwebui" || role != "viewer" {
		t.Error(name, role, ok)
	}
}

func TestParseDefaultsAndForms(t *testing.T) {
	p := mustParse(t, minimal("    - {tools: [get_status]}\n    - edges: \"\"\n      tools: [run_command]\n      shell: true\n"))
	if p.ApprovalTimeout() != DefaultApprovalTimeout {
		t.Error(p.ApprovalTimeout())
	}
	// edges absent or "" = every edge
	if d := p.Decide("r", Request{Tool: "get_status", Edge: "x", EdgeLabels: lab()}); !d.Allowed || d.Rule != "r rule 1 (edges *)" {
		t.Errorf("%+v", d)
	}
	if d := p.Decide("r", Request{Tool: "run_command", Edge: "x", Command: "ls"}); !d.Allowed || d.Rule != "r rule 2 (edges *)" {
		t.Errorf("%+v", d)
	}
	// Anchors and merge keys are YAML and work.
	y := `clients: {stdio: {role: r}}
x-base: &base {edges: "env=prod", commands: [uptime]}
roles:
  r:
    - <<: *base
      tools: [run_command]
`
	if _, err := Parse([]byte(y)); err == nil || !strings.Contains(err.Error(), `unknown key "x-base"`) {
		t.Errorf("extra top-level key: %v", err)
	}
	y = `clients: {stdio: {role: r}}
roles:
  r:
    - &base {edges: "env=prod", tools: [get_status]}
    - <<: *base
      tools: [run_command]
      commands: [uptime]
`
	p = mustParse(t, y)
	if d := p.Decide("r", run("w", prod(), "ls")); d.Allowed || !strings.Contains(d.Reason, `argv[0] "ls"`) {
		t.Errorf("%+v", d)
	}
	if d := p.Decide("r", run("w", lab(), "uptime")); d.Allowed {
		t.Errorf("merged edges ignored: %+v", d)
	}
	// Paths and commands are cleaned and de-duplicated.
	p = mustParse(t, minimal("    - {tools: [download_file], paths: [/var/log/, /var/log, //srv/./a/], commands: [/usr//bin/free, uptime, uptime]}\n"))
	d := p.Decide("r", Request{Tool: "download_file", Edge: "e", Path: "/srv/a/b"})
	if !d.Allowed || strings.Join(d.Paths, " ") != "/var/log /srv/a" {
		t.Errorf("%+v", d)
	}
	if d := p.Decide("r", Request{Tool: "download_file", Edge: "e", Argv: []string{"x"}}); d.Allowed {
		t.Error(d)
	}
	if d := p.Decide("r", Request{Tool: "download_file", Edge: "e", Argv: []string{"/usr/bin/free"}}); !d.Allowed {
		t.Error(d)
	}
	// A role may have no rules.
	if p := mustParse(t, "roles:\n  r: []\n"); p.StdioRole() != "" || !p.HasRole("r") {
		t.Error("empty role")
	}
	// approval: * and approval of a tool under tools: *.
	mustParse(t, minimal("    - {tools: [run_command], approval: [\"*\"]}\n    - {tools: [\"*\"], approval: [upload_file]}\n    - {tools: [a], approval: []}\n"))
	// shell: no is YAML 1.1's false and still a bool.
	mustParse(t, minimal("    - {tools: [a], shell: no, commands: [uptime]}\n"))
}

func TestParseErrors(t *testing.T) {
	good := sum("good")
	client := func(entries string) string {
		return "clients:\n  http:\n" + entries + "roles:\n  r: []\n  s: []\n"
	}
	cases := []struct {
		name, yaml, want string
	}{
		// decoding
		{"empty", "", "the policy is empty"},
		{"comment only", "# nothing\n", "the policy is empty"},
		{"second document", "roles: {r: []}\n---\nroles: {r: []}\n", "line 2: the policy holds more than one YAML document"},
		{"not a mapping", "- a\n", "line 1: the policy must be a mapping"},
		{"syntax", "roles: {r: [\n", "line 1: did not find expected node content"},
		{"tab", "roles:\n\tr: []\n", "line 2: found character that cannot start any token"},
		{"misspelt rule key", minimal("    - edges: \"*\"\n      tools: [a]\n      comands: [uptime]\n"),
			`line 7: unknown key "comands" in a rule (known keys: edges, tools, commands, shell, paths, max_timeout_seconds, approval)`},
		{"misspelt top key", "clients: {}\nroles: {r: []}\napproval_timeout: 5\n", `line 3: unknown key "approval_timeout" at the top of the policy (known keys: clients, roles, approval_timeout_seconds)`},
		{"misspelt clients key", "clients: {stdin: {role: r}}\nroles: {r: []}\n", `line 1: unknown key "stdin" in clients (known keys: stdio, http)`},
		{"misspelt http key", client("    - {name: a, token: x, role: r}\n"), `line 3: unknown key "token" in an http client (known keys: name, token_sha256, role)`},
		{"misspelt stdio key", "clients: {stdio: {roles: r}}\nroles: {r: []}\n", `line 1: unknown key "roles" in clients.stdio (known keys: role)`},
		{"duplicate key", minimal("    - {tools: [a], commands: [uptime], commands: [sh]}\n"), `line 5: mapping key "commands" already defined at line 5`},
		{"duplicate role", "roles:\n  r: []\n  r: []\n", `line 3: mapping key "r" already defined at line 2`},
		{"key without value", minimal("    - tools: [a]\n      commands:\n      # - uptime\n"), `line 6: "commands" has no value: give it one or remove the key`},
		{"role without value", "roles:\n  r:\n", `line 2: "r" has no value`},
		{"wrong type list", minimal("    - {tools: run_command}\n"), `line 5: expected a list of strings, found the string`},
		{"wrong type rules", "roles:\n  r: {tools: [a]}\n", "line 2: expected a list of rules, found a mapping"},
		{"wrong type bool", minimal("    - {tools: [a], shell: maybe}\n"), `line 5: expected true or false, found the string "maybe"`},
		{"wrong type int", minimal("    - {tools: [a], max_timeout_seconds: \"60\"}\n"), `line 5: expected an integer, found the string "60"`},
		{"float timeout", minimal("    - {tools: [a], max_timeout_seconds: 1.5}\n"), "line 5: role r, rule 1, max_timeout_seconds: expected a whole number of seconds"},
		{"float approval timeout", "roles: {r: []}\napproval_timeout_seconds: 2.5\n", "line 2: approval_timeout_seconds: expected a whole number"},
		{"too big", strings.Repeat("#", MaxFileBytes+1), "the policy is 1048577 bytes long (max 1048576)"},

		// roles and rules
		{"no roles", "clients: {}\n", "roles: define at least one role"},
		{"empty roles", "roles: {}\n", "line 1: roles: define at least one role"},
		{"bad role name", "roles:\n  \"bad role\": []\n", `line 2: roles: role name "bad role" is invalid`},
		{"too many roles", "roles:\n" + manyRoles(maxRoles+1), "roles: 257 roles (max 256)"},
		{"too many rules", minimal(strings.Repeat("    - {tools: [a]}\n", maxRulesPerRole+1)), "line 4: role r has 257 rules (max 256)"},
		{"tools missing", minimal("    - {edges: \"*\"}\n"), "line 5: role r, rule 1: tools is missing or empty"},
		{"tools empty", minimal("    - {tools: []}\n"), "line 5: role r, rule 1: tools is missing or empty"},
		{"tool name empty", minimal("    - {tools: [a, \"\"]}\n"), "line 5: role r, rule 1, tools: a tool name is empty"},
		{"tool name bad", minimal("    - {tools: [\"run command\"]}\n"), `line 5: role r, rule 1, tools: "run command" is not a tool name`},
		{"tool unknown", minimal("    - {tools: [run_comand]}\n"), `line 5: role r, rule 1, tools: there is no tool "run_comand"`},
		{"too many tools", minimal("    - {tools: [" + strings.Repeat("a,", maxListLen) + "a]}\n"), "role r, rule 1, tools: 257 entries (max 256)"},
		{"selector", minimal("    - {edges: \"env=prod,=x\", tools: [a]}\n"), `line 5: role r, rule 1, edges: selector term "=x": label key must be`},
		{"second rule named", minimal("    - {tools: [a]}\n    - {tools: [a], edges: \"!\"}\n"), `line 6: role r, rule 2, edges: selector term "!"`},
		{"commands empty", minimal("    - {tools: [a], commands: []}\n"), "line 5: role r, rule 1: commands is an empty list"},
		{"command with args", minimal("    - tools: [a]\n      commands:\n        - uptime\n        - uptime -p\n"), `line 8: role r, rule 1, commands: "uptime -p" is not a command`},
		{"command with shell", minimal("    - {tools: [a], commands: [\"uptime;rm\"]}\n"), `role r, rule 1, commands: "uptime;rm" is not a command`},
		{"command $()", minimal("    - {tools: [a], commands: [\"$(id)\"]}\n"), `"$(id)" is not a command`},
		{"command relative", minimal("    - {tools: [a], commands: [bin/uptime]}\n"), `"bin/uptime" is a relative path`},
		{"command dot-slash", minimal("    - {tools: [a], commands: [./uptime]}\n"), `"./uptime" is a relative path`},
		{"command ..", minimal("    - {tools: [a], commands: [/usr/../bin/sh]}\n"), `"/usr/../bin/sh" contains a '..' element`},
		{"command dir", minimal("    - {tools: [a], commands: [/usr/bin/]}\n"), `"/usr/bin/" is a directory`},
		{"command root", minimal("    - {tools: [a], commands: [/]}\n"), `"/" is a directory`},
		{"command empty", minimal("    - {tools: [a], commands: [\"\"]}\n"), "commands: an entry is empty"},
		{"too many commands", minimal("    - {tools: [a], commands: [" + strings.Repeat("a,", maxListLen) + "a]}\n"), "commands: 257 entries (max 256)"},
		{"shell true with commands", minimal("    - tools: [a]\n      commands: [uptime]\n      shell: true\n"), "line 7: role r, rule 1: shell: true together with commands"},
		{"paths empty", minimal("    - {tools: [a], paths: []}\n"), "line 5: role r, rule 1: paths is an empty list"},
		{"paths relative", minimal("    - {tools: [a], paths: [var/log]}\n"), `line 5: role r, rule 1, paths: "var/log" is not an absolute path`},
		{"paths ..", minimal("    - {tools: [a], paths: [/var/log/../../etc]}\n"), `paths: "/var/log/../../etc" contains a '..' element`},
		{"paths control", minimal("    - {tools: [a], paths: [\"/var/\\nlog\"]}\n"), `paths: "/var/\nlog" contains control characters`},
		{"timeout zero", minimal("    - {tools: [a], max_timeout_seconds: 0}\n"), "line 5: role r, rule 1, max_timeout_seconds: 0 is out of range (1 to"},
		{"timeout negative", minimal("    - {tools: [a], max_timeout_seconds: -5}\n"), "max_timeout_seconds: -5 is out of range"},
		{"timeout huge", minimal("    - {tools: [a], max_timeout_seconds: 99999999}\n"), "max_timeout_seconds: 99999999 is out of range"},
		{"approval not in tools", minimal("    - tools: [run_command]\n      approval: [upload_file]\n"), "line 6: role r, rule 1, approval: upload_file is not among the rule's tools [run_command]"},
		{"approval unknown tool", minimal("    - {tools: [\"*\"], approval: [upload_fle]}\n"), `role r, rule 1, approval: there is no tool "upload_fle"`},
		{"approval empty name", minimal("    - {tools: [\"*\"], approval: [\"\"]}\n"), "approval: a tool name is empty"},

		// clients
		{"stdio role undefined", "clients:\n  stdio: {role: admin}\nroles:\n  r: []\n", `line 2: clients.stdio: role "admin" is not defined under roles (defined: r)`},
		{"stdio role missing", "clients:\n  stdio: {}\nroles:\n  r: []\n", "line 2: clients.stdio: role is missing"},
		{"http role undefined", client("    - {name: a, token_sha256: \"" + good + "\", role: viewer}\n"), `line 3: http client "a": role "viewer" is not defined under roles (defined: r, s)`},
		{"http role missing", client("    - {name: a, token_sha256: \"" + good + "\"}\n"), `http client "a": role is missing`},
		{"http name missing", client("    - {token_sha256: \"" + good + "\", role: r}\n"), "line 3: clients.http[0]: name is missing"},
		{"http name bad", client("    - {name: \"a b\", token_sha256: \"" + good + "\", role: r}\n"), `http client "a b": name is invalid`},
		{"http name reserved", client("    - {name: http, token_sha256: \"" + good + "\", role: r}\n"), `http client "http": the name is reserved`},
		{"http name reserved stdio", client("    - {name: stdio, token_sha256: \"" + good + "\", role: r}\n"), `http client "stdio": the name is reserved`},
		{"http name duplicate", client("    - {name: a, token_sha256: \"" + good + "\", role: r}\n    - {name: a, token_sha256: \"" + sum("other") + "\", role: s}\n"),
			`line 4: http client "a": the name is already used by clients.http[0]`},
		{"token missing", client("    - {name: a, role: r}\n"), `http client "a": token_sha256 is missing`},
		{"token not hex", client("    - {name: a, token_sha256: \"" + strings.Repeat("g", 64) + "\", role: r}\n"), `line 3: http client "a": token_sha256 must be 64 hex digits`},
		{"token short", client("    - {name: a, token_sha256: \"" + good[:62] + "\", role: r}\n"), "token_sha256 must be 64 hex digits"},
		{"token is the token", client("    - {name: a, token_sha256: \"my-secret-token\", role: r}\n"), "token_sha256 must be 64 hex digits (the SHA-256 of the token, not the token itself)"},
		{"token of empty", client("    - {name: a, token_sha256: \"" + sum("") + "\", role: r}\n"), "token_sha256 is the SHA-256 of an empty token"},
		{"token duplicate", client("    - {name: a, token_sha256: \"" + good + "\", role: r}\n    - {name: b, token_sha256: \"" + strings.ToUpper(good) + "\", role: s}\n"),
			`line 4: http client "b": token_sha256 is the same as http client "a"'s`},
		{"too many clients", client(strings.Repeat("    - {name: a, token_sha256: \""+good+"\", role: r}\n", maxHTTPClients+1)), "clients.http: 1025 clients (max 1024)"},
		{"approval timeout zero", "roles: {r: []}\napproval_timeout_seconds: 0\n", "line 2: approval_timeout_seconds: 0 is out of range (1 to 86400)"},
		{"approval timeout huge", "roles: {r: []}\napproval_timeout_seconds: 86401\n", "approval_timeout_seconds: 86401 is out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse([]byte(c.yaml), WithKnownTools("a", "run_command", "upload_file", "get_status", "download_file"))
			if err == nil {
				t.Fatalf("parsed: %+v", p)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q\n  want it to contain %q", err, c.want)
			}
			oneLineOK(t, err.Error())
			if len(err.Error()) > 600 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
		})
	}
}

func manyRoles(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString("  r" + strconv.Itoa(i) + ": []\n")
	}
	return b.String()
}

// Without WithKnownTools any well-formed tool name parses (the tool layer may add tools).
func TestParseUnknownToolsWithoutOption(t *testing.T) {
	mustParse(t, minimal("    - {tools: [some_future_tool], approval: [some_future_tool]}\n"))
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(good, []byte(testPolicyYAML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if p, err := Load(good); err != nil || p.StdioRole() != "admin" {
		t.Fatal(p, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("roles:\n  r:\n    - {tools: [a], comands: [x]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+": line 3: unknown key \"comands\"") {
		t.Errorf("Load(bad) = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Load(missing) = %v", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load(dir) = %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(strings.Repeat("#", MaxFileBytes+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("Load(big) = %v", err)
	}
	link := filepath.Join(dir, "link.yaml")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(link); err != nil {
		t.Errorf("Load(symlink) = %v", err)
	}
}

// A "billion laughs" of aliases fails fast: no field takes nested lists, the tree pass keeps
// aliases unexpanded, and the decoder bounds aliasing anyway.
func TestParseAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("roles:\n  r:\n    - {tools: &a0 [x, x, x, x, x, x, x, x, x, x]}\n")
	for i := 1; i < 12; i++ {
		prev := "*a" + strconv.Itoa(i-1)
		b.WriteString("    - {tools: &a" + strconv.Itoa(i) + " [" + strings.Repeat(prev+", ", 9) + prev + "]}\n")
	}
	start := time.Now()
	_, err := Parse([]byte(b.String()))
	if err == nil {
		t.Fatal("parsed")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	oneLineOK(t, err.Error())
	t.Log(err)
}
