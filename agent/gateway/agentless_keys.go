package gateway

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/crypto/ssh"
)

// The options of an authorized_keys line that marks a key agentless (SPEC §9).
const (
	optAgentless = "agentless"
	optUser      = "user"
	optHostKey   = "host_key"
)

// Bounds on authorized_keys line warnings and agentless options.
const (
	// maxLineWarnings bounds the warnings kept for one file; the last one says how many more.
	maxLineWarnings = 100
	maxReasonLen    = 300
	maxPinLen       = 16 << 10
	maxPOSIXUser    = 32
)

// posixUser is a portable POSIX user name (the portable filename character set, not starting
// with a hyphen), at most maxPOSIXUser bytes.
var posixUser = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]*$`)

// agentlessLogin is how the gateway logs in to an agentless device's sshd through its reverse
// tunnel: as user, pinning the host key (the key itself, or only its fingerprint).
type agentlessLogin struct {
	user    string
	hostKey ssh.PublicKey // nil when only the fingerprint is pinned
	hostFP  string        // SHA256:… of the pinned host key
}

// same reports whether two logins are the same (either may be nil).
func (l *agentlessLogin) same(o *agentlessLogin) bool {
	if l == nil || o == nil {
		return l == o
	}
	return l.user == o.user && l.hostFP == o.hostFP && (l.hostKey == nil) == (o.hostKey == nil) &&
		(l.hostKey == nil || string(l.hostKey.Marshal()) == string(o.hostKey.Marshal()))
}

// parseAgentless validates the user= and host_key= options of a line marked agentless.
func parseAgentless(user, hostKey *string) (*agentlessLogin, error) {
	var missing []string
	if user == nil || *user == "" {
		missing = append(missing, `user="…" (the device account the gateway logs in as)`)
	}
	if hostKey == nil || *hostKey == "" {
		missing = append(missing, `host_key="SHA256:…" (the device sshd's host key fingerprint or key)`)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("agentless line without %s", strings.Join(missing, " and "))
	}
	if len(*user) > maxPOSIXUser || !posixUser.MatchString(*user) {
		return nil, fmt.Errorf("agentless user %q is not a POSIX user name (1-%d of A-Z a-z 0-9 . _ -, not starting with -)",
			trunc(*user, 40), maxPOSIXUser)
	}
	pub, fp, err := parseHostKeyPin(*hostKey)
	if err != nil {
		return nil, err
	}
	return &agentlessLogin{user: *user, hostKey: pub, hostFP: fp}, nil
}

// parseHostKeyPin reads host_key: a SHA256:… fingerprint (43 base64 characters, as ssh-keygen
// -l prints it) or one public key ("ssh-ed25519 AAAA…", no options, not a certificate).
func parseHostKeyPin(s string) (ssh.PublicKey, string, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxPinLen {
		return nil, "", errors.New("agentless host_key is too long")
	}
	if strings.HasPrefix(s, "SHA256:") {
		b, err := base64.RawStdEncoding.DecodeString(s[len("SHA256:"):])
		if err != nil || len(b) != 32 {
			return nil, "", fmt.Errorf("agentless host_key %q is not a SHA256 fingerprint (SHA256: and 43 base64 characters)", trunc(s, 60))
		}
		return nil, s, nil
	}
	pub, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil || len(opts) > 0 || len(bytes.TrimSpace(rest)) > 0 {
		return nil, "", errors.New("agentless host_key is neither a SHA256:… fingerprint nor one public key (type and base64)")
	}
	if _, isCert := pub.(*ssh.Certificate); isCert {
		return nil, "", errors.New("agentless host_key must be a plain public key, not a certificate")
	}
	return pub, ssh.FingerprintSHA256(pub), nil
}

// LineWarning is one authorized_keys line the gateway did not use as written: not a key line
// (a mistyped option list drops the whole line, as in sshd), a duplicate key, an option
// ignored, or an agentless line refused. Line counts from 1; Fingerprint is empty when the
// line is no key at all. A warning never quotes the line (it could be a pasted private key).
type LineWarning struct {
	Line        int    `json:"line"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Reason      string `json:"reason"`
}

// String renders the warning as `line N: reason (fingerprint)`.
func (w LineWarning) String() string {
	s := fmt.Sprintf("line %d: %s", w.Line, w.Reason)
	if w.Fingerprint != "" {
		s += " (" + w.Fingerprint + ")"
	}
	return s
}

// lineWarnings collects at most maxLineWarnings warnings and counts the rest.
type lineWarnings struct {
	list    []LineWarning
	dropped int
	first   int // the line of the first warning dropped
}

func (w *lineWarnings) add(line int, fp, reason string) {
	if len(w.list) >= maxLineWarnings {
		if w.dropped++; w.dropped == 1 {
			w.first = line
		}
		return
	}
	w.list = append(w.list, LineWarning{Line: line, Fingerprint: fp, Reason: trunc(reason, maxReasonLen)})
}

// done returns the warnings, with one more (at the line of the first one left out) counting
// those left out.
func (w *lineWarnings) done() []LineWarning {
	if w.dropped > 0 {
		return append(w.list, LineWarning{Line: w.first, Reason: fmt.Sprintf("and %d more warnings from here on (not listed)", w.dropped)})
	}
	return w.list
}

// keyTypes are the public key types a line may hold, to recognise a key after a broken
// option list.
var keyTypes = []string{"ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-"}

// notAKeyReason says why a non-comment line is no key line, without quoting it.
func notAKeyReason(line []byte) string {
	if bytes.Contains(line, []byte("PRIVATE KEY")) {
		return "not a public key line: this looks like a private key, which does not belong in authorized_keys"
	}
	fields := strings.Fields(string(line))
	for i, f := range fields {
		if i == 0 {
			continue
		}
		for _, t := range keyTypes {
			if strings.HasPrefix(f, t) {
				if i >= 2 {
					return fmt.Sprintf("not a key line: the options before the %s key are separated by a space; "+
						"write them as one comma-separated list without spaces (name=\"a\",labels=\"k=v\" ssh-…)", f)
				}
				return fmt.Sprintf("not a key line: the option list before the %s key, or the key's base64, does not parse", f)
			}
		}
	}
	if len(fields) > 0 {
		for _, t := range keyTypes {
			if strings.HasPrefix(fields[0], t) {
				return fmt.Sprintf("not a key line: the %s key's base64 does not decode", fields[0])
			}
		}
	}
	return "not a key line: no public key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-…) found"
}

// CheckAuthorizedKeys parses authorized_keys content as the gateway does and returns what it
// would warn about, for the admin CLI to print before or after editing the file.
func CheckAuthorizedKeys(data []byte) ([]LineWarning, error) {
	if len(data) > maxAuthKeysFile {
		return nil, fmt.Errorf("authorized keys content is larger than %d bytes", maxAuthKeysFile)
	}
	set, err := parseAuthKeys(data, nil)
	if err != nil {
		return nil, err
	}
	return set.warnings, nil
}

// CheckAuthorizedKeysFile is CheckAuthorizedKeys on the file at path (read as the gateway
// reads it: bounded, a regular file; a missing file has no warnings).
func CheckAuthorizedKeysFile(path string) ([]LineWarning, error) {
	data, _, err := readAuthKeys(path)
	if err != nil {
		return nil, err
	}
	return CheckAuthorizedKeys(data)
}

// AuthorizedKeysWarnings are the warnings of the authorized_keys file in force (as of its last
// reload): lines dropped, options ignored, agentless lines refused, each with its line number.
func (g *Gateway) AuthorizedKeysWarnings() []LineWarning { return g.keys.warnings() }
