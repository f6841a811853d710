package policy

import (
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, its errors are one line, and a policy it accepts can judge.
func FuzzParse(f *testing.F) {
	f.Add(testPolicyYAML())
	f.Add(minimal("    - {edges: \"env=prod,!x\", tools: [run_command], commands: [uptime, /bin/df], paths: [/var/log/], max_timeout_seconds: 5, approval: [run_command]}\n"))
	f.Add("roles: {r: [&a {tools: [a]}, *a]}\n")
	f.Add("roles:\n  r:\n    - <<: {tools: [a]}\n      shell: no\n")
	f.Add("a: &a [*a]\n")
	f.Fuzz(func(t *testing.T, y string) {
		p, err := Parse([]byte(y))
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		for _, role := range p.Roles() {
			for _, r := range []Request{
				{Tool: "run_command", Edge: "e", EdgeLabels: prod(), Argv: []string{"/tmp/x/uptime"}, EnvNames: []string{"LD_PRELOAD"}, TimeoutSeconds: 99},
				{Tool: "download_file", Edge: "e", EdgeLabels: lab(), Path: "/var/log/../etc/shadow"},
				{Tool: "get_status"},
			} {
				d := p.Decide(role, r)
				if strings.ContainsAny(d.Reason, "\r\n") || d.Reason == "" {
					t.Fatalf("reason %q", d.Reason)
				}
				if d.Allowed && r.Path != "" && d.Paths != nil {
					t.Fatalf("'..' path allowed under paths %q", d.Paths)
				}
			}
		}
	})
}

// FuzzSelector: ParseSelector never panics, and String reads back as the same selector.
func FuzzSelector(f *testing.F) {
	for _, s := range []string{"", "*", "a=b", "a!=b,c,!d", " x = y ", "k8s.io/zone=a,=x", "a==b", "!"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		again, err := ParseSelector(sel.String())
		if err != nil {
			t.Fatalf("String() %q does not parse: %v", sel.String(), err)
		}
		if again.String() != sel.String() {
			t.Fatalf("%q → %q → %q", s, sel.String(), again.String())
		}
		labels := map[string]string{"a": "b", "c": "", "x": "y"}
		if again.Matches(labels) != sel.Matches(labels) {
			t.Fatalf("%q and its String %q match differently", s, sel.String())
		}
	})
}
