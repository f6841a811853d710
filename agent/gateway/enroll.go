package gateway

// Enrolment without copy-paste: an operator (or a model holding the provisioning token)
// creates a one-time secret bound to a name and labels; the edge proves it during SSH
// authentication, after its public key, as a keyboard-interactive answer. Only the SHA-256
// of the secret is stored (STATE_DIR/enrollments.json); it works once and expires.

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Bounds of enrolment.
const (
	enrollFile       = "enrollments.json"
	MaxEnrollTTL     = 24 * time.Hour // longest life of an enrolment secret
	maxOpenEnrolls   = 1000           // unexpired, unused secrets at once
	maxEnrollAnswer  = 256            // bytes of a keyboard-interactive answer
	enrollPromptText = "enrolment secret: "
)

// Enrollment is a created enrolment: the string to give the edge and what it binds.
type Enrollment struct {
	String    string // protocol.Enrollment encoded; carries the secret: never log it
	Name      string
	Labels    map[string]string
	Gateway   string
	HostKey   string
	ExpiresAt time.Time
}

// EnrollEntry is one enrolment as stored: the secret's SHA-256, never the secret.
type EnrollEntry struct {
	SecretSHA256 string            `json:"secret_sha256"`
	Name         string            `json:"name"`
	Labels       map[string]string `json:"labels"`
	CreatedAt    time.Time         `json:"created_at"`
	ExpiresAt    time.Time         `json:"expires_at"`
	// Shared: the cluster holds it too (EnrollShare), and a use here must claim it there.
	Shared bool `json:"shared,omitempty"`
}

// EnrollShare shares enrolments between the gateways of a cluster, so that an edge enrols
// through whichever gateway its load balancer picks, and a secret still works once.
type EnrollShare interface {
	// Offer shares e; false when it could not (the enrolment then works on this gateway only).
	Offer(e EnrollEntry) bool
	// Claim takes the enrolment of secret hash h from the cluster, once: found is false when
	// the cluster has none (used or expired); err when the cluster cannot be asked now.
	Claim(h string) (e EnrollEntry, found bool, err error)
}

// SetEnrollShare makes this gateway's enrolments cluster-wide.
func (g *Gateway) SetEnrollShare(s EnrollShare) { g.enrollShare.Store(&s) }

type enrollDoc struct {
	Tokens []EnrollEntry `json:"tokens"`
}

func secretHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// CreateEnrollment stores a new one-time secret for name and labels, valid for ttl (at most
// MaxEnrollTTL), and returns the enrolment string for `mcp-ssh-edge enroll` (admin CLI:
// enroll-token). publicAddr and hostFP go into the string so the edge needs nothing else.
func CreateEnrollment(stateDir, authKeysPath, publicAddr, hostFP, name string, labels map[string]string, ttl time.Duration) (Enrollment, error) {
	return createEnrollment(stateDir, authKeysPath, publicAddr, hostFP, name, labels, ttl, nil)
}

// createEnrollment is CreateEnrollment, offering the entry to share first when it is set.
func createEnrollment(stateDir, authKeysPath, publicAddr, hostFP, name string, labels map[string]string, ttl time.Duration,
	share EnrollShare) (Enrollment, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	if !protocol.ValidName(name) {
		return Enrollment{}, fmt.Errorf("name %q is invalid: use 1-63 of a-z 0-9 . _ - starting with a letter or digit", trunc(name, 70))
	}
	if ttl <= 0 || ttl > MaxEnrollTTL {
		return Enrollment{}, fmt.Errorf("ttl %s is out of range: give more than 0 and at most %s", ttl, MaxEnrollTTL)
	}
	if labels == nil {
		labels = map[string]string{}
	}
	if err := validateBoundLabels(labels); err != nil {
		return Enrollment{}, err
	}
	if authKeysPath != "" {
		ks, err := fileStore(authKeysPath, nil)
		if err != nil {
			return Enrollment{}, err
		}
		if fp := ks.boundTo(name); fp != "" {
			return Enrollment{}, fmt.Errorf("name %q is already bound to key %s: choose another name or revoke that key first", name, fp)
		}
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Enrollment{}, fmt.Errorf("generate enrolment secret: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(raw[:])
	now := time.Now().UTC()
	e := EnrollEntry{SecretSHA256: secretHash(secret), Name: name, Labels: maps.Clone(labels), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if share != nil {
		e.Shared = share.Offer(e)
	}
	err := updateStateFile(stateDir, enrollFile, func(d *enrollDoc) (bool, error) {
		d.Tokens = pruneEnrolls(d.Tokens, now)
		if len(d.Tokens) >= maxOpenEnrolls {
			return false, fmt.Errorf("%d enrolment secrets are open, the maximum: wait for some to expire", maxOpenEnrolls)
		}
		d.Tokens = append(d.Tokens, e)
		return true, nil
	})
	if err != nil {
		return Enrollment{}, err
	}
	pe := protocol.Enrollment{Gateway: publicAddr, HostKey: hostFP, Secret: secret, Name: name}
	if err := pe.Validate(); err != nil {
		return Enrollment{}, fmt.Errorf("cannot build an enrolment string (is PUBLIC_ADDR host:port?): %w", err)
	}
	return Enrollment{String: pe.Encode(), Name: name, Labels: e.Labels, Gateway: publicAddr, HostKey: hostFP, ExpiresAt: e.ExpiresAt}, nil
}

func pruneEnrolls(ts []EnrollEntry, now time.Time) []EnrollEntry {
	return slices.DeleteFunc(ts, func(e EnrollEntry) bool { return !now.Before(e.ExpiresAt) })
}

// errEnrollRefused never says which of unknown, used or expired: it tells an attacker nothing.
var errEnrollRefused = errors.New("enrolment secret unknown, already used or expired")

// consumeEnrollment finds the unexpired entry for secret, removes it (one use) and returns it.
func consumeEnrollment(stateDir, secret string) (EnrollEntry, error) {
	if len(secret) == 0 || len(secret) > maxEnrollAnswer {
		return EnrollEntry{}, errEnrollRefused
	}
	want := secretHash(secret)
	var found EnrollEntry
	err := updateStateFile(stateDir, enrollFile, func(d *enrollDoc) (bool, error) {
		now := time.Now()
		n := len(d.Tokens)
		d.Tokens = pruneEnrolls(d.Tokens, now)
		for i, e := range d.Tokens {
			if subtle.ConstantTimeCompare([]byte(e.SecretSHA256), []byte(want)) == 1 {
				found = e
				d.Tokens = slices.Delete(d.Tokens, i, i+1)
				return true, nil
			}
		}
		return len(d.Tokens) != n, errEnrollRefused
	})
	if err != nil {
		return EnrollEntry{}, err
	}
	return found, nil
}

// restoreEnrollment puts back an entry consumeEnrollment took, when binding the key failed
// (a name taken meanwhile, a file that could not be written): a failed bind must not burn the
// secret, or the device could never enrol. An entry that expired meanwhile stays gone.
func restoreEnrollment(stateDir string, e EnrollEntry) error {
	return updateStateFile(stateDir, enrollFile, func(d *enrollDoc) (bool, error) {
		if !time.Now().Before(e.ExpiresAt) || len(d.Tokens) >= maxOpenEnrolls {
			return false, nil
		}
		d.Tokens = append(d.Tokens, e)
		return true, nil
	})
}

// CreateEnrollment is the package function bound to this gateway's state, address and key.
func (g *Gateway) CreateEnrollment(name string, labels map[string]string, ttl time.Duration) (Enrollment, error) {
	info := g.Info()
	return createEnrollment(g.cfg.StateDir, g.cfg.AuthorizedKeysFile, info.PublicAddr, g.hostFP, name, labels, ttl, g.share())
}

// share is the cluster's EnrollShare, or nil.
func (g *Gateway) share() EnrollShare {
	if s := g.enrollShare.Load(); s != nil {
		return *s
	}
	return nil
}

// consume takes the enrolment of secret: from this gateway's file, and in a cluster also from
// the cluster, so that it works once across all gateways. One created on another gateway is
// claimed from the cluster alone. While the cluster cannot be asked, a secret created here
// still works here (the cluster entry is left to expire).
func (g *Gateway) consume(secret string) (EnrollEntry, error) {
	e, err := consumeEnrollment(g.cfg.StateDir, secret)
	share := g.share()
	switch {
	case share == nil:
		return e, err
	case err == nil && !e.Shared:
		return e, nil
	case err != nil && !errors.Is(err, errEnrollRefused):
		return e, err
	case len(secret) == 0 || len(secret) > maxEnrollAnswer:
		return EnrollEntry{}, errEnrollRefused
	}
	local := err == nil
	c, found, cerr := share.Claim(secretHash(secret))
	switch {
	case cerr != nil && local:
		g.log.Warn("enrolment: the cluster cannot be asked whether the secret was used elsewhere; accepted here", "err", cerr)
		return e, nil
	case cerr != nil:
		return EnrollEntry{}, fmt.Errorf("%w (the cluster cannot be asked now)", errEnrollRefused)
	case !found:
		return EnrollEntry{}, errEnrollRefused // used through another gateway, or expired
	case local:
		return e, nil
	case !time.Now().Before(c.ExpiresAt):
		return EnrollEntry{}, errEnrollRefused
	}
	return c, nil
}

// restore puts back an enrolment consume took, after binding its key failed: in this
// gateway's file and, for a shared one, in the cluster.
func (g *Gateway) restore(e EnrollEntry) error {
	if s := g.share(); s != nil && e.Shared {
		s.Offer(e)
	}
	return restoreEnrollment(g.cfg.StateDir, e)
}
