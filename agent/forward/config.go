package forward

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/configfile"
)

// Bounds on FORWARD_EDGES_FILE.
const (
	// MaxFileBytes bounds the file read.
	MaxFileBytes = 4 << 20
	// MaxEntries bounds the hosts one file lists.
	MaxEntries = 10000
	maxAddrLen = 300
	maxUserLen = 64
)

// Entry is one host of FORWARD_EDGES_FILE, validated: the name is lower-case, the address has a
// port, the host key is pinned and the labels are bounded.
type Entry struct {
	Name    string            // edge name (protocol.ValidName)
	Address string            // host:port
	User    string            // login user
	Labels  map[string]string // bound here: the only ones that select; never nil
	// HostKey is the pinned key when the file gives an authorized_keys line; nil when it
	// gives only a fingerprint.
	HostKey ssh.PublicKey
	// Fingerprint is the SHA256:… fingerprint of the pinned host key; it is the edge's
	// fingerprint in get_status unless ID is set.
	Fingerprint string

	// The fields below are never read from the file: an agentless edge (ServeAgentless)
	// fills them from its authorized_keys line and its reverse tunnel.

	// Dial, when set, opens the connection to the device instead of dialling Address.
	Dial func(ctx context.Context) (net.Conn, error)
	// Kind is the edge's kind in get_status; "" means Kind (forward).
	Kind string
	// ID is the edge's fingerprint in get_status and the audit log when it is not the host
	// key's (an agentless edge: its authorized key).
	ID string
	// PinSource names where the pin is configured, for error messages; "" is the file.
	PinSource string
}

// id is the edge's fingerprint in get_status, audit and resolution.
func (e *Entry) id() string { return cmp.Or(e.ID, e.Fingerprint) }

// kind is the edge's kind in get_status.
func (e *Entry) kind() string { return cmp.Or(e.Kind, Kind) }

// rawEntry is one list item as written in the file.
type rawEntry struct {
	Name    string            `yaml:"name"`
	Address string            `yaml:"address"`
	User    string            `yaml:"user"`
	HostKey string            `yaml:"host_key"`
	Labels  map[string]string `yaml:"labels"`
}

var userRE = regexp.MustCompile(`^[A-Za-z0-9._][A-Za-z0-9._@-]*$`)

// ParseFile parses the contents of a FORWARD_EDGES_FILE: a YAML list of
// {name, address, user, host_key, labels}. Decoding is strict (an unknown field is an error),
// every field is bounded, names and host keys are unique, and every error names the entry.
// An empty document is an empty list.
func ParseFile(data []byte) ([]Entry, error) {
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("forward edges file is %d bytes (max %d)", len(data), MaxFileBytes)
	}
	var raw []rawEntry
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("forward edges file: %w (want a YAML list of {name, address, user, host_key, labels})", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("forward edges file: more than one YAML document")
	}
	if len(raw) > MaxEntries {
		return nil, fmt.Errorf("forward edges file lists %d hosts (max %d)", len(raw), MaxEntries)
	}
	out := make([]Entry, 0, len(raw))
	names := map[string]int{}
	fps := map[string]int{}
	for i, r := range raw {
		e, err := r.validate()
		if err != nil {
			return nil, fmt.Errorf("forward edges file: entry %d (%s): %w", i+1, entryLabel(r.Name), err)
		}
		if j, dup := names[e.Name]; dup {
			return nil, fmt.Errorf("forward edges file: entry %d (%s): name already used by entry %d", i+1, entryLabel(e.Name), j)
		}
		if j, dup := fps[e.Fingerprint]; dup {
			return nil, fmt.Errorf("forward edges file: entry %d (%s): host_key %s already pinned by entry %d (each host needs its own key)", i+1, entryLabel(e.Name), e.Fingerprint, j)
		}
		names[e.Name], fps[e.Fingerprint] = i+1, i+1
		out = append(out, e)
	}
	return out, nil
}

func entryLabel(name string) string {
	if name == "" {
		return "no name"
	}
	if len(name) > 64 {
		name = name[:64] + "…"
	}
	return strconv.Quote(name)
}

func (r rawEntry) validate() (Entry, error) {
	e := Entry{Name: strings.ToLower(strings.TrimSpace(r.Name)), User: strings.TrimSpace(r.User)}
	if !protocol.ValidName(e.Name) {
		return e, errors.New("name must be 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	addr, err := normalizeAddress(strings.TrimSpace(r.Address))
	if err != nil {
		return e, err
	}
	e.Address = addr
	if e.User == "" || len(e.User) > maxUserLen || !userRE.MatchString(e.User) {
		return e, fmt.Errorf("user %q is not a valid login name (letters, digits, '.', '_', '-', '@'; at most %d)", trunc(e.User, 40), maxUserLen)
	}
	if e.HostKey, e.Fingerprint, err = parsePin(strings.TrimSpace(r.HostKey)); err != nil {
		return e, err
	}
	if err := protocol.ValidateLabels(r.Labels); err != nil {
		return e, err
	}
	e.Labels = make(map[string]string, len(r.Labels))
	for k, v := range r.Labels {
		e.Labels[k] = v
	}
	return e, nil
}

// normalizeAddress checks host[:port] and adds port 22 when there is none.
func normalizeAddress(a string) (string, error) {
	if a == "" {
		return "", errors.New("address is required (host or host:port)")
	}
	if len(a) > maxAddrLen {
		return "", fmt.Errorf("address is %d bytes (max %d)", len(a), maxAddrLen)
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		// No port: a bare host name or IPv6 literal.
		host, port = strings.TrimSuffix(strings.TrimPrefix(a, "["), "]"), "22"
	}
	if host == "" || strings.ContainsAny(host, " \t\r\n/\x00@") {
		return "", fmt.Errorf("address %q has no valid host", trunc(a, 60))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("address %q has no valid port", trunc(a, 60))
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// parsePin reads host_key: a SHA256:… fingerprint or one authorized_keys-format public key.
func parsePin(s string) (ssh.PublicKey, string, error) {
	switch {
	case s == "":
		return nil, "", errors.New("host_key is required: the device's SHA256:… fingerprint (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) or its public key line")
	case len(s) > 16<<10:
		return nil, "", errors.New("host_key is too long")
	case strings.HasPrefix(s, "SHA256:"):
		if len(s) != len("SHA256:")+43 || strings.ContainsAny(s[7:], " \t=") {
			return nil, "", fmt.Errorf("host_key %q is not a SHA256 fingerprint (SHA256: and 43 base64 characters)", trunc(s, 60))
		}
		return nil, s, nil
	}
	pub, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, "", fmt.Errorf("host_key is neither a SHA256:… fingerprint nor a public key line: %v", err)
	}
	if len(opts) > 0 || len(bytes.TrimSpace(rest)) > 0 {
		return nil, "", errors.New("host_key must be exactly one public key, without options")
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return nil, "", errors.New("host_key must be a plain public key, not a certificate")
	}
	return pub, ssh.FingerprintSHA256(pub), nil
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// fileStamp identifies a version of the file: a reload happens only when it changes.
type fileStamp = configfile.Stamp

// readFile reads a regular file of at most MaxFileBytes. A missing file reads as empty, with
// Exists false in the stamp.
func readFile(name string) ([]byte, fileStamp, error) {
	data, st, err := configfile.Read(name, "forward edges file", MaxFileBytes)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fileStamp{}, nil
	}
	return data, st, err
}

func statFile(name string) fileStamp { return configfile.StatStamp(name) }
