// Command mcp-ssh-edge runs on an edge device: it dials out to an mcp-ssh-gateway over SSH,
// keeps the tunnel up and serves the gateway's typed RPCs under the device's own policy.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/edge/rpc"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/edge/tunnel"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(guestProcs(runtime.NumCPU()))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// guestProcs is how many processors the edge runs Go code on at once (GOMAXPROCS) on a device
// with n: half, at least one. The device has its own work and the edge is its guest; the
// commands it starts are separate processes and are not limited by this. Fewer processors
// also mean fewer thread wake-ups between x/crypto/ssh's and yamux's goroutines: on two cores
// shared with the gateway, one made uploads faster and cheaper per byte and run_command
// quicker than two (docs/BENCHMARKS.md). GOMAXPROCS, when set, wins.
func guestProcs(n int) int {
	return max(1, n/2)
}

// run is main without the process exit: 0 ok, 1 runtime failure, 2 bad settings or usage.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == rpc.JobSubcommand {
		// The detached supervisor of one job (internal): see rpc.RunJob.
		return rpc.RunJob(rpc.DefaultJobCommand(), args[1:])
	}
	args, err := applyConfigFile(args, os.LookupEnv, os.Setenv)
	if err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-edge: %v\n", err)
		return 2
	}
	s, rest, showVersion, err := loadSettings(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-edge: %v\n", err)
		return 2
	}
	if showVersion {
		fmt.Fprintf(stdout, "mcp-ssh-edge %s\n", version)
		return 0
	}
	cmd := "run"
	if len(rest) > 0 {
		cmd = rest[0]
	}
	if cmd == "enroll" {
		return runEnroll(s, rest[1:], os.Getenv, stdout, stderr)
	}
	if len(rest) > 1 {
		fmt.Fprintf(stderr, "mcp-ssh-edge: unexpected arguments after %s: %v\n", cmd, rest[1:])
		return 2
	}
	switch cmd {
	case "run":
		if err := s.checkRun(); err != nil {
			fmt.Fprintf(stderr, "mcp-ssh-edge: %v\n", err)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		if err := serve(ctx, s, stderr); err != nil {
			fmt.Fprintf(stderr, "mcp-ssh-edge: %v\n", err)
			return 1
		}
		return 0
	case "pubkey":
		signer, generated, err := keys.LoadOrGenerate(s.KeyFile, "mcp-ssh-edge@"+s.Name)
		if err != nil {
			fmt.Fprintf(stderr, "mcp-ssh-edge: EDGE_KEY_FILE: %v\n", err)
			return 1
		}
		if generated {
			fmt.Fprintf(stderr, "mcp-ssh-edge: generated a new key in %s\n", s.KeyFile)
		}
		fmt.Fprintln(stdout, keys.AuthorizedLine(signer.PublicKey()))
		return 0
	case "pause":
		// The state directory is the running edge's: pause does not create one on a machine
		// where no edge ever ran (it would be a switch nobody reads).
		if st, err := os.Stat(s.StateDir); err != nil || !st.IsDir() {
			fmt.Fprintf(stderr, "mcp-ssh-edge: pause: no state directory %s: is the edge installed and run with this EDGE_STATE_DIR (or --config)?\n", s.StateDir)
			return 1
		}
		if err := os.WriteFile(rpc.PauseFile(s.StateDir), []byte("paused by the device owner\n"), 0o600); err != nil {
			fmt.Fprintf(stderr, "mcp-ssh-edge: pause: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "RPCs paused: every call is refused until `mcp-ssh-edge resume`\n")
		return 0
	case "resume":
		if err := os.Remove(rpc.PauseFile(s.StateDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "mcp-ssh-edge: resume: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "RPCs resumed\n")
		return 0
	}
	fmt.Fprintf(stderr, "mcp-ssh-edge: unknown command %q (run, pubkey, enroll, pause, resume; see --help)\n", cmd)
	return 2
}

// serve is the default command: key, state dir, tunnel and RPC server until ctx ends.
func serve(ctx context.Context, s *settings, stderr io.Writer) error {
	log := s.newLogger(stderr)
	signer, generated, err := keys.LoadOrGenerate(s.KeyFile, "mcp-ssh-edge@"+s.Name)
	if err != nil {
		return fmt.Errorf("EDGE_KEY_FILE: %w", err)
	}
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return fmt.Errorf("EDGE_STATE_DIR: %w", err)
	}
	// Resolved once, here: everything after uses and protects the real directory.
	if s.StateDir, err = checkStateDir(s.StateDir); err != nil {
		return err
	}
	log.Info("mcp-ssh-edge starting", "version", version, "name", s.Name,
		"fingerprint", keys.Fingerprint(signer.PublicKey()), "key_file", s.KeyFile, "generated", generated,
		"gateways", s.Gateway, "state_dir", s.StateDir, "allow_shell", s.AllowShell,
		"allow_commands", s.AllowCommands, "upload_dirs", s.UploadDirs, "download_dirs", s.DownloadDirs,
		"allow_run_as", s.AllowRunAs, "job_retention", s.JobRetention)
	if msg := rpc.UploadsDisabled(s.AllowCommands, s.UploadDirs); msg != "" {
		log.Warn(msg)
	}
	if _, err := os.Stat(rpc.PauseFile(s.StateDir)); err == nil {
		log.Warn("RPCs are paused by the device owner; run `mcp-ssh-edge resume` to serve them")
	}
	srv := rpc.NewServer(rpc.Config{
		AllowShell:    s.AllowShell,
		AllowCommands: s.AllowCommands,
		UploadDirs:    s.UploadDirs,
		DownloadDirs:  s.DownloadDirs,
		MaxConcurrent: s.MaxConcurrent,
		StateDir:      s.StateDir,
		KeyFile:       s.KeyFile,
		Version:       version,
		Name:          s.Name,
		AllowRunAs:    s.AllowRunAs,
		JobRetention:  s.JobRetention,
		JobCommand:    rpc.DefaultJobCommand(),

		InventorySlowInterval: s.InventorySlowInterval,
		ProbeTimeout:          s.ProbeTimeout,
	}, log)
	err = tunnel.Run(ctx, tunnel.Config{
		Gateways: s.Gateway,
		Pins:     s.pins,
		Signer:   signer,
		Hello: protocol.Hello{
			Protocol:      protocol.Version,
			Name:          s.Name,
			Labels:        s.labels,
			Version:       version,
			OS:            runtime.GOOS,
			Arch:          runtime.GOARCH,
			MaxConcurrent: s.MaxConcurrent,
		},
		KeepaliveInterval: s.KeepaliveInterval,
		BackoffMax:        s.BackoffMax,
	}, srv.ServeStream, log)
	log.Info("mcp-ssh-edge stopped")
	return err
}
