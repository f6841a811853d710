package policy

import (
	"strings"
	"testing"
)

func TestSelector(t *testing.T) {
	labels := map[string]string{"role": "web", "site": "dc", "gpu": ""}
	cases := []struct {
		sel, str string
		match    bool
	}{
		{"", "*", true},
		{"*", "*", true},
		{"  *  ", "*", true},
		{"role=web", "role=web", true},
		{"role=db", "role=db", false},
		{"role==web", "role=web", true},
		{"role!=db", "role!=db", true},
		{"site!=dc", "site!=dc", false},
		{"missing!=x", "missing!=x", true},
		{"gpu", "gpu", true},
		{"missing", "missing", false},
		{"!missing", "!missing", true},
		{"!gpu", "!gpu", false},
		{" role = web , site!=lab, gpu ,!legacy", "role=web,site!=lab,gpu,!legacy", true},
		{"role=web,site=lab", "role=web,site=lab", false},
		{"k8s.io/zone=a", "k8s.io/zone=a", false},
	}
	for _, c := range cases {
		s, err := ParseSelector(c.sel)
		if err != nil {
			t.Fatalf("ParseSelector(%q): %v", c.sel, err)
		}
		if got := s.Matches(labels); got != c.match {
			t.Errorf("%q.Matches = %v, want %v", c.sel, got, c.match)
		}
		if got := s.String(); got != c.str {
			t.Errorf("%q.String() = %q, want %q", c.sel, got, c.str)
		}
		// String round-trips.
		again, err := ParseSelector(s.String())
		if err != nil || again.String() != s.String() {
			t.Errorf("round trip of %q: %v %q", c.sel, err, again.String())
		}
	}
	var zero Selector
	if !zero.Matches(nil) || !zero.MatchesAll() || zero.String() != "*" {
		t.Error("zero Selector should match every edge")
	}
	if s, _ := ParseSelector("env=prod"); s.Matches(nil) {
		t.Error("env=prod matched no labels")
	}
}

func TestSelectorErrors(t *testing.T) {
	cases := []struct{ sel, want string }{
		{"role=web,=x", `selector term "=x": label key must be letters, digits`},
		{"role=web,", `selector term "": label key must be`},
		{"!", `selector term "!": label key`},
		{"bad key=x", `selector term "bad key=x"`},
		{"a=b,\x02", `selector term "": label key`},
		{strings.Repeat("a", MaxSelectorLen+1), "selector is 1025 bytes long (max 1024)"},
		{strings.Repeat("a,", MaxSelectorTerms) + "a", "selector has 65 terms (max 64)"},
	}
	for _, c := range cases {
		_, err := ParseSelector(c.sel)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSelector(%q) = %v, want %q", c.sel, err, c.want)
		}
	}
}
