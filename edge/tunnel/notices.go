package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// ReplacedRequest is protocol.ReplacedRequest: the gateway closed this connection for a newer
// one of the same key.
const ReplacedRequest = protocol.ReplacedRequest

// Why a connection that was up ended, as run reports it.
var (
	errReplaced        = errors.New("the gateway replaced this connection with a newer one of the same key")
	errClosedByGateway = errors.New("gateway closed the connection")
)

// Bounds of the explanations.
const (
	noticeEvery = time.Minute // one explanation of a kind at most this often while it lasts
	flapsToWarn = 3           // connections closed by the gateway soon after connecting, in a row
)

// notices turns the ways a connection keeps failing into one line an operator can act on,
// at most once a minute per kind while it lasts: a key the gateway does not accept (with
// the command that admits it) and a connection the gateway keeps replacing (another device
// with the same key).
type notices struct {
	fp, name string
	stable   time.Duration
	now      func() time.Time
	last     map[string]time.Time // kind → when last explained
	flaps    int                  // connections in a row the gateway closed before stable
}

func newNotices(cfg Config, stable time.Duration) *notices {
	name := "NAME"
	if protocol.ValidName(cfg.Hello.Name) {
		name = cfg.Hello.Name
	}
	return &notices{fp: keys.Fingerprint(cfg.Signer.PublicKey()), name: name, stable: stable, now: time.Now, last: map[string]time.Time{}}
}

// explain logs what err, ending a connection to addr that lasted up, means, if it is one of
// the known failures; it reports whether err is one (the caller then logs err itself at
// debug level only).
func (n *notices) explain(addr string, err error, up time.Duration, log *slog.Logger) bool {
	switch {
	case authRefused(err):
		n.flaps = 0
		if n.due("auth") {
			log.Error(fmt.Sprintf("the gateway does not accept this edge's key %s: admit it on the gateway with "+
				"`mcp-ssh-gateway keys approve %s --name %s` (or the register_edge_key tool with this edge's public key); retrying meanwhile",
				n.fp, n.fp, n.name), "gateway", addr, "fingerprint", n.fp)
		}
		return true
	case errors.Is(err, errReplaced):
		n.flaps = 0
		if n.due("replaced") {
			log.Warn(fmt.Sprintf("the gateway replaced this connection with a newer one of the same key %s: another device is using this edge's key, "+
				"and the two take turns; give each device its own key (on the copy, remove EDGE_KEY_FILE and enrol it again)", n.fp),
				"gateway", addr, "fingerprint", n.fp)
		}
		return true
	case errors.Is(err, errClosedByGateway) && up < n.stable:
		if n.flaps++; n.flaps < flapsToWarn {
			return false
		}
		if n.due("flap") {
			log.Warn(fmt.Sprintf("the gateway closed this connection %d times in a row soon after it connected: if another device uses this edge's key %s, "+
				"the gateway keeps only the newest connection and the two take turns; give each device its own key", n.flaps, n.fp),
				"gateway", addr, "fingerprint", n.fp)
		}
		return true
	}
	n.flaps = 0
	return false
}

// due reports whether an explanation of kind may be logged now, and if so records it.
func (n *notices) due(kind string) bool {
	now := n.now()
	if t, ok := n.last[kind]; ok && now.Sub(t) < noticeEvery {
		return false
	}
	n.last[kind] = now
	return true
}

// authRefused reports whether a handshake failed because the gateway accepted none of the
// edge's authentication methods: its key is not authorized there. x/crypto/ssh says so
// only in the error's text.
func authRefused(err error) bool {
	return err != nil && strings.Contains(err.Error(), "ssh: unable to authenticate")
}
