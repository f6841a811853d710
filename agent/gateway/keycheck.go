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

// connAuth is what one connection's authentication remembers.
type connAuth struct {
	adm     *admission
	mu      sync.Mutex
	unknown ssh.PublicKey // the last unknown key offered (partial success)
}

// checkKey is the public key step of authentication. An authorized key is accepted, with its
// fingerprint as the identity the handshake's Permissions carry. An unknown key is judged an
// auth failure; it may still enrol, when the gateway keeps state: it must first prove it holds
// the private key (the library verifies the signature before honouring a partial success),
// then answer a one-time secret (enrollCallback). Certificates are never accepted.
func (g *Gateway) checkKey(st *connAuth, key ssh.PublicKey) (*ssh.Permissions, error) {
	fp := ssh.FingerprintSHA256(key)
	if g.keys.lookup(fp) != nil {
		return &ssh.Permissions{Extensions: map[string]string{permFingerprint: fp}}, nil
	}
	st.adm.authFailure(fp)
	if _, isCert := key.(*ssh.Certificate); isCert || g.cfg.StateDir == "" {
		return nil, fmt.Errorf("key %s is not authorized", fp)
	}
	st.mu.Lock()
	st.unknown = key
	st.mu.Unlock()
	return nil, &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{
		KeyboardInteractiveCallback: g.enrollCallback(key),
	}}
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

// authLog sees every authentication attempt. A publickey attempt that ends in partial success
// is an unknown key whose signature was verified: it becomes a pending key.
func (g *Gateway) authLog(meta ssh.ConnMetadata, st *connAuth, method string, err error) {
	var partial *ssh.PartialSuccessError
	if method != "publickey" || !errors.As(err, &partial) {
		return
	}
	st.mu.Lock()
	pub := st.unknown
	st.mu.Unlock()
	if pub == nil {
		return
	}
	g.recordPending(PendingEdge{
		Fingerprint:   keys.Fingerprint(pub),
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
