package gateway

import (
	"errors"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

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

// enrollCallback returns the keyboard-interactive step that follows an unknown key's
// verified signature: one prompt for the enrolment secret. A good secret binds the key to
// the enrolment's name and labels and completes authentication; anything else fails.
func (g *Gateway) enrollCallback(key ssh.PublicKey) func(ssh.ConnMetadata, ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	return func(meta ssh.ConnMetadata, client ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
		fp := keys.Fingerprint(key)
		answers, err := client("", "mcp-ssh-gateway enrolment", []string{enrollPromptText}, []bool{false})
		if err != nil {
			return nil, err
		}
		fail := func(reason string) (*ssh.Permissions, error) {
			g.log.Warn("edge enrolment refused", "fingerprint", fp, "remote_addr", meta.RemoteAddr().String(), "reason", reason)
			g.cfg.Audit.Write(audit.Event{Event: "auth_failure", Fingerprint: fp, RemoteAddr: meta.RemoteAddr().String(),
				Outcome: "refused", Error: "enrolment: " + reason})
			return nil, errors.New("enrolment refused")
		}
		if len(answers) != 1 {
			return fail("expected one answer")
		}
		entry, err := consumeEnrollment(g.cfg.StateDir, answers[0])
		if err != nil {
			return fail(err.Error())
		}
		res, err := g.keys.register(keys.AuthorizedLine(key), entry.Name, entry.Labels)
		if err != nil {
			return fail("bind key: " + err.Error())
		}
		g.forgetPending(fp)
		g.log.Info("edge enrolled", "fingerprint", fp, "name", res.Name)
		g.cfg.Audit.Write(audit.Event{Event: "key_enrolled", Edge: res.Name, Fingerprint: fp, RemoteAddr: meta.RemoteAddr().String(), Outcome: "ok"})
		return &ssh.Permissions{Extensions: map[string]string{permFingerprint: fp}}, nil
	}
}

// forgetPending drops fp from the pending list (it was enrolled).
func (g *Gateway) forgetPending(fp string) {
	err := updateStateFile(g.cfg.StateDir, pendingFile, func(d *pendingDoc) (bool, error) {
		n := len(d.Pending)
		d.Pending = deletePending(d.Pending, fp)
		return len(d.Pending) != n, nil
	})
	if err != nil {
		g.log.Warn("pending keys: cannot update", "err", err)
	}
}
