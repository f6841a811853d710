package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/edge/tunnel"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// enrollTimeout bounds the whole enrolment (dial, handshake, secret).
const enrollTimeout = 30 * time.Second

// defaultConfigFile is where enroll writes the edge's settings: the file the packaged
// service reads as root, or one under the user's config directory otherwise.
func defaultConfigFile(getenv func(string) string) string {
	switch {
	case os.Geteuid() == 0:
		return "/etc/mcp-ssh-edge/edge.env"
	case getenv("XDG_CONFIG_HOME") != "":
		return filepath.Join(getenv("XDG_CONFIG_HOME"), "mcp-ssh-edge", "edge.env")
	default:
		return filepath.Join(getenv("HOME"), ".config", "mcp-ssh-edge", "edge.env")
	}
}

// runEnroll is `mcp-ssh-edge enroll [--config FILE] STRING`: it generates the key if needed,
// proves the one-time secret to the gateway (pinning its host key), and only then writes the
// gateway, pinned host key, name and key file into the config file.
func runEnroll(s *settings, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgFile := fs.String("config", defaultConfigFile(getenv), "the env file to write")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintf(stderr, "mcp-ssh-edge: usage: mcp-ssh-edge enroll [--config FILE] ENROLMENT_STRING\n")
		return 2
	}
	en, err := protocol.ParseEnrollment(fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-edge: %v\n", err)
		return 2
	}
	pins, err := keys.ParsePins(en.HostKey)
	if err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-edge: enrolment host key: %v\n", err)
		return 2
	}
	signer, generated, err := keys.LoadOrGenerate(s.KeyFile, "mcp-ssh-edge@"+en.Name)
	if err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-edge: EDGE_KEY_FILE: %v\n", err)
		return 1
	}
	if generated {
		fmt.Fprintf(stderr, "mcp-ssh-edge: generated a new key in %s\n", s.KeyFile)
	}
	ctx, cancel := context.WithTimeout(context.Background(), enrollTimeout)
	defer cancel()
	if err := tunnel.Enroll(ctx, en.Gateway, pins, signer, en.Name, en.Secret); err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-edge: enrolment failed: %v\n", err)
		return 1
	}
	keyFile, _ := filepath.Abs(s.KeyFile)
	if err := writeEnvFile(*cfgFile, map[string]string{
		"EDGE_GATEWAY":          en.Gateway,
		"EDGE_GATEWAY_HOST_KEY": en.HostKey,
		"EDGE_NAME":             en.Name,
		"EDGE_KEY_FILE":         keyFile,
	}); err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-edge: enrolled, but writing the config failed: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "enrolled as %q with key %s; settings written to %s\n", en.Name, keys.Fingerprint(signer.PublicKey()), *cfgFile)
	return 0
}

// envOrder is the order new settings are appended in.
var envOrder = []string{"EDGE_GATEWAY", "EDGE_GATEWAY_HOST_KEY", "EDGE_NAME", "EDGE_KEY_FILE"}

// writeEnvFile sets the given variables in an env file, keeping every other line as it is,
// and writes it atomically (0644: it holds no secret).
func writeEnvFile(path string, set map[string]string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(old) > 1<<20 {
		return fmt.Errorf("%s is larger than 1 MiB", path)
	}
	var out bytes.Buffer
	done := map[string]bool{}
	for line := range strings.Lines(string(old)) {
		k, _, ok := strings.Cut(strings.TrimSpace(line), "=")
		if v, mine := set[k]; ok && mine {
			if !done[k] {
				fmt.Fprintf(&out, "%s=%s\n", k, v)
				done[k] = true
			}
			continue
		}
		out.WriteString(line)
		if !strings.HasSuffix(line, "\n") {
			out.WriteByte('\n')
		}
	}
	if len(old) == 0 {
		fmt.Fprintf(&out, "# mcp-ssh-edge settings, written by `mcp-ssh-edge enroll`\n")
	}
	for _, k := range envOrder {
		if !done[k] {
			fmt.Fprintf(&out, "%s=%s\n", k, set[k])
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return keys.WriteFileAtomic(path, out.Bytes(), 0o644)
}
