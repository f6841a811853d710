package gateway

// Pending keys, as salt-key does it: a key that proved it holds its private half but is not
// authorized is remembered in STATE_DIR/pending.json (bounded in number and in rate, oldest
// dropped first) until an operator approves it. Nothing is ever accepted automatically, and
// the name the edge asked for is shown but bound only if the operator approves it.

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
}

type pendingDoc struct {
	Pending []PendingEdge `json:"pending"`
}

// recordPending remembers (or refreshes) an unknown key that proved possession of its
// private key. Errors are logged: a pending list that cannot be written must not crash auth.
func (g *Gateway) recordPending(p PendingEdge) {
	if g.cfg.StateDir == "" {
		return
	}
	now := time.Now()
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
				return true, nil
			}
		}
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
func ListPending(stateDir string) ([]PendingEdge, error) {
	var out []PendingEdge
	err := updateStateFile(stateDir, pendingFile, func(d *pendingDoc) (bool, error) {
		out = slices.Clone(d.Pending)
		return false, nil
	})
	if out == nil {
		out = []PendingEdge{}
	}
	slices.SortStableFunc(out, func(a, b PendingEdge) int { return a.FirstAttempt.Compare(b.FirstAttempt) })
	return out, err
}

// ApprovePending authorizes the pending key fp in authKeysPath with name and labels (the
// requested name is used when name is empty and it is valid), then forgets it (admin CLI:
// keys approve). A running gateway on the same files admits it at once.
func ApprovePending(stateDir, authKeysPath, fp, name string, labels map[string]string, log *slog.Logger) (KeyAdded, error) {
	s, err := fileStore(authKeysPath, log)
	if err != nil {
		return KeyAdded{}, err
	}
	return approve(s, stateDir, fp, name, labels)
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
		d.Pending = deletePending(d.Pending, fp)
		return true, nil
	})
	return res, err
}

// PendingEdges lists the unknown keys that tried to connect, oldest first.
func (g *Gateway) PendingEdges() ([]PendingEdge, error) { return ListPending(g.cfg.StateDir) }

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
