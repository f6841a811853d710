package gateway

// Pending keys, as salt-key does it: a key that proved it holds its private half but is not
// authorized is remembered in STATE_DIR/pending.json (bounded in number and in rate, oldest
// dropped first) until an operator approves it. Nothing is ever accepted automatically, and
// the name the edge asked for is shown but bound only if the operator approves it.
//
// The same file remembers the keys revoked lately (bounded), so that a revoked key that keeps
// trying shows as revoked, not as a new device, and an entry leaves the list once its key is
// authorized, whichever way (approve, add, register_edge_key, enrolment, an editor).

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Bounds of the pending list.
const (
	pendingFile      = "pending.json"
	maxPending       = 256              // entries kept; the oldest first attempt is dropped beyond
	pendingRefresh   = 10 * time.Second // an already pending key is rewritten at most this often
	maxNewPendingMin = 60               // new entries per minute; more are not recorded
	maxRevoked       = 1024             // revoked fingerprints remembered; the oldest dropped beyond
)

// PendingEdge is one unknown key that tried to connect.
type PendingEdge struct {
	Fingerprint   string    `json:"fingerprint"`
	PublicKey     string    `json:"public_key"`     // authorized_keys format, no options
	RequestedName string    `json:"requested_name"` // what the edge asked for: not trusted
	RemoteAddr    string    `json:"remote_addr"`
	FirstAttempt  time.Time `json:"first_attempt"`
	LastAttempt   time.Time `json:"last_attempt"`
	Attempts      int       `json:"attempts"`
	// Revoked is set when this key was authorized once and revoked: not a new device.
	Revoked *RevokedKey `json:"revoked,omitempty"`
}

// RevokedKey is a key revoked lately, as the pending list remembers it.
type RevokedKey struct {
	Fingerprint string    `json:"fingerprint"`
	Name        string    `json:"name,omitempty"` // the name it was bound to
	RevokedAt   time.Time `json:"revoked_at"`
}

type pendingDoc struct {
	Pending []PendingEdge `json:"pending"`
	Revoked []RevokedKey  `json:"revoked,omitempty"`
}

// revokedKey returns the record of fp among the revoked keys, or nil.
func (d *pendingDoc) revokedKey(fp string) *RevokedKey {
	for i := range d.Revoked {
		if d.Revoked[i].Fingerprint == fp {
			r := d.Revoked[i]
			return &r
		}
	}
	return nil
}

// forget drops fp from the pending and the revoked keys (it is authorized now), reporting
// whether anything changed.
func (d *pendingDoc) forget(fp string) bool {
	n := len(d.Pending) + len(d.Revoked)
	d.Pending = deletePending(d.Pending, fp)
	d.Revoked = slices.DeleteFunc(d.Revoked, func(r RevokedKey) bool { return r.Fingerprint == fp })
	return len(d.Pending)+len(d.Revoked) != n
}

// recordPending remembers (or refreshes) an unknown key that proved possession of its
// private key. Errors are logged: a pending list that cannot be written must not crash auth.
func (g *Gateway) recordPending(p PendingEdge) {
	if g.cfg.StateDir == "" {
		return
	}
	now := time.Now()
	if g.keys.lookup(p.Fingerprint) != nil {
		return // authorized meanwhile (approved while this handshake ran)
	}
	if !g.pendingKey.allow(p.Fingerprint, now) {
		return
	}
	err := updateStateFile(g.cfg.StateDir, pendingFile, func(d *pendingDoc) (bool, error) {
		for i := range d.Pending {
			if d.Pending[i].Fingerprint == p.Fingerprint {
				d.Pending[i].LastAttempt = now.UTC()
				d.Pending[i].RemoteAddr = p.RemoteAddr
				d.Pending[i].RequestedName = p.RequestedName
				d.Pending[i].Attempts++
				d.Pending[i].Revoked = d.revokedKey(p.Fingerprint)
				return true, nil
			}
		}
		p.Revoked = d.revokedKey(p.Fingerprint)
		if ok, first := g.pendingNew.take(now); !ok {
			if first { // once a minute: the flood itself must not flood stderr
				g.log.Warn("pending keys: too many new unknown keys this minute, the rest of them not recorded", "fingerprint", p.Fingerprint)
			}
			return false, nil
		}
		p.FirstAttempt, p.LastAttempt, p.Attempts = now.UTC(), now.UTC(), 1
		d.Pending = append(d.Pending, p)
		if len(d.Pending) > maxPending {
			slices.SortStableFunc(d.Pending, func(a, b PendingEdge) int { return a.FirstAttempt.Compare(b.FirstAttempt) })
			d.Pending = slices.Clone(d.Pending[len(d.Pending)-maxPending:])
		}
		return true, nil
	})
	if err != nil {
		g.log.Error("pending keys: cannot record an unknown key", "fingerprint", p.Fingerprint, "err", err)
	}
}

// rateWindow counts events per minute slot, allowing at most max in one.
type rateWindow struct {
	mu      sync.Mutex
	slot    int64
	count   int
	max     int
	refused bool // an event was refused in this slot
}

// take reports whether one more event fits the current slot, and, when it does not,
// whether it is the slot's first refusal (worth a log line).
func (w *rateWindow) take(now time.Time) (ok, firstRefusal bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := now.Unix() / 60; s != w.slot {
		w.slot, w.count, w.refused = s, 0, false
	}
	if w.count >= w.max {
		first := !w.refused
		w.refused = true
		return false, first
	}
	w.count++
	return true, false
}

// ListPending returns the pending keys of STATE_DIR, oldest first (admin CLI: keys pending).
// Keys authorized in the file at authKeysPath meanwhile are left out, and dropped from the
// list: a key approved or added while a gateway still had it as unknown is not pending.
func ListPending(stateDir, authKeysPath string, log *slog.Logger) ([]PendingEdge, error) {
	s, err := fileStore(authKeysPath, log)
	if err != nil {
		return nil, err
	}
	return listPending(stateDir, s)
}

// listPending lists the pending keys, oldest first, pruning those s authorizes.
func listPending(stateDir string, s *keyStore) ([]PendingEdge, error) {
	var out []PendingEdge
	err := updateStateFile(stateDir, pendingFile, func(d *pendingDoc) (bool, error) {
		changed := false
		for _, p := range slices.Clone(d.Pending) {
			if s.lookup(p.Fingerprint) != nil {
				changed = d.forget(p.Fingerprint) || changed
			}
		}
		out = slices.Clone(d.Pending)
		return changed, nil
	})
	if out == nil {
		out = []PendingEdge{}
	}
	slices.SortStableFunc(out, func(a, b PendingEdge) int { return a.FirstAttempt.Compare(b.FirstAttempt) })
	return out, err
}

// ForgetKey takes the key fp out of the pending and the revoked keys of STATE_DIR: it was
// authorized by other means than approval (admin CLI: keys add).
func ForgetKey(stateDir, fp string) error {
	return updateStateFile(stateDir, pendingFile, func(d *pendingDoc) (bool, error) { return d.forget(fp), nil })
}

// RememberRevoked records revoked keys in STATE_DIR (the newest maxRevoked), so that their
// further attempts show as revoked in the pending list, not as new devices (admin CLI: keys
// revoke).
func RememberRevoked(stateDir string, revoked ...KeyRevoked) error {
	if stateDir == "" || len(revoked) == 0 {
		return nil
	}
	now := time.Now().UTC()
	return updateStateFile(stateDir, pendingFile, func(d *pendingDoc) (bool, error) {
		for _, r := range revoked {
			d.Revoked = slices.DeleteFunc(d.Revoked, func(o RevokedKey) bool { return o.Fingerprint == r.Fingerprint })
			d.Revoked = append(d.Revoked, RevokedKey{Fingerprint: r.Fingerprint, Name: r.Name, RevokedAt: now})
		}
		if len(d.Revoked) > maxRevoked {
			d.Revoked = slices.Clone(d.Revoked[len(d.Revoked)-maxRevoked:])
		}
		return true, nil
	})
}

// ApprovePending authorizes the pending key fp in authKeysPath with name and labels (the
// requested name is used when name is empty and it is valid: the admin CLI asks for
// --use-requested-name before it passes an empty name), then forgets it (admin CLI: keys
// approve). A running gateway on the same files admits it at once.
func ApprovePending(stateDir, authKeysPath, fp, name string, labels map[string]string, log *slog.Logger) (KeyAdded, error) {
	s, err := fileStore(authKeysPath, log)
	if err != nil {
		return KeyAdded{}, err
	}
	return approve(s, stateDir, fp, name, labels)
}

// PendingKey returns the pending entry of fp in STATE_DIR, or false.
func PendingKey(stateDir, fp string) (PendingEdge, bool, error) {
	var (
		p  PendingEdge
		ok bool
	)
	err := updateStateFile(stateDir, pendingFile, func(d *pendingDoc) (bool, error) {
		if i := slices.IndexFunc(d.Pending, func(p PendingEdge) bool { return p.Fingerprint == strings.TrimSpace(fp) }); i >= 0 {
			p, ok = d.Pending[i], true
		}
		return false, nil
	})
	return p, ok, err
}

func approve(s *keyStore, stateDir, fp, name string, labels map[string]string) (KeyAdded, error) {
	fp = strings.TrimSpace(fp)
	var res KeyAdded
	err := updateStateFile(stateDir, pendingFile, func(d *pendingDoc) (bool, error) {
		i := slices.IndexFunc(d.Pending, func(p PendingEdge) bool { return p.Fingerprint == fp })
		if i < 0 {
			return false, fmt.Errorf("no pending key has fingerprint %q: see list_pending_edges or `mcp-ssh-gateway keys pending`", trunc(fp, 70))
		}
		n := strings.ToLower(strings.TrimSpace(name))
		if n == "" && protocol.ValidName(d.Pending[i].RequestedName) {
			n = d.Pending[i].RequestedName
		}
		var err error
		res, err = s.register(d.Pending[i].PublicKey, n, maps.Clone(labels))
		if err != nil {
			return false, err
		}
		d.forget(fp)
		return true, nil
	})
	return res, err
}

// PendingEdges lists the unknown keys that tried to connect, oldest first.
func (g *Gateway) PendingEdges() ([]PendingEdge, error) { return listPending(g.cfg.StateDir, g.keys) }

// ApproveEdge authorizes a pending key with name and labels; the edge connects on its next
// attempt (within its backoff).
func (g *Gateway) ApproveEdge(fp, name string, labels map[string]string) (KeyAdded, error) {
	k, err := approve(g.keys, g.cfg.StateDir, fp, name, labels)
	if err != nil {
		return KeyAdded{}, err
	}
	if k.Labels == nil {
		k.Labels = map[string]string{}
	}
	g.log.Info("pending edge key approved", "fingerprint", k.Fingerprint, "name", k.Name)
	return k, nil
}

func deletePending(ps []PendingEdge, fp string) []PendingEdge {
	return slices.DeleteFunc(ps, func(p PendingEdge) bool { return p.Fingerprint == fp })
}
