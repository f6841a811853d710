package policy

import (
	"slices"
	"strings"
	"testing"
)

// Label sets of the test edges, fresh maps each time.
func prod() map[string]string     { return map[string]string{"env": "prod"} }
func lab() map[string]string      { return map[string]string{"env": "lab"} }
func labA() map[string]string     { return map[string]string{"env": "lab", "site": "a"} }
func labFroze() map[string]string { return map[string]string{"env": "lab", "frozen": ""} }

func run(edge string, labels map[string]string, argv ...string) Request {
	return Request{Tool: "run_command", Edge: edge, EdgeLabels: labels, Argv: argv, TimeoutSeconds: 30}
}

func TestDecide(t *testing.T) {
	p := mustParse(t, testPolicyYAML())
	type want struct {
		allow, approval bool
		rule            string
		reason          string   // exact when it starts with "=", else a substring
		paths           []string // checked when set
		nilPaths        bool     // Paths must be nil (any path)
	}
	const viewerRule = "viewer rule 1 (edges env=prod)"
	const notCmd = `is not one of the commands [uptime df journalctl] allowed on env=prod`
	cases := []struct {
		name string
		role string
		req  Request
		want want
	}{
		// tools and edges
		{"viewer runs uptime on prod", "viewer", run("web1", prod(), "uptime"),
			want{allow: true, rule: viewerRule, reason: "=role viewer: allowed by viewer rule 1 (edges env=prod)", paths: []string{"/var/log"}}},
		{"arguments are not commands", "viewer", run("web1", prod(), "journalctl", "-u", "ssh", ";", "rm", "-rf", "/"),
			want{allow: true, rule: viewerRule}},
		{"tool without edge", "viewer", Request{Tool: "get_status"}, want{allow: true, rule: viewerRule}},
		{"tool not in role", "viewer", Request{Tool: "upload_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/x"},
			want{reason: "=role viewer may not use upload_file"}},
		{"tool not in role, no edge", "viewer", Request{Tool: "register_edge_key"},
			want{reason: "=role viewer may not use register_edge_key"}},
		{"edge not in role", "viewer", run("db1", lab(), "uptime"),
			want{reason: "=role viewer has no rule for edge db1 (labels env=lab)"}},
		{"edge without labels", "viewer", run("db2", nil, "uptime"),
			want{reason: "=role viewer has no rule for edge db2 (no labels)"}},
		{"empty label map still selects", "viewer", run("", map[string]string{}, "uptime"),
			want{reason: `role viewer has no rule for edge "" (no labels)`}},
		{"labels without a name still select", "viewer", Request{Tool: "run_command", EdgeLabels: lab(), Argv: []string{"uptime"}},
			want{reason: "role viewer has no rule for edge"}},
		{"tool elsewhere, edge seen by another rule", "mixed", run("db1", lab(), "uptime"),
			want{reason: "=role mixed may not use run_command on edge db1 (labels env=lab)"}},
		{"closest rule's reason", "mixed", run("web1", prod(), "ls"),
			want{rule: "mixed rule 2 (edges env=prod)", reason: `=role mixed: argv[0] "ls" is not one of the commands [uptime] allowed on env=prod`}},
		{"nobody", "nobody", Request{Tool: "get_status"}, want{reason: "=role nobody may not use get_status"}},

		// commands: smuggling
		{"planted absolute path", "viewer", run("web1", prod(), "/tmp/x/uptime"),
			want{rule: viewerRule, reason: `=role viewer: argv[0] "/tmp/x/uptime" ` + notCmd}},
		{"shell syntax in argv[0]", "viewer", run("web1", prod(), "uptime; rm -rf /"), want{reason: `argv[0] "uptime; rm -rf /" ` + notCmd}},
		{"sh -c", "viewer", run("web1", prod(), "sh", "-c", "uptime"), want{reason: `argv[0] "sh" ` + notCmd}},
		{"bash -c", "viewer", run("web1", prod(), "/bin/bash", "-c", "uptime"), want{reason: `argv[0] "/bin/bash" `}},
		{"env PATH=… uptime", "viewer", run("web1", prod(), "env", "PATH=/tmp/x", "uptime"), want{reason: `argv[0] "env" ` + notCmd}},
		{"busybox", "viewer", run("web1", prod(), "busybox", "uptime"), want{reason: `argv[0] "busybox" `}},
		{"relative ./uptime", "viewer", run("web1", prod(), "./uptime"), want{reason: `argv[0] "./uptime" `}},
		{"relative dir/uptime", "viewer", run("web1", prod(), "bin/uptime"), want{reason: `argv[0] "bin/uptime" `}},
		{"absolute for a bare rule", "viewer", run("web1", prod(), "/usr/bin/uptime"), want{reason: `argv[0] "/usr/bin/uptime" `}},
		{"case differs", "viewer", run("web1", prod(), "Uptime"), want{reason: `argv[0] "Uptime" `}},
		{"leading space", "viewer", run("web1", prod(), " uptime"), want{reason: `argv[0] " uptime" `}},
		{"trailing NUL", "viewer", run("web1", prod(), "uptime\x00"), want{reason: `argv[0] "uptime\x00" `}},
		{"newline stays one line", "viewer", run("web1", prod(), "uptime\nrm"), want{reason: `argv[0] "uptime\nrm" `}},
		{"empty argv[0]", "viewer", run("web1", prod(), ""), want{reason: `argv[0] "" `}},
		{"absolute rule matches", "auditor", run("web1", prod(), "/usr/bin/free", "-m"), want{allow: true, rule: "auditor rule 1 (edges env=prod)"}},
		{"absolute rule matches after Clean", "auditor", run("web1", prod(), "/usr//bin/./free"), want{allow: true}},
		{"absolute rule, bare argv[0]", "auditor", run("web1", prod(), "free"), want{reason: `argv[0] "free" is not one of the commands [/usr/bin/free /bin/cat] allowed on env=prod`}},
		{"absolute rule, .. in argv[0]", "auditor", run("web1", prod(), "/tmp/../usr/bin/free"), want{reason: `=role auditor: argv[0] "/tmp/../usr/bin/free" contains a '..' element; name the command plainly`}},
		{"absolute rule, other dir", "auditor", run("web1", prod(), "/tmp/usr/bin/free"), want{reason: `argv[0] "/tmp/usr/bin/free" `}},
		{"commands apply to jobs too", "auditor", Request{Tool: "start_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"sh"}}, want{reason: `argv[0] "sh" `}},

		// commands: shell strings and env
		{"shell string where commands apply", "viewer", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Command: "uptime"},
			want{reason: "=role viewer: shell command strings are refused where commands [uptime df journalctl] apply (env=prod); pass argv instead"}},
		{"shell string, commands without shell key", "auditor", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Command: "/usr/bin/free"},
			want{reason: "shell command strings are refused where commands [/usr/bin/free /bin/cat] apply"}},
		{"env PATH", "viewer", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"uptime"}, EnvNames: []string{"LANG", "PATH"}},
			want{reason: `=role viewer: env "PATH" may not be set where commands [uptime df journalctl] apply (env=prod): it changes what runs`}},
		{"env LD_PRELOAD", "viewer", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"uptime"}, EnvNames: []string{"LD_PRELOAD"}},
			want{reason: `env "LD_PRELOAD" may not be set`}},
		{"env lower case ld_library_path", "auditor", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"/bin/cat"}, EnvNames: []string{"ld_library_path"}},
			want{reason: `env "ld_library_path" may not be set`}},
		{"env BASH_ENV", "viewer", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"uptime"}, EnvNames: []string{"BASH_ENV"}},
			want{reason: `env "BASH_ENV"`}},
		{"env BASH_FUNC_", "viewer", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"uptime"}, EnvNames: []string{"BASH_FUNC_uptime%%"}},
			want{reason: `env "BASH_FUNC_uptime%%"`}},
		{"env harmless name", "viewer", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"uptime"}, EnvNames: []string{"LANG", "TZ"}},
			want{allow: true}},
		{"env PATH without commands", "operator", Request{Tool: "run_command", Edge: "db1", EdgeLabels: lab(), Argv: []string{"ls"}, EnvNames: []string{"PATH", "LD_PRELOAD"}},
			want{allow: true, rule: "operator rule 1 (edges env=lab)"}},

		// shell
		{"shell false refuses command", "operator", Request{Tool: "run_command", Edge: "db1", EdgeLabels: lab(), Command: "ls | wc -l"},
			want{reason: "=role operator: shell command strings are not allowed on env=lab; pass argv instead"}},
		{"shell false allows argv", "operator", run("db1", lab(), "/tmp/anything"), want{allow: true}},
		{"shell absent allows command", "shelly", Request{Tool: "run_command", Edge: "x", EdgeLabels: nil, Command: "ls | wc -l"},
			want{allow: true, rule: "shelly rule 1 (edges *)"}},
		{"admin shell", "admin", Request{Tool: "run_command", Edge: "x", EdgeLabels: lab(), Command: "rm -rf /tmp/x"}, want{allow: true}},

		// paths
		{"path under prefix", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/syslog"}, want{allow: true, paths: []string{"/var/log"}}},
		{"path is the prefix", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log"}, want{allow: true}},
		{"path is the prefix with slash", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/"}, want{allow: true}},
		{"path deep", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/nginx/access.log"}, want{allow: true}},
		{"path with . and //", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "//var/log/./x"}, want{allow: true}},
		{"sibling with same prefix", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/logs/x"},
			want{reason: `=role viewer: path "/var/logs/x" is not under the paths [/var/log] allowed on env=prod`}},
		{"path outside", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/etc/shadow"}, want{reason: `path "/etc/shadow" is not under`}},
		{"path ../ escape", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/../../etc/shadow"},
			want{reason: `=role viewer: path "/var/log/../../etc/shadow" contains a '..' element`}},
		{"path .. at the end", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/nginx/.."}, want{reason: "contains a '..' element"}},
		{"path relative", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "var/log/syslog"}, want{reason: `path "var/log/syslog" is not absolute`}},
		{"path NUL", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/x\x00"}, want{reason: "NUL"}},
		{"path ..name is a name", "viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/..hidden"}, want{allow: true}},
		{"no paths = any", "operator", Request{Tool: "download_file", Edge: "db1", EdgeLabels: lab(), Path: "/etc/shadow"}, want{allow: true, nilPaths: true}},

		// max_timeout_seconds
		{"timeout at the limit", "viewer", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"df"}, TimeoutSeconds: 60}, want{allow: true}},
		{"timeout above the limit", "viewer", Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"df"}, TimeoutSeconds: 61},
			want{reason: "=role viewer: timeout_seconds 61 is above the 60 allowed on env=prod"}},
		{"not a timed call", "viewer", Request{Tool: "get_device_info", Edge: "web1", EdgeLabels: prod()}, want{allow: true}},
		{"no limit", "operator", Request{Tool: "run_command", Edge: "db1", EdgeLabels: lab(), Argv: []string{"sleep"}, TimeoutSeconds: 86400}, want{allow: true}},

		// approval and preferred rules
		{"admin upload needs approval", "admin", Request{Tool: "upload_file", Edge: "x", EdgeLabels: prod(), Path: "/etc/x"},
			want{allow: true, approval: true, rule: "admin rule 1 (edges *)", reason: "=role admin: allowed by admin rule 1 (edges *); upload_file waits for a person's approval"}},
		{"admin run needs none", "admin", run("x", prod(), "reboot"), want{allow: true, rule: "admin rule 1 (edges *)"}},
		{"rule without approval preferred", "operator", Request{Tool: "upload_file", Edge: "a1", EdgeLabels: labA(), Path: "/srv/a/app.conf"},
			want{allow: true, rule: "operator rule 2 (edges env=lab,site=a)", paths: []string{"/srv/a"}}},
		{"approval rule when the other refuses", "operator", Request{Tool: "upload_file", Edge: "a1", EdgeLabels: labA(), Path: "/srv/b/app.conf"},
			want{allow: true, approval: true, rule: "operator rule 1 (edges env=lab)", nilPaths: true}},
		{"approval rule when the other's edges differ", "operator", Request{Tool: "upload_file", Edge: "b1", EdgeLabels: lab(), Path: "/srv/a/x"},
			want{allow: true, approval: true, rule: "operator rule 1 (edges env=lab)"}},
		{"both need approval: the first", "gated", run("l1", lab(), "ls"),
			want{allow: true, approval: true, rule: "gated rule 1 (edges env=lab)"}},
		{"approval *: later rule without approval preferred", "gated", Request{Tool: "get_device_info", Edge: "l1", EdgeLabels: lab()},
			want{allow: true, approval: false, rule: "gated rule 2 (edges env=lab,!frozen)"}},
		{"approval *: only the approval rule matches", "gated", Request{Tool: "get_device_info", Edge: "l2", EdgeLabels: labFroze()},
			want{allow: true, approval: true, rule: "gated rule 1 (edges env=lab)"}},

		// roles
		{"unknown role", "ghost", Request{Tool: "get_status"}, want{reason: `=client has no role: role "ghost" is not defined in the policy`}},
		{"no role", "", Request{Tool: "get_status"}, want{reason: "client has no role"}},
		{"no tool", "admin", Request{}, want{reason: "=role admin: the request names no tool"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := p.Decide(c.role, c.req)
			if d.Allowed != c.want.allow || d.NeedsApproval != c.want.approval {
				t.Fatalf("allowed=%v approval=%v, want %v %v (%s | %s)", d.Allowed, d.NeedsApproval, c.want.allow, c.want.approval, d.Rule, d.Reason)
			}
			if d.Role != c.role {
				t.Errorf("Role = %q", d.Role)
			}
			if c.want.rule != "" && d.Rule != c.want.rule {
				t.Errorf("Rule = %q, want %q", d.Rule, c.want.rule)
			}
			if !d.Allowed && c.want.rule == "" && strings.HasPrefix(c.want.reason, "=role "+c.role+" may") && d.Rule != "" {
				t.Errorf("Rule = %q for a refusal no rule came close to", d.Rule)
			}
			if exact, ok := strings.CutPrefix(c.want.reason, "="); ok {
				if d.Reason != exact {
					t.Errorf("Reason = %q\n            want %q", d.Reason, exact)
				}
			} else if !strings.Contains(d.Reason, c.want.reason) {
				t.Errorf("Reason = %q, want it to contain %q", d.Reason, c.want.reason)
			}
			oneLineOK(t, d.Reason)
			if c.want.paths != nil && !slices.Equal(d.Paths, c.want.paths) {
				t.Errorf("Paths = %q, want %q", d.Paths, c.want.paths)
			}
			if c.want.nilPaths && d.Paths != nil {
				t.Errorf("Paths = %q, want nil", d.Paths)
			}
			if !d.Allowed && d.Paths != nil {
				t.Errorf("refusal carries Paths %q", d.Paths)
			}
		})
	}
}

// Decision.Paths is a copy: changing it does not change the policy.
func TestDecisionPathsCopied(t *testing.T) {
	p := mustParse(t, testPolicyYAML())
	r := Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/var/log/x"}
	d := p.Decide("viewer", r)
	d.Paths[0] = "/"
	if d2 := p.Decide("viewer", Request{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: "/etc/shadow"}); d2.Allowed {
		t.Fatal("changing Decision.Paths widened the policy")
	}
}

func TestLongInputsStayShort(t *testing.T) {
	p := mustParse(t, testPolicyYAML())
	long := "/" + strings.Repeat("a", 100_000)
	for _, r := range []Request{
		run("web1", prod(), long),
		{Tool: "download_file", Edge: "web1", EdgeLabels: prod(), Path: long},
		run(strings.Repeat("e", 5000), map[string]string{"env": strings.Repeat("x", 5000)}, "uptime"),
		{Tool: strings.Repeat("t", 5000)},
	} {
		d := p.Decide("viewer", r)
		if d.Allowed || len(d.Reason) > 600 {
			t.Errorf("allowed=%v, reason %d bytes: %.100s", d.Allowed, len(d.Reason), d.Reason)
		}
		oneLineOK(t, d.Reason)
	}
}

func TestAllowAll(t *testing.T) {
	p := AllowAll()
	if p.StdioRole() != "admin" || !p.IsAllowAll() {
		t.Fatalf("StdioRole = %q", p.StdioRole())
	}
	if _, _, ok := p.HTTPClient("anything"); ok {
		t.Error("AllowAll knows an HTTP token")
	}
	if p.ApprovalTimeout() != DefaultApprovalTimeout {
		t.Error(p.ApprovalTimeout())
	}
	for _, r := range []Request{
		{Tool: "upload_file", Edge: "x", EdgeLabels: prod(), Path: "/etc/passwd"},
		{Tool: "run_command", Edge: "x", Command: "rm -rf /", EnvNames: []string{"LD_PRELOAD"}, TimeoutSeconds: 1 << 30},
		{Tool: "get_status"},
	} {
		d := p.Decide("admin", r)
		if !d.Allowed || d.NeedsApproval || d.Paths != nil || d.Rule == "" {
			t.Errorf("%+v: %+v", r, d)
		}
	}
	if d := p.Decide("viewer", Request{Tool: "get_status"}); d.Allowed {
		t.Error("AllowAll allowed an undefined role")
	}
	if !p.ToolVisible("admin", "x") || !p.EdgeVisible("admin", nil) || !p.EdgeToolVisible("admin", "x", lab()) {
		t.Error("AllowAll hides something from admin")
	}
	if mustParse(t, testPolicyYAML()).IsAllowAll() {
		t.Error("a parsed policy says it is AllowAll")
	}
}

func TestNilPolicyRefuses(t *testing.T) {
	var p *Policy
	if d := p.Decide("admin", Request{Tool: "get_status"}); d.Allowed || d.Reason == "" {
		t.Errorf("%+v", d)
	}
	if p.ToolVisible("admin", "get_status") || p.EdgeVisible("admin", nil) || p.EdgeToolVisible("admin", "x", nil) || p.StdioRole() != "" || p.HasRole("admin") {
		t.Error("nil policy shows something")
	}
	if _, _, ok := p.HTTPClient(viewerToken); ok {
		t.Error("nil policy knows a token")
	}
}

func TestVisibility(t *testing.T) {
	p := mustParse(t, testPolicyYAML())
	tools := []struct {
		role, tool string
		want       bool
	}{
		{"viewer", "run_command", true},
		{"viewer", "get_status", true},
		{"viewer", "upload_file", false},
		{"viewer", "register_edge_key", false},
		{"admin", "anything_at_all", true},
		{"mixed", "run_command", true},
		{"nobody", "get_status", false},
		{"ghost", "get_status", false},
		{"", "get_status", false},
	}
	for _, c := range tools {
		if got := p.ToolVisible(c.role, c.tool); got != c.want {
			t.Errorf("ToolVisible(%q, %q) = %v", c.role, c.tool, got)
		}
	}
	edges := []struct {
		role   string
		labels map[string]string
		want   bool
	}{
		{"viewer", prod(), true},
		{"viewer", map[string]string{"env": "prod", "site": "x"}, true},
		{"viewer", lab(), false},
		{"viewer", nil, false},
		{"operator", labA(), true},
		{"operator", prod(), false},
		{"mixed", lab(), true},
		{"admin", nil, true},
		{"nobody", prod(), false},
		{"ghost", prod(), false},
	}
	for _, c := range edges {
		if got := p.EdgeVisible(c.role, c.labels); got != c.want {
			t.Errorf("EdgeVisible(%q, %v) = %v", c.role, c.labels, got)
		}
	}
	both := []struct {
		role, tool string
		labels     map[string]string
		want       bool
	}{
		{"viewer", "run_command", prod(), true},
		{"viewer", "run_command", lab(), false},
		{"viewer", "upload_file", prod(), false},
		{"mixed", "run_command", lab(), false},
		{"mixed", "run_command", prod(), true},
		{"mixed", "get_status", lab(), true},
		{"operator", "upload_file", labA(), true},
		{"gated", "get_device_info", labFroze(), true},
		{"ghost", "get_status", nil, false},
	}
	for _, c := range both {
		if got := p.EdgeToolVisible(c.role, c.tool, c.labels); got != c.want {
			t.Errorf("EdgeToolVisible(%q, %q, %v) = %v", c.role, c.tool, c.labels, got)
		}
	}
}

func TestHTTPClient(t *testing.T) {
	p := mustParse(t, testPolicyYAML())
	cases := []struct {
		token, name, role string
		ok                bool
	}{
		{viewerToken, "openwebui", "viewer", true},
		{operatorToken, "ops", "operator", true},
		{"", "", "", false},
		{"wrong", "", "", false},
		{strings.ToUpper(viewerToken), "", "", false},
		{viewerToken + " ", "", "", false},
		{sum(viewerToken), "", "", false}, // the digest is not the token
	}
	for _, c := range cases {
		name, role, ok := p.HTTPClient(c.token)
		if name != c.name || role != c.role || ok != c.ok {
			t.Errorf("HTTPClient(%q) = %q %q %v", c.token, name, role, ok)
		}
	}
	if p.StdioRole() != "admin" || p.ApprovalTimeout().Seconds() != 90 || p.HTTPClientCount() != 2 {
		t.Error("accessors", p.StdioRole(), p.ApprovalTimeout(), p.HTTPClientCount())
	}
	if got := p.Roles(); !slices.Equal(got, []string{"viewer", "auditor", "operator", "shelly", "mixed", "gated", "nobody", "admin"}) {
		t.Errorf("Roles = %q", got)
	}
	if !p.HasRole("nobody") || p.HasRole("ghost") {
		t.Error("HasRole")
	}
}

// Upper-case hex in the file is the same digest.
func TestHTTPClientUpperHex(t *testing.T) {
	p := mustParse(t, "clients:\n  http:\n    - {name: a, token_sha256: \""+strings.ToUpper(sum("tok"))+"\", role: r}\nroles:\n  r: []\n")
	if name, role, ok := p.HTTPClient("tok"); !ok || name != "a" || role != "r" {
		t.Error(name, role, ok)
	}
	if p.StdioRole() != "" {
		t.Errorf("stdio without clients.stdio has role %q", p.StdioRole())
	}
	if d := p.Decide(p.StdioRole(), Request{Tool: "get_status"}); d.Allowed || !strings.Contains(d.Reason, "client has no role") {
		t.Errorf("%+v", d)
	}
}

// Where commands apply, the env names the edge refuses (protocol.ForbiddenEnv) are refused at
// the gateway too, in any case; others pass.
func TestCommandsRefuseLoaderEnv(t *testing.T) {
	p := mustParse(t, testPolicyYAML())
	req := func(name string) Request {
		return Request{Tool: "run_command", Edge: "web1", EdgeLabels: prod(), Argv: []string{"uptime"}, EnvNames: []string{name}}
	}
	for _, n := range []string{"PATH", "path", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "MALLOC_CHECK_", "GCONV_PATH", "BASH_ENV", "ENV", "IFS", "PYTHONPATH", "NODE_OPTIONS", "PERL5OPT", "GIT_SSH_COMMAND", "GLIBC_TUNABLES", "BASH_FUNC_x%%"} {
		if d := p.Decide("viewer", req(n)); d.Allowed || !strings.Contains(d.Reason, "may not be set where commands") {
			t.Errorf("%s: %+v", n, d)
		}
		if d := p.Decide("operator", Request{Tool: "run_command", Edge: "db1", EdgeLabels: lab(), Argv: []string{"ls"}, EnvNames: []string{n}}); !d.Allowed {
			t.Errorf("%s refused without commands: %s", n, d.Reason)
		}
	}
	for _, n := range []string{"LANG", "TZ", "HOME", "USER", "TERM", "MY_PATH", "XPATH"} {
		if d := p.Decide("viewer", req(n)); !d.Allowed {
			t.Errorf("%s refused: %s", n, d.Reason)
		}
	}
}
