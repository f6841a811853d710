package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// permFingerprint is the Permissions extension carrying the authenticated key.
const permFingerprint = "fp"

// maxPartials bounds the unknown keys one connection's authentication remembers: more
// than the library caches (it asks PublicKeyCallback again for a key it forgot).
const maxPartials = 16

// connAuth is what one connection's authentication remembers.
type connAuth struct {
	adm *admission
	mu  sync.Mutex
	// partials maps the partial success returned for each unknown key to that key, so that
	// the auth-log callback learns which key's signature verified: the key last passed to
	// PublicKeyCallback may be another one (queries, and the library's cache of results).
	partials []partial
}

type partial struct {
	err *ssh.PartialSuccessError
	key ssh.PublicKey
}

// remember records the partial success returned for key.
func (st *connAuth) remember(p *ssh.PartialSuccessError, key ssh.PublicKey) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.partials) >= maxPartials {
		st.partials = st.partials[1:]
	}
	st.partials = append(st.partials, partial{p, key})
}

// keyOf is the key a partial success was returned for, or nil.
func (st *connAuth) keyOf(p *ssh.PartialSuccessError) ssh.PublicKey {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, q := range st.partials {
		if q.err == p {
			return q.key
		}
	}
	return nil
}

// checkKey is the public key step of authentication. An authorized key is accepted, with its
// fingerprint as the identity the handshake's Permissions carry. Certificates are never
// accepted.
//
// x/crypto/ssh calls checkKey for public key queries (no signature) too, so an unknown key
// is neither logged nor audited here: any peer can query any number of made-up keys, 127 a
// connection. Instead it gets a partial success, which the library grants only once the
// key's signature verified (a query is answered "key OK" and the peer must then sign) and
// then reports to authLog, which judges it. The partial success leads on to an enrolment
// secret (enrollCallback) when the gateway keeps state, and to public keys that are all
// refused (refuseKey) when it does not, so that the client ends with a plain refusal.
func (g *Gateway) checkKey(st *connAuth, key ssh.PublicKey) (*ssh.Permissions, error) {
	fp := ssh.FingerprintSHA256(key)
	if g.keys.lookup(fp) != nil {
		return &ssh.Permissions{Extensions: map[string]string{permFingerprint: fp}}, nil
	}
	st.adm.unknownKey.Store(true)
	if _, isCert := key.(*ssh.Certificate); isCert {
		return nil, fmt.Errorf("key %s is a certificate: not accepted", fp)
	}
	p := &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{PublicKeyCallback: g.authorizedOnly}}
	if g.cfg.StateDir != "" {
		p.Next.KeyboardInteractiveCallback = g.enrollCallback(key)
	}
	st.remember(p, key)
	return nil, p
}

// authorizedOnly is the public key step after an unknown key's partial success: an
// authorized key is accepted as by checkKey, anything else refused without a word (the peer
// already was judged for its unknown key).
func (g *Gateway) authorizedOnly(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	fp := ssh.FingerprintSHA256(key)
	if _, isCert := key.(*ssh.Certificate); !isCert && g.keys.lookup(fp) != nil {
		return &ssh.Permissions{Extensions: map[string]string{permFingerprint: fp}}, nil
	}
	return nil, fmt.Errorf("key %s is not authorized", fp)
}

// authenticatedKey is the authorized key a completed handshake authenticated, or nil (logged)
// when it is no longer authorized. The identity is read from the handshake's Permissions, not
// from the key last offered: those can differ (CVE-2024-45337).
func (g *Gateway) authenticatedKey(sc *ssh.ServerConn, log *slog.Logger) *authKey {
	fp := ""
	if sc.Permissions != nil {
		fp = sc.Permissions.Extensions[permFingerprint]
	}
	key := g.keys.lookup(fp)
	if key == nil {
		log.Warn("edge refused: key not authorized after handshake", "fingerprint", fp)
	}
	return key
}

// authLog sees every authentication attempt. A publickey attempt that ends in partial
// success is an unknown key whose signature was verified (checkKey): it is judged an auth
// failure and becomes a pending key.
func (g *Gateway) authLog(meta ssh.ConnMetadata, st *connAuth, method string, err error) {
	var p *ssh.PartialSuccessError
	if method != "publickey" || !errors.As(err, &p) {
		return
	}
	pub := st.keyOf(p)
	if pub == nil {
		return
	}
	fp := keys.Fingerprint(pub)
	st.adm.authFailure(fp)
	g.recordPending(PendingEdge{
		Fingerprint:   fp,
		PublicKey:     keys.AuthorizedLine(pub),
		RequestedName: requestedName(meta.User()),
		RemoteAddr:    meta.RemoteAddr().String(),
	})
}

// requestedName is the SSH user name when it is a valid edge name (the edge sends its
// EDGE_NAME there), else "".
func requestedName(user string) string {
	n := strings.ToLower(strings.TrimSpace(user))
	if !protocol.ValidName(n) || n == "edge" {
		return ""
	}
	return n
}
