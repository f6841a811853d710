package protocol

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
)

// EnrollPrefix starts every enrolment string; the version lets the format change later.
const EnrollPrefix = "mcpssh-enroll-v1:"

// MaxEnrollLen bounds an enrolment string (it is pasted on a command line).
const MaxEnrollLen = 2048

// Enrollment is what an enrolment string carries: where the gateway is, the host key to pin,
// the one-time secret the edge proves during SSH authentication, and the name it will get.
// The gateway keeps only a hash of Secret.
type Enrollment struct {
	Gateway string `json:"gateway"`  // PUBLIC_ADDR, host:port
	HostKey string `json:"host_key"` // SHA256:… fingerprint of the gateway host key
	Secret  string `json:"secret"`   // base64url, 32 random bytes
	Name    string `json:"name"`     // the name bound on success
}

// Encode renders e as one copy-pasteable string without spaces or shell metacharacters.
func (e Enrollment) Encode() string {
	b, _ := json.Marshal(e)
	return EnrollPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseEnrollment decodes and validates an enrolment string. Errors never echo the secret.
func ParseEnrollment(s string) (Enrollment, error) {
	var e Enrollment
	s = strings.TrimSpace(s)
	if len(s) > MaxEnrollLen {
		return e, fmt.Errorf("enrolment string is %d bytes, more than %d: copy it again", len(s), MaxEnrollLen)
	}
	body, ok := strings.CutPrefix(s, EnrollPrefix)
	if !ok {
		return e, fmt.Errorf("not an enrolment string: it must start with %q (from create_enrollment_token or `mcp-ssh-gateway enroll-token`)", EnrollPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return e, errors.New("enrolment string is damaged (not base64url): copy it again")
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || dec.More() {
		return Enrollment{}, errors.New("enrolment string is damaged (not the expected JSON): copy it again")
	}
	if err := e.Validate(); err != nil {
		return Enrollment{}, err
	}
	return e, nil
}

// Validate checks every field's form.
func (e Enrollment) Validate() error {
	host, port, err := net.SplitHostPort(e.Gateway)
	if err != nil || host == "" || port == "" || len(e.Gateway) > 255 || strings.ContainsAny(e.Gateway, " ,\n") {
		return errors.New("enrolment string: gateway is not host:port")
	}
	if fp, ok := strings.CutPrefix(e.HostKey, "SHA256:"); !ok || len(fp) != 43 {
		return errors.New("enrolment string: host_key is not a SHA256: fingerprint")
	} else if _, err := base64.RawStdEncoding.DecodeString(fp); err != nil {
		return errors.New("enrolment string: host_key is not a SHA256: fingerprint")
	}
	if b, err := base64.RawURLEncoding.DecodeString(e.Secret); err != nil || len(b) != 32 {
		return errors.New("enrolment string: secret is malformed")
	}
	if !ValidName(e.Name) {
		return errors.New("enrolment string: name is not valid")
	}
	return nil
}
