package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
)

// maxConfigFile bounds the settings file --config names.
const maxConfigFile = 64 << 10

// commands are mcp-ssh-edge's commands: the flags before one are the program's.
var commands = []string{"run", "pubkey", "enroll", "pause", "resume"}

// applyConfigFile takes `--config FILE` (or --config=FILE) from the flags before the command
// and applies the file's NAME=VALUE lines (what `mcp-ssh-edge enroll` writes: EDGE_* and
// LOG_* only; '#' comments, blank lines and surrounding quotes allowed) to the environment
// where the environment does not already set them, so that the environment, then the flags,
// still win. It returns args without the option; `enroll --config FILE` is left to enroll.
func applyConfigFile(args []string, lookup func(string) (string, bool), set func(k, v string) error) ([]string, error) {
	var path string
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if slices.Contains(commands, a) { // the command: the rest is its own
			out = append(out, args[i:]...)
			break
		}
		switch {
		case a == "--config" || a == "-config":
			if i+1 == len(args) {
				return nil, fmt.Errorf("--config needs a file, e.g. --config /etc/mcp-ssh-edge/edge.env")
			}
			path = args[i+1]
			i++
		case strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
			_, path, _ = strings.Cut(a, "=")
		default:
			out = append(out, a)
		}
	}
	if path == "" {
		return out, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	if len(b) > maxConfigFile {
		return nil, fmt.Errorf("--config %s is larger than %d bytes", path, maxConfigFile)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		if !ok || !(strings.HasPrefix(k, "EDGE_") || strings.HasPrefix(k, "LOG_")) || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("--config %s line %d: want NAME=VALUE with an EDGE_* or LOG_* name", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
			v = v[1 : len(v)-1]
		}
		if _, already := lookup(k); already {
			continue
		}
		if err := set(k, v); err != nil {
			return nil, fmt.Errorf("--config %s line %d: %w", path, n, err)
		}
	}
	return out, nil
}
