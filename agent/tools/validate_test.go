package tools_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestArgumentErrors: arguments that do not fit a tool's schema get one readable line that
// names the argument and shows an example, never a validator's struct dump.
func TestArgumentErrors(t *testing.T) {
	f := &fakeFleet{}
	h := newHarness(t, &adminFleet{fakeFleet: f}, baseConfig())
	for _, tc := range []struct {
		tool string
		args map[string]any
		want string
	}{
		{"register_edge_key", map[string]any{"public_key": "ssh-ed25519 AAAA"}, `token is required, e.g. {"token": "…"}`},
		{"register_edge_key", map[string]any{"token": "t", "public_key": "k", "labels": "role=web"},
			`labels must be an object, not a string, e.g. {"labels": {"role": "web"}}`},
		{"run_command", map[string]any{"edge": "pi", "argv": "uname -a"}, `argv must be an array, not a string, e.g. {"argv": ["uname", "-a"]}`},
		{"run_command", map[string]any{"edge": "pi", "argv": []any{"true"}, "timeout_seconds": "10"},
			`timeout_seconds must be an integer, not a string, e.g. {"timeout_seconds": 30}`},
		{"run_command", map[string]any{"edge": "pi", "argv": []any{"true"}, "timeout": 10}, `timeout is not an argument of this tool (it takes argv, command,`},
		{"run_command", map[string]any{"edge": "pi", "argv": []any{1, 2}}, `argv`},
	} {
		t.Run(tc.tool+" "+tc.want, func(t *testing.T) {
			res := h.call(tc.tool, tc.args)
			msg := text(res)
			if !res.IsError || !strings.HasPrefix(msg, "invalid arguments: ") || !strings.Contains(msg, tc.want) {
				t.Fatalf("isError=%v %q, want an error containing %q", res.IsError, msg, tc.want)
			}
			if strings.Contains(msg, "&{") || strings.Contains(msg, "\n") {
				t.Errorf("message is not one readable line: %q", msg)
			}
		})
	}
	if n := f.callCount(); n != 0 {
		t.Errorf("%d calls reached the fleet with invalid arguments", n)
	}
}

// TestInputSchemasPlain: no input property is typed ["null", T] (strict clients warn).
func TestInputSchemasPlain(t *testing.T) {
	h := newHarness(t, &adminFleet{fakeFleet: &fakeFleet{}}, baseConfig())
	for name, tool := range h.tools {
		var s struct {
			Properties map[string]struct {
				Type any `json:"type"`
			} `json:"properties"`
		}
		raw := tool.RawInputSchema
		if len(raw) == 0 {
			raw = []byte(mustJSON(t, tool.InputSchema))
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for p, v := range s.Properties {
			if _, ok := v.Type.(string); !ok {
				t.Errorf("%s.%s has type %v, want one plain type", name, p, v.Type)
			}
		}
	}
}
