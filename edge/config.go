package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/edge/rpc"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// settings are the edge's settings (the README's Settings): EDGE_* variables, overridden by flags.
type settings struct {
	Gateway           []string      `envconfig:"GATEWAY"`
	GatewayHostKey    string        `envconfig:"GATEWAY_HOST_KEY"`
	KeyFile           string        `envconfig:"KEY_FILE"`
	StateDir          string        `envconfig:"STATE_DIR"`
	Name              string        `envconfig:"NAME"`
	Labels            string        `envconfig:"LABELS"`
	AllowShell        bool          `envconfig:"ALLOW_SHELL" default:"true"`
	AllowCommands     []string      `envconfig:"ALLOW_COMMANDS"`
	UploadDirs        []string      `envconfig:"UPLOAD_DIRS"`
	DownloadDirs      []string      `envconfig:"DOWNLOAD_DIRS"`
	MaxConcurrent     int           `envconfig:"MAX_CONCURRENT" default:"32"`
	KeepaliveInterval time.Duration `envconfig:"KEEPALIVE_INTERVAL" default:"15s"`
	BackoffMax        time.Duration `envconfig:"BACKOFF_MAX" default:"30s"`
	AllowRunAs        []string      `envconfig:"ALLOW_RUN_AS"`
	JobRetention      time.Duration `envconfig:"JOB_RETENTION" default:"24h"`

	InventorySlowInterval time.Duration `envconfig:"INVENTORY_SLOW_INTERVAL" default:"6h"`
	ProbeTimeout          time.Duration `envconfig:"PROBE_TIMEOUT" default:"5s"`

	LogLevel  string `ignored:"true"`
	LogFormat string `ignored:"true"`

	pins   *keys.Pins
	labels map[string]string
}

// loadSettings reads the environment (getenv), then flags from args. It returns the
// remaining arguments (the subcommand). Errors name the variable or flag at fault.
func loadSettings(args []string, getenv func(string) string, stderr io.Writer) (*settings, []string, bool, error) {
	var s settings
	if err := envconfig.Process("EDGE", &s); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return nil, nil, false, fmt.Errorf("%s=%q is not a valid %s", pe.KeyName, pe.Value, pe.TypeName)
		}
		return nil, nil, false, err
	}
	s.LogLevel, s.LogFormat = getenv("LOG_LEVEL"), getenv("LOG_FORMAT")

	fs := flag.NewFlagSet("mcp-ssh-edge", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned as one line; help is printed below
	list := func(dst *[]string) func(string) error {
		return func(v string) error { *dst = splitList(v); return nil }
	}
	fs.Func("gateway", "gateway host:port, comma-separated to try several (EDGE_GATEWAY)", list(&s.Gateway))
	fs.StringVar(&s.GatewayHostKey, "gateway-host-key", s.GatewayHostKey, "trusted gateway host key: SHA256:… fingerprint or public key, comma-separated (EDGE_GATEWAY_HOST_KEY)")
	fs.StringVar(&s.KeyFile, "key-file", s.KeyFile, "the edge's private key, generated if missing (EDGE_KEY_FILE)")
	fs.StringVar(&s.StateDir, "state-dir", s.StateDir, "state directory: rpc.log, pause switch, job journal; symlinks are resolved at start and the real directory is never readable or writable through RPCs (EDGE_STATE_DIR)")
	fs.StringVar(&s.Name, "name", s.Name, "name to ask the gateway for; default the hostname (EDGE_NAME)")
	fs.StringVar(&s.Labels, "labels", s.Labels, "reported labels key=value,… (EDGE_LABELS)")
	fs.BoolVar(&s.AllowShell, "allow-shell", s.AllowShell, "allow shell command strings, not only argv (EDGE_ALLOW_SHELL)")
	fs.Func("allow-commands", "executables argv[0] may be, comma-separated, matched by the path named (a symlink such as a busybox applet stays that applet); empty = any. When set: no shell strings, the caller may set only "+strings.Join(protocol.SafeEnvNames(), ",")+" in env, and uploads need EDGE_UPLOAD_DIRS and never write a PATH directory or an allowed executable (EDGE_ALLOW_COMMANDS)", list(&s.AllowCommands))
	fs.Func("upload-dirs", "directories uploads may write under; empty = any, but no uploads at all while EDGE_ALLOW_COMMANDS is set (EDGE_UPLOAD_DIRS)", list(&s.UploadDirs))
	fs.Func("download-dirs", "directories downloads may read under; empty = any (EDGE_DOWNLOAD_DIRS)", list(&s.DownloadDirs))
	fs.IntVar(&s.MaxConcurrent, "max-concurrent", s.MaxConcurrent, "RPCs served at once (EDGE_MAX_CONCURRENT)")
	fs.DurationVar(&s.KeepaliveInterval, "keepalive-interval", s.KeepaliveInterval, "SSH keepalive period (EDGE_KEEPALIVE_INTERVAL)")
	fs.DurationVar(&s.BackoffMax, "backoff-max", s.BackoffMax, "reconnect backoff cap (EDGE_BACKOFF_MAX)")
	fs.Func("allow-run-as", "users run_as may name, comma-separated; empty = none (EDGE_ALLOW_RUN_AS)", list(&s.AllowRunAs))
	fs.DurationVar(&s.JobRetention, "job-retention", s.JobRetention, "how long finished jobs are kept (EDGE_JOB_RETENTION)")
	fs.DurationVar(&s.InventorySlowInterval, "inventory-slow-interval", s.InventorySlowInterval, "how often the slow inventory probes (tool versions, pending updates) run (EDGE_INVENTORY_SLOW_INTERVAL)")
	fs.DurationVar(&s.ProbeTimeout, "probe-timeout", s.ProbeTimeout, "time one inventory probe such as `git --version` may take (EDGE_PROBE_TIMEOUT)")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		stderr := fs.Output()
		fmt.Fprintf(stderr, "mcp-ssh-edge %s: dials out to an mcp-ssh-gateway over SSH and serves its RPCs.\n\n", getVersion())
		fmt.Fprintf(stderr, "Usage: mcp-ssh-edge [flags] [run|pubkey|enroll STRING|pause|resume]\n\n")
		fmt.Fprintf(stderr, "  run     keep the tunnel up and serve RPCs (default)\n")
		fmt.Fprintf(stderr, "  pubkey  print this edge's public key line for the gateway's authorized_keys\n")
		fmt.Fprintf(stderr, "  enroll  [--config FILE] STRING: enrol with a one-time string from the gateway and write the config file\n")
		fmt.Fprintf(stderr, "  pause   refuse every RPC until resume\n  resume  serve RPCs again\n\n")
		fmt.Fprintf(stderr, "Every flag has an EDGE_* environment variable; flags win. LOG_LEVEL, LOG_FORMAT=json.\n")
		fmt.Fprintf(stderr, "--config FILE (before the command) reads EDGE_* settings from FILE, e.g. the edge.env enroll wrote,\nwhere the environment does not set them.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fs.Usage()
			return nil, nil, false, flag.ErrHelp
		}
		return nil, nil, false, err
	}
	if err := s.complete(getenv); err != nil {
		return nil, nil, false, err
	}
	return &s, fs.Args(), *version, nil
}

func getVersion() string { return version }

// splitList splits a comma-separated value, dropping blanks.
func splitList(v string) []string {
	var out []string
	for _, e := range strings.Split(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// complete fills defaults that depend on the user and checks what every subcommand needs.
func (s *settings) complete(getenv func(string) string) error {
	root := os.Geteuid() == 0
	home := getenv("HOME")
	if s.KeyFile == "" {
		switch {
		case root:
			s.KeyFile = "/var/lib/mcp-ssh-edge/id_ed25519"
		case getenv("XDG_CONFIG_HOME") != "":
			s.KeyFile = filepath.Join(getenv("XDG_CONFIG_HOME"), "mcp-ssh-edge", "id_ed25519")
		case home != "":
			s.KeyFile = filepath.Join(home, ".config", "mcp-ssh-edge", "id_ed25519")
		default:
			return errors.New("EDGE_KEY_FILE is not set and there is no HOME to default it under")
		}
	}
	if s.StateDir == "" {
		switch {
		case root:
			s.StateDir = "/var/lib/mcp-ssh-edge"
		case getenv("XDG_STATE_HOME") != "":
			s.StateDir = filepath.Join(getenv("XDG_STATE_HOME"), "mcp-ssh-edge")
		case home != "":
			s.StateDir = filepath.Join(home, ".local", "state", "mcp-ssh-edge")
		default:
			return errors.New("EDGE_STATE_DIR is not set and there is no HOME to default it under")
		}
	}
	if s.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("EDGE_NAME is not set and the hostname is unknown: %v", err)
		}
		s.Name = h
	}
	s.Name = strings.ToLower(s.Name)
	if len(s.Name) > 2*protocol.MaxNameLen {
		return fmt.Errorf("EDGE_NAME=%q is too long", s.Name)
	}
	labels, err := parseLabels(s.Labels)
	if err != nil {
		return fmt.Errorf("EDGE_LABELS=%q: %v", s.Labels, err)
	}
	s.labels = labels
	if s.MaxConcurrent < 1 || s.MaxConcurrent > 4096 {
		return fmt.Errorf("EDGE_MAX_CONCURRENT=%d is out of range (1-4096)", s.MaxConcurrent)
	}
	if s.KeepaliveInterval < time.Second {
		return fmt.Errorf("EDGE_KEEPALIVE_INTERVAL=%v is too short (at least 1s)", s.KeepaliveInterval)
	}
	if s.JobRetention < time.Minute {
		return fmt.Errorf("EDGE_JOB_RETENTION=%v is too short (at least 1m)", s.JobRetention)
	}
	for _, u := range s.AllowRunAs {
		if len(u) > 64 || strings.ContainsAny(u, "/:\x00 ") {
			return fmt.Errorf("EDGE_ALLOW_RUN_AS: %q is not a user name", u)
		}
	}
	if s.BackoffMax < time.Second {
		return fmt.Errorf("EDGE_BACKOFF_MAX=%v is too short (at least 1s)", s.BackoffMax)
	}
	if s.InventorySlowInterval < time.Minute {
		return fmt.Errorf("EDGE_INVENTORY_SLOW_INTERVAL=%v is too short (at least 1m: these probes start processes)", s.InventorySlowInterval)
	}
	if s.ProbeTimeout < 100*time.Millisecond || s.ProbeTimeout > 5*time.Minute {
		return fmt.Errorf("EDGE_PROBE_TIMEOUT=%v is out of range (100ms-5m)", s.ProbeTimeout)
	}
	for name, dirs := range map[string][]string{"EDGE_UPLOAD_DIRS": s.UploadDirs, "EDGE_DOWNLOAD_DIRS": s.DownloadDirs} {
		for i, d := range dirs {
			if !filepath.IsAbs(d) {
				return fmt.Errorf("%s: %q is not an absolute path", name, d)
			}
			dirs[i] = filepath.Clean(d)
		}
	}
	if len(s.AllowCommands) > 0 {
		cmds, err := rpc.ResolveAllowCommands(s.AllowCommands)
		if err != nil {
			return fmt.Errorf("EDGE_ALLOW_COMMANDS: %v", err)
		}
		s.AllowCommands = cmds
	}
	if _, err := parseLevel(s.LogLevel); err != nil {
		return err
	}
	if f := s.LogFormat; f != "" && f != "text" && f != "json" {
		return fmt.Errorf("LOG_FORMAT=%q is not text or json", f)
	}
	return nil
}

// checkRun validates what only the default run command needs.
func (s *settings) checkRun() error {
	if len(s.Gateway) == 0 {
		return errors.New("EDGE_GATEWAY is required: the gateway's host:port (comma-separated for several)")
	}
	for _, g := range s.Gateway {
		if _, _, err := net.SplitHostPort(g); err != nil {
			return fmt.Errorf("EDGE_GATEWAY: %q is not host:port", g)
		}
	}
	if strings.TrimSpace(s.GatewayHostKey) == "" {
		return errors.New("EDGE_GATEWAY_HOST_KEY is required: the gateway's SHA256:… host key fingerprint (get_agent_pubkey shows it)")
	}
	pins, err := keys.ParsePins(s.GatewayHostKey)
	if err != nil {
		return fmt.Errorf("EDGE_GATEWAY_HOST_KEY: %v", err)
	}
	s.pins = pins
	return nil
}

// parseLabels reads key=value,key=value.
func parseLabels(v string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range splitList(v) {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(val)
	}
	return m, protocol.ValidateLabels(m)
}

// parseLevel maps LOG_LEVEL onto a slog level; empty means info.
func parseLevel(v string) (slog.Level, error) {
	switch strings.ToLower(v) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("LOG_LEVEL=%q is not debug, info, warn or error", v)
}

// newLogger builds the stderr logger from LOG_LEVEL and LOG_FORMAT.
func (s *settings) newLogger(w io.Writer) *slog.Logger {
	lvl, _ := parseLevel(s.LogLevel)
	opts := &slog.HandlerOptions{Level: lvl}
	if s.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// checkStateDir resolves the state directory (created by the caller) through any symlinks
// and refuses one that others could write: the job journal (pid files, exit records), the
// pause switch and rpc.log live there, and the edge trusts them only because nobody else can
// change them. It returns the resolved path, which is what the edge then uses and protects.
func checkStateDir(dir string) (string, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("EDGE_STATE_DIR: %w", err)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("EDGE_STATE_DIR: %w", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("EDGE_STATE_DIR=%s (%s) is not a directory", dir, real)
	}
	if perm := st.Mode().Perm(); perm&0o022 != 0 {
		return "", fmt.Errorf("EDGE_STATE_DIR=%s (%s) is writable by group or others (%04o): its job journal could be forged; chmod 0700 it", dir, real, perm)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return "", fmt.Errorf("EDGE_STATE_DIR=%s (%s) is owned by uid %d, not by the edge's user (%d)", dir, real, sys.Uid, os.Geteuid())
	}
	return real, nil
}
