package main

// The admin CLI (SPEC §4.3): key and enrolment operations for operators who keep the
// provisioning token out of any model's context, and `audit verify`. It works on the same
// files as a running gateway, which picks every change up at once (and audits it).

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

const adminUsage = `Admin commands (they use the same environment as the gateway):
  mcp-ssh-gateway keys list
  mcp-ssh-gateway keys add [--name NAME] [--labels k=v,…] PUBLIC_KEY_LINE|-
  mcp-ssh-gateway keys revoke NAME|SHA256:FINGERPRINT
  mcp-ssh-gateway keys pending
  mcp-ssh-gateway keys approve --name NAME [--labels k=v,…] SHA256:FINGERPRINT
  mcp-ssh-gateway enroll-token --name NAME [--labels k=v,…] [--ttl 10m]
  mcp-ssh-gateway audit verify [FILE…]   (default: AUDIT_LOG with its rotated files, oldest first)
`

// isAdminCommand reports whether args name an admin command.
func isAdminCommand(args []string) bool {
	return len(args) > 0 && slices.Contains([]string{"keys", "enroll-token", "audit"}, args[0])
}

// runAdmin runs one admin command: 0 ok, 1 failure, 2 usage.
func runAdmin(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "mcp-ssh-gateway: "+format+"\n", a...)
		return code
	}
	cfg, err := loadConfig()
	if err != nil {
		return fail(2, "%v", err)
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	cmd := strings.Join(args[:min(2, len(args))], " ")
	if args[0] == "enroll-token" {
		cmd = "enroll-token"
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	name := fs.String("name", "", "name to bind")
	labelsFlag := fs.String("labels", "", "labels to bind, k=v,…")
	ttl := fs.Duration("ttl", 15*time.Minute, "enrolment lifetime (at most 24h)")
	rest := args[min(2, len(args)):]
	if cmd == "enroll-token" {
		rest = args[1:]
	}
	if err := fs.Parse(rest); err != nil {
		// The error text is not shown: it may quote an argument, and that may be a secret.
		return fail(2, "%s: bad flags (only --name, --labels and --ttl exist)\n%s", cmd, adminUsage)
	}
	labels, err := parseLabelFlag(*labelsFlag)
	if err != nil {
		return fail(2, "--labels: %v", err)
	}
	pos := fs.Args()
	want := func(n int) bool { return len(pos) == n }

	switch cmd {
	case "keys list":
		if !want(0) {
			break
		}
		l, err := gateway.ListKeys(cfg.AuthorizedKeys, log)
		if err != nil {
			return fail(1, "%v", err)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tFINGERPRINT\tLABELS")
		for _, k := range l {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", dash(k.Name), k.Fingerprint, formatLabels(k.Labels))
		}
		tw.Flush()
		return 0
	case "keys add":
		if !want(1) {
			break
		}
		line := pos[0]
		if line == "-" {
			b, err := io.ReadAll(io.LimitReader(stdin, 64<<10))
			if err != nil {
				return fail(1, "read the key from stdin: %v", err)
			}
			line = strings.TrimSpace(string(b))
		}
		k, err := gateway.AddKey(cfg.AuthorizedKeys, line, *name, labels, log)
		if err != nil {
			return fail(1, "%v", err)
		}
		if !k.Added {
			fmt.Fprintf(stdout, "already authorized: %s %s\n", k.Fingerprint, dash(k.Name))
			return 0
		}
		fmt.Fprintf(stdout, "added %s %s %s\n", k.Fingerprint, dash(k.Name), formatLabels(k.Labels))
		return 0
	case "keys revoke":
		if !want(1) {
			break
		}
		r, err := gateway.RevokeKey(cfg.AuthorizedKeys, pos[0], log)
		if err != nil {
			return fail(1, "%v", err)
		}
		fmt.Fprintf(stdout, "revoked %s %s (a running gateway closes its tunnel within seconds)\n", r.Fingerprint, dash(r.Name))
		return 0
	case "keys pending":
		if !want(0) {
			break
		}
		ps, err := gateway.ListPending(cfg.StateDir)
		if err != nil {
			return fail(1, "%v", err)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FINGERPRINT\tREQUESTED NAME (unverified)\tREMOTE ADDR\tFIRST ATTEMPT\tLAST ATTEMPT\tATTEMPTS")
		for _, p := range ps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\n", p.Fingerprint, dash(p.RequestedName), p.RemoteAddr,
				p.FirstAttempt.UTC().Format(time.RFC3339), p.LastAttempt.UTC().Format(time.RFC3339), p.Attempts)
		}
		tw.Flush()
		return 0
	case "keys approve":
		if !want(1) {
			break
		}
		k, err := gateway.ApprovePending(cfg.StateDir, cfg.AuthorizedKeys, pos[0], *name, labels, log)
		if err != nil {
			return fail(1, "%v", err)
		}
		fmt.Fprintf(stdout, "approved %s %s %s\n", k.Fingerprint, dash(k.Name), formatLabels(k.Labels))
		return 0
	case "enroll-token":
		if !want(0) || *name == "" {
			break
		}
		en, err := enrollToken(cfg, *name, labels, *ttl)
		if err != nil {
			return fail(1, "%v", err)
		}
		fmt.Fprintf(stdout, "%s\n", en.String)
		fmt.Fprintf(stderr, "one-time enrolment for %q, valid until %s: on the device run\n  mcp-ssh-edge enroll '%s'\n",
			en.Name, en.ExpiresAt.UTC().Format(time.RFC3339), en.String)
		return 0
	case "audit verify":
		return auditVerify(cfg, pos, stdout, stderr)
	}
	return fail(2, "bad usage of %q\n%s", strings.Join(args, " "), adminUsage)
}

// enrollToken creates an enrolment from the gateway's settings: host key and PUBLIC_ADDR.
func enrollToken(cfg *config, name string, labels map[string]string, ttl time.Duration) (gateway.Enrollment, error) {
	hostKey, _, err := keys.LoadOrGenerate(cfg.HostKeyFile, "mcp-ssh-gateway host key")
	if err != nil {
		return gateway.Enrollment{}, fmt.Errorf("HOST_KEY_FILE: %w", err)
	}
	addr := cfg.PublicAddr
	if addr == "" {
		if cfg.SSHPort == 0 {
			return gateway.Enrollment{}, fmt.Errorf("set PUBLIC_ADDR: SSH_PORT=0 gives no address an edge could dial")
		}
		addr = cfg.publicAddr(&net.TCPAddr{IP: net.ParseIP(cfg.SSHBind), Port: cfg.SSHPort})
	}
	return gateway.CreateEnrollment(cfg.StateDir, cfg.AuthorizedKeys, addr, keys.Fingerprint(hostKey.PublicKey()), name, labels, ttl)
}

// auditVerify checks the hash chain of the given files, or of AUDIT_LOG and its rotated
// files, as one chain in order.
func auditVerify(cfg *config, files []string, stdout, stderr io.Writer) int {
	if len(files) == 0 {
		if cfg.AuditLog == "-" {
			fmt.Fprintln(stderr, "mcp-ssh-gateway: AUDIT_LOG is stderr: give the files to verify")
			return 2
		}
		var err error
		if files, err = audit.Files(cfg.AuditLog); err != nil {
			fmt.Fprintf(stderr, "mcp-ssh-gateway: %v\n", err)
			return 1
		}
	}
	total, prev := 0, ""
	for i, name := range files {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "mcp-ssh-gateway: %v\n", err)
			return 1
		}
		n, last, err := audit.VerifyFrom(bufio.NewReader(f), prev, i > 0)
		f.Close()
		total += n
		if err != nil {
			fmt.Fprintf(stderr, "audit verify: %s: %v\n", name, err)
			return 1
		}
		prev = last
	}
	fmt.Fprintf(stdout, "audit log intact: %d lines in %d file(s)\n", total, len(files))
	return 0
}

func parseLabelFlag(s string) (map[string]string, error) {
	l := map[string]string{}
	for kv := range strings.SplitSeq(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		l[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return l, nil
}

func formatLabels(l map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		kv = append(kv, k+"="+l[k])
	}
	if len(kv) == 0 {
		return "-"
	}
	return strings.Join(kv, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
