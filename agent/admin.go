package main

// The admin CLI: key and enrolment operations for operators who keep the
// provisioning token out of any model's context, and `audit verify`. It works on the same
// files as a running gateway, which picks every change up at once (and audits it).

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/approval"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

const adminUsage = `Admin commands (they use the same environment as the gateway):
  mcp-ssh-gateway keys list
  mcp-ssh-gateway keys add [--name NAME] [--labels k=v,…] PUBLIC_KEY_LINE|-
  mcp-ssh-gateway keys revoke NAME|SHA256:FINGERPRINT
  mcp-ssh-gateway keys label NAME|SHA256:FINGERPRINT k=v,… [--replace]
  mcp-ssh-gateway keys pending
  mcp-ssh-gateway keys approve SHA256:FINGERPRINT --name NAME|--use-requested-name [--labels k=v,…]
  mcp-ssh-gateway enroll-token --name NAME [--labels k=v,…] [--ttl 10m]
  mcp-ssh-gateway audit verify [FILE…]   (default: AUDIT_LOG with its rotated files, oldest first)
  mcp-ssh-gateway actions list|approve ID|deny ID [--reason TEXT]   (calls that wait for a person; actions --help)
(keys --help explains the keys commands)
`

const keysUsage = `Edge keys in AUTHORIZED_KEYS_FILE (a running gateway picks every change up at once):
  mcp-ssh-gateway keys list
      the authorized keys with their bound names and labels
  mcp-ssh-gateway keys add [--name NAME] [--labels k=v,…] PUBLIC_KEY_LINE|-
      authorize a public key line (- reads it from stdin)
  mcp-ssh-gateway keys revoke NAME|SHA256:FINGERPRINT
      remove a key; its tunnel closes within seconds, and its later attempts show in
      keys pending as revoked, not as a new device
  mcp-ssh-gateway keys label NAME|SHA256:FINGERPRINT k=v,… [--replace]
      change a key's labels in place: merged into its labels (k= removes k), or with
      --replace instead of them (--replace with no k=v removes them all)
  mcp-ssh-gateway keys pending
      keys that proved they hold their private key but are not authorized
  mcp-ssh-gateway keys approve SHA256:FINGERPRINT --name NAME [--labels k=v,…]
      authorize a pending key under NAME. The name a pending edge asked for is its own
      unverified claim (any device can ask for any name), so give --name, or
      --use-requested-name to bind the requested name after checking it

Flags may come before or after the arguments. Exit status: 0 ok, 1 failure, 2 usage.
`

// isHelp reports whether an argument asks for help.
func isHelp(a string) bool { return slices.Contains([]string{"--help", "-help", "-h", "help"}, a) }

// isAdminCommand reports whether args name an admin command.
func isAdminCommand(args []string) bool {
	return len(args) > 0 && slices.Contains([]string{"keys", "enroll-token", "audit", "actions"}, args[0])
}

// runAdmin runs one admin command: 0 ok, 1 failure, 2 usage.
func runAdmin(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if args[0] == "actions" {
		return runActions(args[1:], stdout, stderr)
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "mcp-ssh-gateway: "+format+"\n", a...)
		return code
	}
	if slices.ContainsFunc(args[1:], isHelp) {
		if args[0] == "keys" {
			fmt.Fprint(stdout, keysUsage)
		} else {
			fmt.Fprint(stdout, adminUsage)
		}
		return 0
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
	replace := fs.Bool("replace", false, "keys label: replace the labels instead of merging")
	useRequested := fs.Bool("use-requested-name", false, "keys approve: bind the name the edge asked for")
	rest := args[min(2, len(args)):]
	if cmd == "enroll-token" {
		rest = args[1:]
	}
	var pos []string
	for { // flags before or after the arguments
		if err := fs.Parse(rest); err != nil {
			// The error text is not shown: it may quote an argument, and that may be a secret.
			return fail(2, "%s: bad flags (--name, --labels, --ttl, --replace and --use-requested-name exist)\n%s", cmd, adminUsage)
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		pos, rest = append(pos, rest[0]), rest[1:]
	}
	labels, err := parseLabelFlag(*labelsFlag)
	if err != nil {
		return fail(2, "--labels: %v", err)
	}
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
		// Lines the gateway cannot use as written are not listed above: say which and why.
		if ws, err := gateway.CheckAuthorizedKeysFile(cfg.AuthorizedKeys); err == nil {
			for _, w := range ws {
				fmt.Fprintf(stderr, "warning: %s: %s\n", cfg.AuthorizedKeys, w)
			}
		}
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
		forgetPending(cfg, k.Fingerprint, stderr)
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
		if cfg.StateDir != "" {
			if err := gateway.RememberRevoked(cfg.StateDir, r); err != nil {
				fmt.Fprintf(stderr, "mcp-ssh-gateway: warning: the key is revoked, but its later attempts will show as a new pending key: %v\n", err)
			}
		}
		fmt.Fprintf(stdout, "revoked %s %s (a running gateway closes its tunnel within seconds)\n", r.Fingerprint, dash(r.Name))
		return 0
	case "keys pending":
		if !want(0) {
			break
		}
		ps, err := gateway.ListPending(cfg.StateDir, cfg.AuthorizedKeys, log)
		if err != nil {
			return fail(1, "%v", err)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FINGERPRINT\tSTATUS\tREQUESTED NAME (unverified)\tREMOTE ADDR\tFIRST ATTEMPT\tLAST ATTEMPT\tATTEMPTS")
		for _, p := range ps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", p.Fingerprint, pendingStatus(p), dash(p.RequestedName), p.RemoteAddr,
				p.FirstAttempt.UTC().Format(time.RFC3339), p.LastAttempt.UTC().Format(time.RFC3339), p.Attempts)
		}
		tw.Flush()
		return 0
	case "keys approve":
		if !want(1) {
			break
		}
		switch {
		case *name == "" && !*useRequested:
			return fail(2, "keys approve: give --name NAME: the name a pending edge asked for is its own unverified claim; "+
				"--use-requested-name binds it anyway, once you have checked it in `keys pending`")
		case *name != "" && *useRequested:
			return fail(2, "keys approve: give --name NAME or --use-requested-name, not both")
		}
		p, ok, err := gateway.PendingKey(cfg.StateDir, pos[0])
		if err != nil {
			return fail(1, "%v", err)
		}
		if ok && *useRequested && p.RequestedName == "" {
			return fail(1, "keys approve: %s asked for no valid name: give --name NAME", p.Fingerprint)
		}
		k, err := gateway.ApprovePending(cfg.StateDir, cfg.AuthorizedKeys, pos[0], *name, labels, log)
		if err != nil {
			return fail(1, "%v", err)
		}
		if p.Revoked != nil {
			fmt.Fprintf(stderr, "mcp-ssh-gateway: note: this key was revoked on %s (it was %s) and is authorized again\n",
				p.Revoked.RevokedAt.UTC().Format(time.RFC3339), dash(p.Revoked.Name))
		}
		fmt.Fprintf(stdout, "approved %s %s %s\n", k.Fingerprint, dash(k.Name), formatLabels(k.Labels))
		return 0
	case "keys label":
		if (!want(2) && !(want(1) && *replace)) || *labelsFlag != "" {
			break
		}
		var l map[string]string
		if want(2) {
			if l, err = parseLabelFlag(pos[1]); err != nil {
				return fail(2, "keys label: %v", err)
			}
		}
		r, err := gateway.SetKeyLabels(cfg.AuthorizedKeys, pos[0], l, *replace, log)
		if err != nil {
			return fail(1, "%v", err)
		}
		fmt.Fprintf(stdout, "labels of %s %s: %s (were %s; a running gateway uses them at once)\n", r.Fingerprint, dash(r.Name),
			formatLabels(r.New), formatLabels(r.Old))
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
	usage := adminUsage
	if args[0] == "keys" {
		usage = keysUsage
	}
	return fail(2, "bad usage of %q\n%s", strings.Join(args, " "), usage)
}

// forgetPending takes a key just authorized out of the pending list, warning on failure.
func forgetPending(cfg *config, fp string, stderr io.Writer) {
	if cfg.StateDir == "" {
		return
	}
	if err := gateway.ForgetKey(cfg.StateDir, fp); err != nil {
		fmt.Fprintf(stderr, "mcp-ssh-gateway: warning: the key is authorized, but `keys pending` may still list it: %v\n", err)
	}
}

// pendingStatus is the STATUS column of keys pending: new, or revoked with when and as what.
func pendingStatus(p gateway.PendingEdge) string {
	if p.Revoked == nil {
		return "new"
	}
	s := "revoked " + p.Revoked.RevokedAt.UTC().Format(time.RFC3339)
	if p.Revoked.Name != "" {
		s += " (was " + p.Revoked.Name + ")"
	}
	return s
}

const actionsUsage = `Calls that wait for a person (POLICY_FILE rules with approval: [...]):
  mcp-ssh-gateway actions list                        what waits, oldest first
  mcp-ssh-gateway actions approve ID [--reason TEXT]  let the waiting call go ahead
  mcp-ssh-gateway actions deny ID [--reason TEXT]     refuse it; the model reads the reason

They work on STATE_DIR/actions, the same files as the running gateway, which notices a
decision within a second. A call nobody decides is refused when approval_timeout_seconds
runs out (silence is no). The audit log records the approver as cli:<unix user>.
`

// runActions runs `actions list|approve|deny`: 0 ok, 1 failure, 2 usage. Like the
// keys commands it works on the files of a running gateway and needs none of its locks.
func runActions(args []string, stdout, stderr io.Writer) int {
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "mcp-ssh-gateway: "+format+"\n", a...)
		return code
	}
	if slices.ContainsFunc(args, func(a string) bool { return slices.Contains([]string{"--help", "-help", "-h", "help"}, a) }) {
		fmt.Fprint(stdout, actionsUsage)
		return 0
	}
	if len(args) == 0 {
		return fail(2, "actions: say list, approve ID or deny ID\n%s", actionsUsage)
	}
	sub := args[0]
	fs := flag.NewFlagSet("actions "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	reason := fs.String("reason", "", "why (shown to the model and audited)")
	var pos []string
	for rest := args[1:]; ; { // flags before or after the ID
		if err := fs.Parse(rest); err != nil {
			return fail(2, "actions %s: bad flags (only --reason exists)\n%s", sub, actionsUsage)
		}
		if rest = fs.Args(); len(rest) == 0 {
			break
		}
		pos, rest = append(pos, rest[0]), rest[1:]
	}
	// Arguments are not echoed: a mistaken paste could be a token.
	switch {
	case sub == "list" && len(pos) == 0 && *reason == "":
	case (sub == "approve" || sub == "deny") && len(pos) == 1:
	case sub == "list":
		return fail(2, "actions list: bad usage (it takes no arguments)\n%s", actionsUsage)
	case sub == "approve" || sub == "deny":
		return fail(2, "actions %s: bad usage (give one action ID)\n%s", sub, actionsUsage)
	default:
		return fail(2, "actions: bad usage (say list, approve ID or deny ID)\n%s", actionsUsage)
	}
	cfg, err := loadConfig()
	if err != nil {
		return fail(2, "%v", err)
	}
	log := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	st, err := approval.Open(cfg.StateDir, log)
	if err != nil {
		return fail(1, "%v", err)
	}
	defer st.Close()

	if sub == "list" {
		l, err := st.List()
		if err != nil {
			return fail(1, "%v", err)
		}
		now := time.Now()
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tAGE\tEXPIRES IN\tACTOR\tROLE\tTOOL\tEDGE\tSUMMARY")
		for _, a := range l {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, now.Sub(a.Created).Round(time.Second), a.Expires.Sub(now).Round(time.Second),
				dash(a.Actor), dash(a.Role), a.Tool, dash(a.Edge), dash(a.Summary))
		}
		tw.Flush()
		return 0
	}
	id := strings.ToLower(strings.TrimSpace(pos[0]))
	if !approval.ValidID(id) {
		return fail(2, "actions %s: an action ID is 12 hex characters, as `mcp-ssh-gateway actions list` shows", sub)
	}
	a, err := st.Decide(id, sub == "approve", cliApprover(), *reason)
	if errors.Is(err, approval.ErrNotPending) {
		return fail(1, "%v; `mcp-ssh-gateway actions list` shows what waits", err)
	}
	if err != nil {
		return fail(1, "%v", err)
	}
	if sub == "approve" {
		fmt.Fprintf(stdout, "approved %s: %s on %s for %s (the waiting call goes ahead now)\n", a.ID, a.Tool, dash(a.Edge), dash(a.Actor))
	} else {
		fmt.Fprintf(stdout, "denied %s: %s on %s for %s (the waiting call is refused now)\n", a.ID, a.Tool, dash(a.Edge), dash(a.Actor))
	}
	return 0
}

// cliApprover names the person deciding from the CLI, as the audit log records it.
func cliApprover() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return "cli:uid=" + strconv.Itoa(os.Getuid())
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

// auditVerify checks the given files, or AUDIT_LOG with its rotated files, as one chain in
// order (audit.VerifyFiles): hashes, sequence numbers, and, for AUDIT_LOG, its anchor
// (AUDIT_LOG.anchor), which shows a log cut short or missing its oldest or current file.
// Files named on the command line are checked without the anchor.
func auditVerify(cfg *config, files []string, stdout, stderr io.Writer) int {
	var anchor *audit.Anchor
	if len(files) == 0 {
		if cfg.AuditLog == "-" {
			fmt.Fprintln(stderr, "mcp-ssh-gateway: AUDIT_LOG is stderr: give the files to verify")
			return 2
		}
		// The anchor first: a rotation after it only adds lines to what is listed next.
		var err error
		if anchor, err = audit.ReadAnchor(audit.AnchorPath(cfg.AuditLog)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "audit verify: %v\n", err)
			return 1
		}
		if files, err = audit.Files(cfg.AuditLog); err != nil {
			fmt.Fprintf(stderr, "mcp-ssh-gateway: %v\n", err)
			return 1
		}
		if anchor == nil {
			fmt.Fprintf(stderr, "audit verify: no anchor %s: without it a truncated log or a removed file cannot be detected\n", audit.AnchorPath(cfg.AuditLog))
			return 1
		}
	}
	rep, err := audit.VerifyFiles(files, anchor)
	if err != nil {
		fmt.Fprintf(stderr, "audit verify: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "audit log intact: %d lines in %d file(s)", rep.Lines, rep.Files)
	if rep.LastSeq > 0 {
		fmt.Fprintf(stdout, ", seq %d to %d", rep.FirstSeq, rep.LastSeq)
	}
	if rep.Anchored {
		fmt.Fprintf(stdout, ", matching its anchor (seq %d)\n", anchor.LastSeq)
	} else {
		fmt.Fprintln(stdout, "; no anchor checked: lines removed at either end would not show")
	}
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
