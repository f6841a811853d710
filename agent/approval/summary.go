package approval

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Summarize is the one line a person reads to decide on a call of tool with these arguments
// (as the MCP client sent them): the command (argv shell-quoted, or the shell string), paths,
// target, options, and the *names* of env variables. Content and stdin appear only as their
// size; tokens and other arguments never.
func Summarize(tool string, arguments map[string]any) string {
	// The arguments shown, in this order. Anything else (token, stdin, content, public_key,
	// arguments added later) is never shown: this is an allowlist.
	shown := []string{
		"argv", "command", "target", "path", "source_path", "dest_path", "mode", "encoding", "overwrite",
		"create_dirs", "cwd", "run_as", "env", "timeout_seconds", "max_bytes", "job_id", "name", "labels", "fingerprint",
	}
	var parts []string
	for _, k := range shown {
		v, ok := arguments[k]
		if !ok || v == nil {
			continue
		}
		var s string
		switch k {
		case "argv":
			s = quoteArgv(v)
		case "env":
			s = strings.Join(slices.Sorted(maps.Keys(stringMap(v))), ",")
			k = "env names"
		case "labels":
			m := stringMap(v)
			var kv []string
			for _, lk := range slices.Sorted(maps.Keys(m)) {
				kv = append(kv, lk+"="+m[lk])
			}
			s = strings.Join(kv, ",")
		default:
			s = fmt.Sprint(v)
		}
		if s != "" && s != "false" {
			parts = append(parts, k+": "+s)
		}
	}
	for _, k := range []string{"content", "stdin"} {
		if v, ok := arguments[k].(string); ok && v != "" {
			parts = append(parts, fmt.Sprintf("%s: %d bytes (not shown)", k, len(v)))
		}
	}
	if len(parts) == 0 {
		return oneLine(tool, maxSummary)
	}
	return oneLine(strings.Join(parts, "; "), maxSummary)
}

// quoteArgv writes argv as a POSIX shell would need it typed.
func quoteArgv(v any) string {
	list, _ := v.([]any)
	if ss, ok := v.([]string); ok {
		for _, s := range ss {
			list = append(list, s)
		}
	}
	q := make([]string, 0, len(list))
	for _, a := range list {
		s := fmt.Sprint(a)
		if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
			q = append(q, s)
			continue
		}
		q = append(q, "'"+strings.ReplaceAll(s, "'", `'\''`)+"'")
	}
	return strings.Join(q, " ")
}

// stringMap reads an object argument as decoded from JSON (map[string]any) or typed.
func stringMap(v any) map[string]string {
	out := map[string]string{}
	switch m := v.(type) {
	case map[string]string:
		maps.Copy(out, m)
	case map[string]any:
		for k, x := range m {
			out[k] = fmt.Sprint(x)
		}
	}
	return out
}
