package forward

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/configfile"
)

// Kind is the value of get_status's edge kind for the edges this package serves.
const Kind = "forward"

// Options configure a Fleet. ClientKey is required; zero values of the others get defaults.
type Options struct {
	// ClientKey is the key the gateway logs in with (CLIENT_KEY_FILE).
	ClientKey ssh.Signer
	// Log receives the fleet's own messages; nil discards them.
	Log *slog.Logger
	// OnEvent, if set, is called for connects, disconnects, failed dials and every host key
	// mismatch, and file reloads (for the audit log). It may run with the Fleet's lock held:
	// it must not block or call the Fleet.
	OnEvent func(Event)
	// Dial opens the TCP connection; default a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds TCP connect plus SSH handshake; default 15 s.
	DialTimeout time.Duration
	// BackoffBase and BackoffMax shape the reconnect delay: full jitter over
	// min(BackoffMax, BackoffBase·2^attempt); defaults 1 s and 60 s.
	BackoffBase, BackoffMax time.Duration
	// KeepAlive is the keepalive interval; three missed answers drop the connection; default 15 s.
	KeepAlive time.Duration
	// MaxSessions bounds the SSH channels one edge's calls use at once (OpenSSH allows 10 per
	// connection by default; one is kept for SFTP and one for kills); default 8.
	MaxSessions int
	// MaxQueue bounds the calls waiting for a session; beyond it a call fails with
	// gateway.ErrEdgeBusy; default 64.
	MaxQueue int
	// KillGrace bounds how long a killed command's answer is awaited; default 5 s.
	KillGrace time.Duration
	// PipeGrace is how long output is still read after the command exited (background
	// children may hold its pipes); default 2 s.
	PipeGrace time.Duration
	// InfoMaxAge is how long a DeviceInfo collected by a probe is served without refresh;
	// default 2 min.
	InfoMaxAge time.Duration
	// InventoryInterval is how often a connected edge is probed for find_edges (once at
	// connect, then at this interval); default 2 min, negative: only on get_device_info.
	InventoryInterval time.Duration
	// PollInterval is how often the file's stamp is checked besides inotify; default 1 s.
	PollInterval time.Duration
}

func (o *Options) fill() {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		o.Dial = d.DialContext
	}
	o.DialTimeout = cmp.Or(o.DialTimeout, 15*time.Second)
	o.BackoffBase = cmp.Or(o.BackoffBase, time.Second)
	o.BackoffMax = max(cmp.Or(o.BackoffMax, time.Minute), o.BackoffBase)
	o.KeepAlive = cmp.Or(o.KeepAlive, 15*time.Second)
	o.MaxSessions = min(max(cmp.Or(o.MaxSessions, 8), 1), 1024)
	o.MaxQueue = min(max(cmp.Or(o.MaxQueue, 64), 0), 1<<16)
	o.KillGrace = cmp.Or(o.KillGrace, 5*time.Second)
	o.PipeGrace = cmp.Or(o.PipeGrace, 2*time.Second)
	o.InfoMaxAge = cmp.Or(o.InfoMaxAge, 2*time.Minute)
	o.InventoryInterval = cmp.Or(o.InventoryInterval, 2*time.Minute)
	o.PollInterval = cmp.Or(o.PollInterval, time.Second)
}

// EventKind says what happened to a forward edge.
type EventKind string

// Event kinds.
const (
	EventConnected       EventKind = "forward_connected"
	EventDisconnected    EventKind = "forward_disconnected"
	EventDialFailed      EventKind = "forward_dial_failed"
	EventHostKeyMismatch EventKind = "forward_host_key_mismatch"
	EventReloaded        EventKind = "forward_edges_reloaded"
	EventReloadFailed    EventKind = "forward_edges_reload_failed"
)

// Event is one thing worth logging or auditing.
type Event struct {
	Kind        EventKind
	Edge        string // "" for reload events
	Fingerprint string // the pinned host key (an agentless edge's: its authorized key)
	Address     string
	Err         error // why, for failures
}

// Status is one forward edge's get_status line with what only forward edges have.
type Status struct {
	gateway.EdgeStatus
	Kind            string // always Kind
	LastError       string // why it is not connected ("" when connected)
	HostKeyMismatch bool   // the device offered a key other than the pinned one: never authenticated
}

// Fleet dials the hosts of FORWARD_EDGES_FILE, keeps one SSH connection to each, and serves
// them as gateway.Edge values. Create it with New, then call Run.
type Fleet struct {
	path string
	opts Options

	mu      sync.RWMutex
	hosts   map[string]*host // by name
	byFP    map[string]*host
	lastSum [sha256.Size]byte
	stamp   fileStamp
	loadErr string
	ctx     context.Context // Run's, nil before it

	ran      atomic.Bool
	stopping sync.WaitGroup // hosts removed by a reload, still shutting down

	watchMu  sync.Mutex
	watchers map[chan struct{}]struct{}
}

// New reads path once and returns a Fleet for it. A missing file is an empty fleet (the
// file is watched and read once it appears); an unreadable or invalid one is an error.
func New(path string, opts Options) (*Fleet, error) {
	if opts.ClientKey == nil {
		return nil, errors.New("forward: no client key")
	}
	opts.fill()
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("forward edges file %s: %w", path, err)
	}
	f := &Fleet{path: abs, opts: opts, hosts: map[string]*host{}, byFP: map[string]*host{},
		watchers: map[chan struct{}]struct{}{}}
	data, stamp, err := readFile(abs)
	if err != nil {
		return nil, err
	}
	entries, err := ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", abs, err)
	}
	if !stamp.Exists {
		opts.Log.Warn("forward edges file does not exist yet: no forward edges until it does", "file", abs)
	}
	f.stamp, f.lastSum = stamp, sha256.Sum256(data)
	f.apply(entries)
	return f, nil
}

// Path is the absolute path of the watched file.
func (f *Fleet) Path() string { return f.path }

// Run connects to every host and keeps the connections up, reloading the file within about a
// second of a change (inotify on its directory plus a stat poll), until ctx is done. It then
// closes every connection, waits for everything it started and returns nil. Run may be
// called once.
func (f *Fleet) Run(ctx context.Context) error {
	if !f.ran.CompareAndSwap(false, true) {
		return errors.New("forward fleet: Run was already called")
	}
	f.mu.Lock()
	f.ctx = ctx
	for _, h := range f.hosts {
		h.start(ctx)
	}
	f.mu.Unlock()
	defer f.stopAll()

	changed := func() bool {
		f.mu.RLock()
		defer f.mu.RUnlock()
		return statFile(f.path) != f.stamp
	}
	configfile.Watch(ctx, configfile.WatchOptions{Path: f.path, What: "forward", Poll: f.opts.PollInterval,
		Debounce: 100 * time.Millisecond, Log: f.opts.Log}, changed, func(bool) { _ = f.Reload() })
	return nil
}

func (f *Fleet) stopAll() {
	f.mu.Lock()
	hosts := make([]*host, 0, len(f.hosts))
	for _, h := range f.hosts {
		hosts = append(hosts, h)
	}
	f.ctx = nil
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range hosts {
		if h.stop != nil {
			wg.Go(h.stopHost)
		}
	}
	wg.Wait()
	f.stopping.Wait()
}

// Reload reads the file now. A file that fails to read or parse, or was deleted, keeps the
// hosts in force and returns why (also reported as an EventReloadFailed); an unchanged file
// does nothing.
func (f *Fleet) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, stamp, err := readFile(f.path)
	if err == nil && sha256.Sum256(data) == f.lastSum && stamp.Exists == f.stamp.Exists {
		f.stamp = stamp
		return nil
	}
	f.stamp = stamp
	if err == nil && !stamp.Exists && len(f.hosts) > 0 {
		err = fmt.Errorf("%s was removed: keeping its %d hosts (write an empty list to remove them all)", f.path, len(f.hosts))
	}
	var entries []Entry
	if err == nil {
		entries, err = ParseFile(data)
		if err != nil {
			err = fmt.Errorf("%s: %w", f.path, err)
		}
	}
	if err != nil {
		if f.loadErr != err.Error() {
			f.loadErr = err.Error()
			f.opts.Log.Error("forward edges file not reloaded: keeping the hosts in force", "err", err)
			f.event(Event{Kind: EventReloadFailed, Err: err})
		}
		return err
	}
	f.loadErr, f.lastSum = "", sha256.Sum256(data)
	f.apply(entries)
	f.opts.Log.Info("forward edges file reloaded", "file", f.path, "hosts", len(entries))
	f.event(Event{Kind: EventReloaded})
	f.changed()
	return nil
}

// apply makes the hosts match entries: unchanged hosts keep their connection (labels are
// updated in place), changed or removed ones are stopped, new ones started when running.
// The caller holds f.mu (or is New).
func (f *Fleet) apply(entries []Entry) {
	next := make(map[string]*host, len(entries))
	var stale []*host
	for _, e := range entries {
		if old := f.hosts[e.Name]; old != nil && sameTarget(old.entry, e) {
			old.mu.Lock()
			old.labels = cloneLabels(e.Labels)
			old.mu.Unlock()
			next[e.Name] = old
			continue
		}
		h := newHost(f, e)
		if f.ctx != nil {
			h.start(f.ctx)
		}
		next[e.Name] = h
	}
	for name, h := range f.hosts {
		if next[name] != h {
			stale = append(stale, h)
		}
	}
	f.hosts = next
	f.byFP = make(map[string]*host, len(next))
	for _, h := range next {
		f.byFP[h.entry.Fingerprint] = h
	}
	for _, h := range stale {
		h.mu.Lock()
		h.lastErr = "removed from the forward edges file"
		h.mu.Unlock()
		if h.stop != nil {
			f.stopping.Go(h.stopHost) // never wait for a dial under f.mu
		}
	}
}

// sameTarget reports whether two entries reach the same device the same way.
func sameTarget(a, b Entry) bool {
	return a.Address == b.Address && a.User == b.User && a.Fingerprint == b.Fingerprint &&
		(a.HostKey == nil) == (b.HostKey == nil) &&
		(a.HostKey == nil || string(a.HostKey.Marshal()) == string(b.HostKey.Marshal()))
}

// Edges lists the forward edges sorted by name (only connected ones with connectedOnly),
// every map non-nil: the same shape as gateway.Gateway.Edges, to merge with it.
func (f *Fleet) Edges(connectedOnly bool) []gateway.EdgeStatus {
	st := f.Statuses(connectedOnly)
	out := make([]gateway.EdgeStatus, len(st))
	for i := range st {
		out[i] = st[i].EdgeStatus
	}
	return out
}

// Statuses is Edges with the forward-only fields: kind, last error, host key mismatch.
func (f *Fleet) Statuses(connectedOnly bool) []Status {
	f.mu.RLock()
	hosts := make([]*host, 0, len(f.hosts))
	for _, h := range f.hosts {
		hosts = append(hosts, h)
	}
	f.mu.RUnlock()
	out := make([]Status, 0, len(hosts))
	for _, h := range hosts {
		st := h.status()
		if connectedOnly && !st.Connected {
			continue
		}
		h.mu.Lock()
		s := Status{EdgeStatus: st, Kind: Kind, HostKeyMismatch: h.mismatch}
		if !st.Connected {
			s.LastError = cmp.Or(h.lastErr, "not connected yet")
		}
		h.mu.Unlock()
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Has reports whether ref (a name, case-insensitive, or a SHA256 fingerprint) names a
// forward edge: a composite fleet asks this before the companion gateway.
func (f *Fleet) Has(ref string) bool { return f.lookup(strings.TrimSpace(ref)) != nil }

func (f *Fleet) lookup(ref string) *host {
	if ref == "" || len(ref) > 128 {
		return nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if h := f.byFP[ref]; h != nil {
		return h
	}
	return f.hosts[strings.ToLower(ref)]
}

// Edge resolves ref (a name, case-insensitive, or the pinned host key's SHA256 fingerprint)
// to a forward edge. An offline edge resolves too; its calls fail with gateway.ErrEdgeOffline
// saying why. An unknown ref is gateway.ErrUnknownEdge.
func (f *Fleet) Edge(ref string) (gateway.Edge, error) {
	ref = strings.TrimSpace(ref)
	h := f.lookup(ref)
	if h == nil {
		if ref == "" {
			return nil, fmt.Errorf("%w: no edge given (use a name or SHA256:… fingerprint from get_status)", gateway.ErrUnknownEdge)
		}
		return nil, fmt.Errorf("%w: %.64s", gateway.ErrUnknownEdge, ref)
	}
	h.mu.Lock()
	labels := cloneLabels(h.labels)
	h.mu.Unlock()
	return &Edge{h: h, labels: labels}, nil
}

// Inventories lists the forward edges with a summary of the last device info probed (nil
// before the first), like gateway.Gateway.Inventories, for find_edges.
func (f *Fleet) Inventories(connectedOnly bool) []gateway.EdgeInventory {
	f.mu.RLock()
	hosts := make([]*host, 0, len(f.hosts))
	for _, h := range f.hosts {
		hosts = append(hosts, h)
	}
	f.mu.RUnlock()
	out := make([]gateway.EdgeInventory, 0, len(hosts))
	for _, h := range hosts {
		st := h.status()
		if connectedOnly && !st.Connected {
			continue
		}
		h.mu.Lock()
		var sum *gateway.InventorySummary
		if h.info != nil {
			s := summarize(h.info, h.infoAt)
			sum = &s
		}
		h.mu.Unlock()
		out = append(out, gateway.EdgeInventory{Status: st, Summary: sum})
	}
	slices.SortFunc(out, func(a, b gateway.EdgeInventory) int { return strings.Compare(a.Status.Name, b.Status.Name) })
	return out
}

// WatchEdges signals (coalesced) when a forward edge connects or disconnects or the file is
// reloaded, until ctx ends.
func (f *Fleet) WatchEdges(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	f.watchMu.Lock()
	f.watchers[ch] = struct{}{}
	f.watchMu.Unlock()
	context.AfterFunc(ctx, func() {
		f.watchMu.Lock()
		delete(f.watchers, ch)
		f.watchMu.Unlock()
	})
	return ch
}

func (f *Fleet) changed() {
	f.watchMu.Lock()
	defer f.watchMu.Unlock()
	for ch := range f.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (f *Fleet) event(e Event) {
	switch e.Kind {
	case EventHostKeyMismatch:
		f.opts.Log.Error("forward edge refused: host key mismatch, not authenticating", "edge", e.Edge, "address", e.Address, "err", e.Err)
	case EventDialFailed:
		f.opts.Log.Warn("forward edge unreachable, retrying with backoff", "edge", e.Edge, "address", e.Address, "err", e.Err)
	case EventConnected, EventDisconnected:
		f.opts.Log.Info(strings.ReplaceAll(string(e.Kind), "_", " "), "edge", e.Edge, "address", e.Address)
	}
	if f.opts.OnEvent != nil {
		f.opts.OnEvent(e)
	}
}

func (f *Fleet) logf(format string, args ...any) { f.opts.Log.Warn(fmt.Sprintf(format, args...)) }

// ClientPublicKey is the client key's public half in authorized_keys format: what each
// device's ~/.ssh/authorized_keys must list (get_agent_pubkey's client_public_key).
func ClientPublicKey(s ssh.Signer) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
}
