package policy

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds on a label selector.
const (
	// MaxSelectorLen is the longest selector ParseSelector accepts, in bytes.
	MaxSelectorLen = 1024
	// MaxSelectorTerms is the most comma-separated terms a selector may have.
	MaxSelectorTerms = 64
)

// Selector matches an edge's gateway-bound labels: every term must hold. The zero value (and
// the selectors "" and "*") matches every edge. A Selector is immutable once parsed and safe
// for concurrent use.
type Selector struct {
	terms []selectorTerm
}

// selectorTerm is one condition: key=value, key!=value, key (present) or !key (absent).
type selectorTerm struct {
	key, value string
	op         string // "=", "!=", "exists", "absent"
}

// validSelectorKey reports whether k is a label key a selector may name: 1-256 of letters,
// digits, '.', '_', '-', '/', starting with a letter or digit.
func validSelectorKey(k string) bool { return validChars(k, 256, true, "._/-") }

// ParseSelector reads a comma-separated list of terms: `role=web`, `site!=lab`, `gpu` (label
// present), `!legacy` (label absent); all must hold. Empty or `*` matches every edge. Only
// the labels bound at the gateway should ever be matched against it.
func ParseSelector(s string) (Selector, error) {
	s = strings.TrimSpace(s)
	if len(s) > MaxSelectorLen {
		return Selector{}, fmt.Errorf("selector is %d bytes long (max %d)", len(s), MaxSelectorLen)
	}
	if s == "" || s == "*" {
		return Selector{}, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxSelectorTerms {
		return Selector{}, fmt.Errorf("selector has %d terms (max %d)", len(parts), MaxSelectorTerms)
	}
	terms := make([]selectorTerm, 0, len(parts))
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
		if !validSelectorKey(t.key) {
			return Selector{}, fmt.Errorf("selector term %q: label key must be letters, digits, '.', '_', '-', '/' (write terms as key=value, key!=value, key or !key, comma-separated)", oneLine(p))
		}
		terms = append(terms, t)
	}
	return Selector{terms: terms}, nil
}

// Matches reports whether labels satisfy every term. A nil map has no labels.
func (s Selector) Matches(labels map[string]string) bool {
	for _, t := range s.terms {
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

// MatchesAll reports whether the selector has no terms, so it matches every edge.
func (s Selector) MatchesAll() bool { return len(s.terms) == 0 }

// String renders the selector in the syntax ParseSelector reads, terms in their original
// order; "*" when it matches every edge.
func (s Selector) String() string {
	if len(s.terms) == 0 {
		return "*"
	}
	var b strings.Builder
	for i, t := range s.terms {
		if i > 0 {
			b.WriteByte(',')
		}
		switch t.op {
		case "=":
			if strings.HasPrefix(t.value, "=") {
				// "k==v" reads as k=v; a space keeps a value that starts with '=' intact.
				b.WriteString(t.key + "= " + t.value)
			} else {
				b.WriteString(t.key + "=" + t.value)
			}
		case "!=":
			b.WriteString(t.key + "!=" + t.value)
		case "exists":
			b.WriteString(t.key)
		case "absent":
			b.WriteString("!" + t.key)
		}
	}
	return b.String()
}

// Bounds on text quoted in messages: oneLine keeps agent/tools' 512 bytes for selector
// terms; quote cuts caller-supplied values (argv[0], paths, edge names) shorter.
const (
	maxOneLine     = 512
	maxMessagePart = 200
)

// oneLine makes s safe to quote in a one-line message: valid UTF-8, control characters as
// spaces, trimmed and cut to maxOneLine bytes.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxOneLine {
		s = s[:runeStart(s, maxOneLine)] + "…"
	}
	return s
}

// quote renders caller-supplied text for a message: Go-quoted (so control characters and
// newlines are escaped) and cut to maxMessagePart bytes, so the message stays one short line.
func quote(s string) string {
	if len(s) <= maxMessagePart {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:runeStart(s, maxMessagePart)]) + "…"
}

// runeStart returns the largest index ≤ n (n < len(s)) that starts a rune.
func runeStart(s string, n int) int {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}
