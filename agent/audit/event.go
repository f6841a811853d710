package audit

// Event is one line of the audit log. Empty fields are left out of the line.
// Never put a token, private key, stdin or file content in an Event.
type Event struct {
	Time string `json:"time"` // set by Logger.Write
	// Seq numbers the lines of the whole log (across rotated files) from 1, without gaps; set
	// by Logger.Write. Lines written before sequence numbers existed have none (0).
	Seq uint64 `json:"seq,omitempty"`
	// Event is one of intent, outcome, edge_connect, edge_disconnect, auth_failure,
	// auth_failure_summary, host_key_refused, edge_refused, edge_penalized, source_penalized,
	// key_added, key_revoked, key_approved, key_enrolled, name_bound, and the log's own
	// audit_pruned (rotated files deleted by retention) and audit_anchor_mismatch (at open,
	// the log ended before its anchor: lines were lost).
	Event       string `json:"event"`
	RequestID   string `json:"request_id,omitempty"`
	Actor       string `json:"actor,omitempty"` // "stdio", or "http:<token name>"
	Tool        string `json:"tool,omitempty"`
	Edge        string `json:"edge,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	// Gateway and EdgeGateway name both gateways of a call relayed in a cluster: the one that
	// wrote the line, and the one the edge is connected to.
	Gateway     string   `json:"gateway,omitempty"`
	EdgeGateway string   `json:"edge_gateway,omitempty"`
	RemoteAddr  string   `json:"remote_addr,omitempty"`
	Argv        []string `json:"argv,omitempty"`
	Command     string   `json:"command,omitempty"`
	Cwd         string   `json:"cwd,omitempty"`
	Env         []string `json:"env,omitempty"` // names only, never values
	Path        string   `json:"path,omitempty"`
	ExitCode    *int     `json:"exit_code,omitempty"`
	DurationMs  *int64   `json:"duration_ms,omitempty"`
	Bytes       *int64   `json:"bytes,omitempty"`
	SHA256      string   `json:"sha256,omitempty"`
	Outcome     string   `json:"outcome,omitempty"`  // ok, error, refused, timeout, cancelled
	Approver    string   `json:"approver,omitempty"` // who approved or denied a call that waited for a person
	Error       string   `json:"error,omitempty"`
	Prev        string   `json:"prev"` // SHA-256 (hex) of the previous line; set by Logger.Write
}
