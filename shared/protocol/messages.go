package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// Version is the protocol version this build speaks. A peer that sends a higher version gets a
// CodeUnsupportedVersion error naming the version it can use, so the gateway speaks to each
// edge at the lower of the two versions (Hello.Protocol) and uses no newer feature.
//
//	1: exec, upload, device_info, jobs, download.
//	2: upload bodies may end with a FrameDigest instead of an empty FrameData
//	   (UploadParams.SHA256Trailer): a file is hashed while it is sent, in one pass.
const Version = 2

// VersionDigestTrailer is the first version with UploadParams.SHA256Trailer.
const VersionDigestTrailer = 2

// ReplacedRequest is the SSH global request (no reply wanted) the gateway sends on an edge's
// connection before closing it because a newer connection of the same key took its place:
// the edge can then say that another device may share its key.
const ReplacedRequest = "replaced@mcp-ssh-gateway"

// ChannelType is the SSH channel type that carries the yamux session. The gateway rejects every
// other channel type.
const ChannelType = "mcp-tunnel@mcp-ssh-gateway"

// Methods an edge serves.
const (
	MethodExec       = "exec"
	MethodUpload     = "upload"
	MethodDeviceInfo = "device_info"
)

// Error codes an edge returns in a Response. The gateway turns them into messages for the model.
const (
	CodeBadRequest         = "bad_request"
	CodeUnknownMethod      = "unknown_method"
	CodeUnsupportedVersion = "unsupported_version"
	CodeUnsupported        = "unsupported" // this kind of edge cannot serve the call (e.g. jobs without the companion)
	CodePolicy             = "policy"      // the edge's own policy refused the request
	CodeBusy               = "busy"        // EDGE_MAX_CONCURRENT RPCs already running
	CodePaused             = "paused"      // the device owner ran `mcp-ssh-edge pause`
	CodeExists             = "exists"      // upload target exists and overwrite is false
	CodeNotFound           = "not_found"
	CodeIO                 = "io"
	CodeCancelled          = "cancelled"
	CodeInternal           = "internal"
)

// Bounds on fields that arrive from a peer.
const (
	MaxNameLen   = 63
	MaxLabels    = 64
	MaxLabelLen  = 256
	MaxArgv      = 4096
	MaxEnv       = 1024
	MaxPathLen   = 4096
	MaxStringLen = 64 << 10
)

// Hello is what an edge says about itself when it opens the tunnel channel. None of it is
// trusted for selection: labels here are only ever shown as reported_labels.
type Hello struct {
	Protocol      int               `json:"protocol"`
	Name          string            `json:"name"`
	Labels        map[string]string `json:"labels,omitempty"`
	Version       string            `json:"version"`
	OS            string            `json:"os"`
	Arch          string            `json:"arch"`
	MaxConcurrent int               `json:"max_concurrent"`
}

// Request is the first frame of every stream.
type Request struct {
	V      int             `json:"v"`
	ID     string          `json:"id"`
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

// Response is the last frame of every stream: exactly one of Result or Error is set.
type Response struct {
	V      int             `json:"v"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *Error          `json:"error,omitempty"`
}

// Error is a failure the edge reports for one RPC.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ExecParams asks the edge to run one process. Exactly one of Argv or Command is set.
type ExecParams struct {
	Argv           []string          `json:"argv,omitempty"`
	Command        string            `json:"command,omitempty"`
	Cwd            string            `json:"cwd,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Stdin          bool              `json:"stdin,omitempty"` // FrameData frames follow
	TimeoutMs      int64             `json:"timeout_ms"`
	MaxOutputBytes int64             `json:"max_output_bytes"`
	RunAs          string            `json:"run_as,omitempty"` // user to run as; the edge's EDGE_ALLOW_RUN_AS must list it
}

// ExecResult ends an exec stream; the output itself came before it in stdout/stderr frames.
type ExecResult struct {
	ExitCode        int    `json:"exit_code"`
	Signal          string `json:"signal"`
	StdoutTruncated bool   `json:"stdout_truncated"`
	StderrTruncated bool   `json:"stderr_truncated"`
	TimedOut        bool   `json:"timed_out"`
	Cancelled       bool   `json:"cancelled"`
	DurationMs      int64  `json:"duration_ms"`
}

// UploadParams announces a file; exactly Size bytes of FrameData follow, then an empty one,
// or with SHA256Trailer a FrameDigest.
type UploadParams struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lower-case hex of the content; "" with SHA256Trailer
	// SHA256Trailer (protocol 2) says the SHA-256 comes after the content, in the FrameDigest
	// that ends the body, instead of in SHA256.
	SHA256Trailer bool   `json:"sha256_trailer,omitempty"`
	Mode          uint32 `json:"mode"` // permission bits only
	Overwrite     bool   `json:"overwrite"`
	CreateDirs    bool   `json:"create_dirs"`
	// Within confines this upload to directories the gateway's policy allows: Path must lie
	// below one of them as well as inside the edge's own EDGE_UPLOAD_DIRS (the gateway can
	// only narrow the edge's policy). Each is absolute and clean, names an existing directory
	// and is enforced like the edge's own: no "..", no symlink leading out. Empty: only the
	// edge's own directories apply. An edge older than this field refuses it as unknown.
	Within []string `json:"within,omitempty"`
}

// UploadResult is what the edge wrote and verified.
type UploadResult struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	Mode   string `json:"mode"` // octal, e.g. "0644"
}

// DeviceInfoParams asks for the device inventory.
type DeviceInfoParams struct {
	Refresh bool `json:"refresh,omitempty"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether s is a valid edge name (lower-case letters, digits, '.', '_' and
// '-', starting with a letter or digit, at most 63 bytes), after case folding by the caller.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// Validate checks a Hello received from an edge, and normalises it: maps are never nil.
func (h *Hello) Validate() error {
	if h.Protocol < 1 {
		return fmt.Errorf("hello: protocol version %d is not supported (this gateway speaks %d)", h.Protocol, Version)
	}
	if len(h.Name) > MaxNameLen*2 {
		return errors.New("hello: name too long")
	}
	if err := ValidateLabels(h.Labels); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	for field, v := range map[string]string{"version": h.Version, "os": h.OS, "arch": h.Arch} {
		if len(v) > 128 {
			return fmt.Errorf("hello: %s too long", field)
		}
	}
	if h.Labels == nil {
		h.Labels = map[string]string{}
	}
	if h.MaxConcurrent < 1 || h.MaxConcurrent > 4096 {
		h.MaxConcurrent = 32
	}
	return nil
}

// ValidateLabels bounds a label map: count, key and value length, and key syntax.
func ValidateLabels(l map[string]string) error {
	if len(l) > MaxLabels {
		return fmt.Errorf("too many labels (%d, max %d)", len(l), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(l)) {
		if k == "" || len(k) > MaxLabelLen || !labelKeyRE.MatchString(k) {
			return fmt.Errorf("label key %q is invalid (letters, digits, '.', '_', '-', '/', at most %d)", trunc(k), MaxLabelLen)
		}
		if len(l[k]) > MaxLabelLen {
			return fmt.Errorf("label %q: value longer than %d", k, MaxLabelLen)
		}
	}
	return nil
}

var labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]*$`)

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// Validate checks exec parameters for shape and bounds: what holds at the trust boundary
// whatever the gateway checked. Policy is the edge's business. Each message names the field.
func (p *ExecParams) Validate() error {
	if (len(p.Argv) == 0) == (p.Command == "") {
		return errors.New("exactly one of argv or command is required")
	}
	if err := validateArgv(p.Argv); err != nil {
		return err
	}
	if len(p.Command) > MaxStringLen {
		return fmt.Errorf("command is %d bytes (max %d): put a long script in a file and run that", len(p.Command), MaxStringLen)
	}
	if err := validateText("command", p.Command, MaxStringLen); err != nil {
		return err
	}
	if err := validateEnv(p.Env); err != nil {
		return err
	}
	if err := validateText("cwd", p.Cwd, MaxPathLen); err != nil {
		return err
	}
	if p.TimeoutMs <= 0 {
		return errors.New("timeout_ms must be positive")
	}
	if p.MaxOutputBytes <= 0 {
		return errors.New("max_output_bytes must be positive")
	}
	if len(p.RunAs) > 64 || containsAny(p.RunAs, "\x00/:") {
		return fmt.Errorf("run_as %q is not a valid user name", trunc(p.RunAs))
	}
	return nil
}

// MaxArgvBytes bounds the bytes of all argv elements together, which leaves room in the
// request's JSON frame (MaxJSONFrame) for escaping and the other fields.
const MaxArgvBytes = MaxJSONFrame / 2

// validateArgv bounds argv's length, element by element and in total, and refuses an empty
// program name and NUL bytes (which no exec system call can pass on).
func validateArgv(argv []string) error {
	if len(argv) > MaxArgv {
		return fmt.Errorf("argv has %d elements (max %d)", len(argv), MaxArgv)
	}
	if len(argv) > 0 && argv[0] == "" {
		return errors.New("argv[0] is empty: give the program to run")
	}
	total := 0
	for i, a := range argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("argv[%d] contains a NUL byte", i)
		}
		total += len(a)
	}
	if total > MaxArgvBytes {
		return fmt.Errorf("argv is %d bytes in total (max %d)", total, MaxArgvBytes)
	}
	return nil
}

// validateEnv bounds the environment a caller adds: entry count, name syntax, value size and
// NUL bytes. Names are checked in sorted order, so the message is the same on every call.
func validateEnv(env map[string]string) error {
	if len(env) > MaxEnv {
		return fmt.Errorf("env has %d entries (max %d)", len(env), MaxEnv)
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if k == "" || len(k) > 256 || containsAny(k, "=\x00") {
			return fmt.Errorf("env name %q is invalid: 1 to 256 bytes, no '=' and no NUL", trunc(k))
		}
		if problem := textProblem(env[k], MaxStringLen); problem != "" {
			return fmt.Errorf("env %q: value %s", trunc(k), problem)
		}
	}
	return nil
}

// validateText refuses a string field longer than max bytes or holding a NUL byte.
func validateText(field, s string, max int) error {
	if problem := textProblem(s, max); problem != "" {
		return fmt.Errorf("%s %s", field, problem)
	}
	return nil
}

// textProblem says what is wrong with a string bounded to max bytes, or "" if nothing is.
func textProblem(s string, max int) string {
	switch {
	case len(s) > max:
		return fmt.Sprintf("is %d bytes (max %d)", len(s), max)
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL byte"
	}
	return ""
}

// Validate checks upload parameters for shape and bounds.
func (p *UploadParams) Validate() error {
	if err := validateTarget(p.Path, p.Within); err != nil {
		return err
	}
	if p.Size < 0 {
		return errors.New("size is negative")
	}
	switch {
	case p.SHA256Trailer && p.SHA256 != "":
		return errors.New("sha256 must be empty when sha256_trailer is set")
	case !p.SHA256Trailer && !ValidSHA256(strings.ToLower(p.SHA256)):
		return errors.New("sha256 must be 64 hex characters")
	}
	if p.Mode&^0o7777 != 0 {
		return fmt.Errorf("mode %#o has bits beyond permissions", p.Mode)
	}
	return nil
}

// ValidSHA256 reports whether s is a SHA-256 in lower-case hex.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func containsAny(s, chars string) bool {
	for i := 0; i < len(s); i++ {
		for j := 0; j < len(chars); j++ {
			if s[i] == chars[j] {
				return true
			}
		}
	}
	return false
}

// WriteJSON marshals v and writes it as one frame of type t.
func WriteJSON(w io.Writer, t FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("protocol: encode %s: %w", t, err)
	}
	return WriteFrame(w, t, b)
}

// DecodeRequest parses a request frame payload. It rejects a version above Version with an
// *Error of code CodeUnsupportedVersion, so the gateway learns what this edge speaks.
func DecodeRequest(p []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(p, &r); err != nil {
		return nil, Errorf(CodeBadRequest, "request is not valid JSON: %v", err)
	}
	if r.V < 1 {
		return nil, Errorf(CodeBadRequest, "request has no protocol version")
	}
	if r.V > Version {
		return nil, Errorf(CodeUnsupportedVersion, "request uses protocol %d; this edge speaks %d", r.V, Version)
	}
	if r.Method == "" || len(r.Method) > 64 {
		return nil, Errorf(CodeBadRequest, "request has no valid method")
	}
	if len(r.ID) > 128 {
		return nil, Errorf(CodeBadRequest, "request id too long")
	}
	return &r, nil
}

// DecodeParams unmarshals r.Params into v, strictly: unknown fields are errors, so a gateway
// newer than the edge learns that a field it relies on is not understood.
func (r *Request) DecodeParams(v any) error {
	if len(r.Params) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(r.Params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeBadRequest, "%s params: %v", r.Method, err)
	}
	return nil
}

// DecodeResponse parses a result frame payload into its result (if v is non-nil) or its error.
func DecodeResponse(p []byte, v any) error {
	var resp Response
	if err := json.Unmarshal(p, &resp); err != nil {
		return fmt.Errorf("protocol: bad response from edge: %w", err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	if v == nil || len(resp.Result) == 0 {
		return nil
	}
	if err := json.Unmarshal(resp.Result, v); err != nil {
		return fmt.Errorf("protocol: bad result from edge: %w", err)
	}
	return nil
}

// NewResult builds a successful Response around v.
func NewResult(v any) (*Response, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return &Response{V: Version, Result: b}, nil
}
