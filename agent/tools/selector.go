package tools

import (
	"fmt"
	"regexp"
	"strings"
)

// Bounds on a label selector.
const (
	maxSelectorLen   = 1024
	maxSelectorTerms = 64
)

// labelSelector matches an edge's gateway-bound labels: every term must hold.
type labelSelector []selectorTerm

// selectorTerm is one condition: key=value, key!=value, key (present) or !key (absent).
type selectorTerm struct {
	key, value string
	op         string // "=", "!=", "exists", "absent"
}

var selectorKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$`)

// parseSelector reads a comma-separated list of terms: `role=web`, `site!=lab`, `gpu` (label
// present), `!legacy` (label absent). Empty or `*` matches every edge.
func parseSelector(s string) (labelSelector, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxSelectorLen {
		return nil, fmt.Errorf("selector is %d bytes long (max %d)", len(s), maxSelectorLen)
	}
	if s == "" || s == "*" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxSelectorTerms {
		return nil, fmt.Errorf("selector has %d terms (max %d)", len(parts), maxSelectorTerms)
	}
	sel := make(labelSelector, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		var t selectorTerm
		switch {
		case strings.Contains(p, "!="):
			k, v, _ := strings.Cut(p, "!=")
			t = selectorTerm{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: "!="}
		case strings.Contains(p, "="):
			k, v, _ := strings.Cut(p, "=")
			t = selectorTerm{key: strings.TrimSpace(k), value: strings.TrimSpace(strings.TrimPrefix(v, "=")), op: "="}
		case strings.HasPrefix(p, "!"):
			t = selectorTerm{key: strings.TrimSpace(p[1:]), op: "absent"}
		default:
			t = selectorTerm{key: p, op: "exists"}
		}
		if !selectorKeyRE.MatchString(t.key) {
			return nil, fmt.Errorf("selector term %q: label key must be letters, digits, '.', '_', '-', '/' (write terms as key=value, key!=value, key or !key, comma-separated)", oneLine(p))
		}
		sel = append(sel, t)
	}
	return sel, nil
}

// matches reports whether labels satisfy every term.
func (sel labelSelector) matches(labels map[string]string) bool {
	for _, t := range sel {
		v, ok := labels[t.key]
		switch t.op {
		case "=":
			if !ok || v != t.value {
				return false
			}
		case "!=":
			if ok && v == t.value {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "absent":
			if ok {
				return false
			}
		}
	}
	return true
}
