package gateway

import (
	"errors"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

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
		if len(answers) != 1 {
			return g.enrollRefused(meta, fp, "expected one answer")
		}
		entry, err := g.consume(answers[0])
		if err != nil {
			return g.enrollRefused(meta, fp, err.Error())
		}
		res, err := g.keys.register(keys.AuthorizedLine(key), entry.Name, entry.Labels)
		if err != nil {
			if rerr := g.restore(entry); rerr != nil {
				g.log.Warn("enrolment secret not restored after a failed bind", "err", rerr)
			}
			return g.enrollRefused(meta, fp, "bind key: "+err.Error())
		}
		g.forgetPending(fp)
		g.log.Info("edge enrolled", "fingerprint", fp, "name", res.Name)
		g.cfg.Audit.Write(audit.Event{Event: "key_enrolled", Edge: res.Name, Fingerprint: fp, RemoteAddr: meta.RemoteAddr().String(), Outcome: "ok"})
		return &ssh.Permissions{Extensions: map[string]string{permFingerprint: fp}}, nil
	}
}

// enrollRefused logs and audits a refused enrolment as the refusal log lets it (any peer
// with a key of its own can send wrong secrets); the peer learns only that it failed.
func (g *Gateway) enrollRefused(meta ssh.ConnMetadata, fp, reason string) (*ssh.Permissions, error) {
	g.refuseUnauthenticated(meta.RemoteAddr(), audit.Event{Event: "auth_failure", Fingerprint: fp, RemoteAddr: meta.RemoteAddr().String(),
		Outcome: "refused", Error: "enrolment: " + reason}, "edge enrolment refused")
	return nil, errors.New("enrolment refused")
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
