package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Defaults for the zero values of Config.
const (
	defaultMaxHandshakes    = 64
	defaultHandshakeTimeout = 10 * time.Second
	// defaultAdmissionWait lets a reconnect storm queue for handshake slots instead of being
	// dropped into the edges' backoff (up to EDGE_BACKOFF_MAX): 10,000 edges back after a
	// restart in 10.4 s with 10 s, 14.3–16.6 s with 5 s (a tail of edges dropped after 5 s
	// and sleeping in backoff), 36–38 s with 1 s (docs/BENCHMARKS-SCALE.md). It stays under
	// the edge's 15 s handshake timeout. The price: a flood of bare TCP connections holds ten
	// times as many sockets at once as with 1 s.
	defaultAdmissionWait     = 10 * time.Second
	defaultMaxQueue          = 64
	defaultKeepaliveInterval = 15 * time.Second
	// defaultKexTimeout bounds the version line and the key exchange: a few round trips
	// even on a slow link, and well under HandshakeTimeout.
	defaultKexTimeout = 5 * time.Second
	// dropLogWindow: a connection dropped before its handshake is logged at most once per
	// reason in it.
	dropLogWindow = 10 * time.Second
)

// Config is what the gateway's SSH side needs. Zero values get the defaults noted.
type Config struct {
	HostKey             ssh.Signer    // the gateway's SSH host key (required)
	Bind                string        // host:port to listen on; port 0 picks a free one
	PublicAddr          string        // host:port edges dial (shown in Info)
	KeepaliveInterval   time.Duration // default 15s; three missed replies drop the edge
	AuthorizedKeysFile  string        // edge keys with bound names and labels (required)
	ID                  string        // GATEWAY_ID: this gateway's name in a cluster and in get_status
	Version             string        // gateway version, in the SSH banner and Info
	Mode                string        // GATEWAY_MODE, shown in Info
	ProvisioningEnabled bool          // shown in Info
	MaxHandshakes       int           // concurrent SSH handshakes, default 64
	HandshakeTimeout    time.Duration // default 10s, also bounds opening the tunnel channel
	AdmissionWait       time.Duration // how long a connection waits for a handshake slot, default 10s
	// KexTimeout bounds the unauthenticated start of a connection: the peer's version line
	// must arrive within it of the accept (before the connection may wait for a handshake
	// slot), and the key exchange must end within it of taking the slot. Default 5s; at most
	// HandshakeTimeout.
	KexTimeout time.Duration
	// PerSourceMaxStartups bounds the unauthenticated connections at once from one source:
	// an IPv4 address, or an IPv6 /64 (OpenSSH's PerSourceMaxStartups and
	// PerSourceNetBlockSize 32:64). More are dropped at accept (and retry with their
	// backoff). Default MaxHandshakes/2, so that no one source can take every handshake
	// slot; a site with many edges behind one NAT address reconnects in a few rounds.
	PerSourceMaxStartups int
	// MaxStartups is the early random drop of unauthenticated connections (OpenSSH's
	// MaxStartups start:rate:full). Zero: 12288:30:16384.
	MaxStartups       StartupLimits
	MaxQueue          int           // per-edge calls waiting beyond its max_concurrent, default 64
	StateDir          string        // pending keys and enrolment secrets; "" disables both
	Audit             *audit.Logger // nil discards
	Log               *slog.Logger  // nil discards
	Metrics           Metrics       // nil records nothing
	InventoryInterval time.Duration // how often each edge's inventory is pulled; 0 = 2m, <0 = only at connect

	refusalInterval time.Duration // of the refusal log's counts; 0 = a minute (tests shorten it)
}

// Gateway is the SSH server edges dial into, and the client of their RPCs. Create it with
// New, bind with Listen, run with Serve.
type Gateway struct {
	cfg         Config
	log         *slog.Logger
	keys        *keyStore
	reg         *registry
	yamuxConfig *yamux.Config // shared by every tunnel (copied to set the backlog)
	handshakes  chan struct{} // admission semaphore
	startups    *startupGate  // unauthenticated connections, in all and per source
	dropLog     *failLimiter  // connections dropped before their handshake, logged once per reason a while
	connects    connectRate   // handshakes started per second, to recognise a storm
	refusals    *refusalLog   // unauthenticated refusals, counted per source for the audit log
	penalties   *penaltyBox
	binder      *nameBinder  // binds requested names to keys on first connect
	pendingKey  *failLimiter // how often one pending key is rewritten
	sharedKeys  *failLimiter // how often one key connected from two places is warned about
	pendingNew  *rateWindow  // new pending keys per minute
	hostFP      string
	hostLine    string
	started     time.Time
	wg          sync.WaitGroup // every goroutine Serve started
	inv         *inventoryStore
	watchMu     sync.Mutex
	watchers    map[chan struct{}]struct{}

	nameHolder     atomic.Pointer[NameHolder]  // names held on other gateways of a cluster; nil alone
	nameClaim      atomic.Pointer[NameClaim]   // claims a name across the cluster; nil alone
	enrollShare    atomic.Pointer[EnrollShare] // enrolments shared with a cluster; nil alone
	agentlessSrv   atomic.Pointer[AgentlessServer]
	agentlessReady chan struct{} // closed once agentlessSrv is set
	agMu           sync.Mutex
	agConns        map[string]*agentlessConn // live agentless connections, by key

	mu         sync.Mutex
	ln         net.Listener
	publicAddr string
	closing    chan struct{}
	closeOnce  sync.Once
	serving    chan struct{} // closed when Serve returns; nil before Serve
}

// New checks cfg and loads the authorized keys (a missing file is an empty set, created on the
// first registration). Nothing listens until Listen.
func New(cfg Config) (*Gateway, error) {
	if cfg.HostKey == nil {
		return nil, errors.New("gateway: no host key")
	}
	if cfg.AuthorizedKeysFile == "" {
		return nil, errors.New("gateway: no authorized keys file")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.KeepaliveInterval <= 0 {
		cfg.KeepaliveInterval = defaultKeepaliveInterval
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = defaultMaxHandshakes
	}
	if cfg.AdmissionWait <= 0 {
		cfg.AdmissionWait = defaultAdmissionWait
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = defaultHandshakeTimeout
	}
	if cfg.KexTimeout <= 0 {
		cfg.KexTimeout = defaultKexTimeout
	}
	cfg.KexTimeout = min(cfg.KexTimeout, cfg.HandshakeTimeout)
	if cfg.PerSourceMaxStartups <= 0 {
		cfg.PerSourceMaxStartups = max(cfg.MaxHandshakes/2, 1)
	}
	if cfg.MaxStartups == (StartupLimits{}) {
		cfg.MaxStartups = StartupLimits{Start: defaultStartupsStart, Rate: defaultStartupsRate, Full: defaultStartupsFull}
	}
	if l := cfg.MaxStartups; l.Start <= 0 || l.Full < l.Start || l.Rate < 0 || l.Rate > 100 {
		return nil, fmt.Errorf("gateway: MaxStartups %d:%d:%d: want 0 < start <= full and 0 <= rate <= 100", l.Start, l.Rate, l.Full)
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = defaultMaxQueue
	}
	if cfg.InventoryInterval == 0 {
		cfg.InventoryInterval = defaultInventoryInterval
	}
	g := &Gateway{
		cfg:        cfg,
		log:        cfg.Log.With("component", "ssh"),
		reg:        newRegistry(),
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		startups:   newStartupGate(cfg.PerSourceMaxStartups, cfg.MaxStartups),
		dropLog:    newFailLimiter(dropLogWindow),
		refusals:   newRefusalLog(cmp.Or(cfg.refusalInterval, defaultRefusalInterval)),
		penalties:  newPenaltyBox(),
		pendingKey: newFailLimiter(pendingRefresh),
		sharedKeys: newFailLimiter(time.Minute),
		pendingNew: &rateWindow{max: maxNewPendingMin},
		hostFP:     keys.Fingerprint(cfg.HostKey.PublicKey()),
		hostLine:   keys.AuthorizedLine(cfg.HostKey.PublicKey()),
		started:    time.Now(),
		publicAddr: cfg.PublicAddr,
		closing:    make(chan struct{}),
		inv:        newInventoryStore(),
		watchers:   map[chan struct{}]struct{}{},
	}
	g.agConns, g.agentlessReady = map[string]*agentlessConn{}, make(chan struct{})
	ks, err := newKeyStore(cfg.AuthorizedKeysFile, g.log, g.keysChanged)
	if err != nil {
		return nil, err
	}
	g.keys = ks
	g.binder = newNameBinder(g)
	g.yamuxConfig = protocol.YamuxConfig(cfg.Log)
	return g, nil
}

// keysChanged audits every key that entered or left authorized_keys (whoever changed the
// file), closes the tunnels of the keys that left, forgets their inventory and tells the
// edge watchers (the known edges changed).
func (g *Gateway) keysChanged(added, removed []*authKey) {
	defer g.notifyEdges()
	for _, k := range added {
		g.cfg.Audit.Write(audit.Event{Event: "key_added", Edge: k.name, Fingerprint: k.fp, Outcome: "ok"})
	}
	fps := make([]string, 0, len(removed))
	for _, k := range removed {
		fps = append(fps, k.fp)
		g.cfg.Audit.Write(audit.Event{Event: "key_revoked", Edge: k.name, Fingerprint: k.fp, Outcome: "ok"})
	}
	g.inv.forget(fps)
	if len(removed) > 0 {
		revoked := make([]KeyRevoked, 0, len(removed))
		for _, k := range removed {
			revoked = append(revoked, KeyRevoked{Fingerprint: k.fp, Name: k.name})
		}
		// A revoked key that tries again shows in the pending list as revoked, not as new.
		if err := RememberRevoked(g.cfg.StateDir, revoked...); err != nil {
			g.log.Warn("revoked keys not remembered in the pending list", "err", err)
		}
	}
	if names := g.reg.closeKeys(fps); len(names) > 0 {
		g.log.Info("edge keys no longer authorized: tunnels closed", "edges", names)
	}
	if names := g.closeAgentless(fps); len(names) > 0 {
		g.log.Info("agentless keys no longer authorized: connections closed", "edges", names)
	}
}

// Listen binds cfg.Bind and logs "ssh listening" with the actual address.
func (g *Gateway) Listen() (net.Addr, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		return g.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", g.cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("listen for edges on %s: %w", g.cfg.Bind, err)
	}
	g.ln = ln
	g.log.Info("ssh listening", "addr", ln.Addr().String())
	return ln.Addr(), nil
}

// SetPublicAddr sets the host:port edges dial, once it is known (after Listen).
func (g *Gateway) SetPublicAddr(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.publicAddr = addr
}

// Serve accepts edges until ctx is done or Close is called, then closes every tunnel and
// waits for all its goroutines. It calls Listen if that was not done.
func (g *Gateway) Serve(ctx context.Context) error {
	if _, err := g.Listen(); err != nil {
		return err
	}
	g.mu.Lock()
	if g.serving != nil {
		g.mu.Unlock()
		return errors.New("gateway: Serve called twice")
	}
	g.serving = make(chan struct{})
	ln := g.ln
	g.mu.Unlock()
	defer close(g.serving)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.wg.Go(func() { g.keys.watch(ctx) })
	g.wg.Go(func() { g.binder.run(ctx) })
	g.wg.Go(func() { g.flushRefusals(ctx.Done()) })
	g.wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-g.closing:
		}
		cancel()
		ln.Close()
	})
	err := g.acceptLoop(ctx, ln)
	cancel()
	for _, e := range g.reg.all() {
		e.close()
	}
	g.wg.Wait()
	g.log.Info("ssh stopped: all tunnels closed")
	return err
}

func (g *Gateway) acceptLoop(ctx context.Context, ln net.Listener) error {
	backoff := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTooManyFiles) {
				g.log.Warn("ssh accept failed, retrying", "err", err)
				select {
				case <-time.After(backoff):
				case <-ctx.Done():
					return nil
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			return fmt.Errorf("accept edges: %w", err)
		}
		backoff = 5 * time.Millisecond
		g.wg.Go(func() { g.handleConn(ctx, nc) })
	}
}

// Close stops Serve (closing every tunnel) and waits for it; without Serve it releases the
// listener.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() { close(g.closing) })
	g.mu.Lock()
	ln, serving := g.ln, g.serving
	g.mu.Unlock()
	if serving != nil {
		<-serving
		return nil
	}
	if ln != nil {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
	}
	return nil
}

// Info describes the gateway (get_status.gateway).
func (g *Gateway) Info() Info {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := Info{
		ID:                  g.cfg.ID,
		Version:             g.cfg.Version,
		Mode:                g.cfg.Mode,
		PublicAddr:          g.publicAddr,
		HostKeyFingerprint:  g.hostFP,
		HostKeyLine:         g.hostLine,
		Started:             g.started,
		ProvisioningEnabled: g.cfg.ProvisioningEnabled,
	}
	if g.ln != nil {
		i.SSHAddr = g.ln.Addr().String()
	}
	return i
}

// Edges lists the known keys (authorized_keys) and the connected edges, sorted by name then
// fingerprint; agentless keys are listed with kind agentless, as their AgentlessServer sees
// them while their tunnel is up. connectedOnly leaves the offline ones out. Maps are never nil.
//
// Every get_status, find_edges and MCP resource sync lists the whole fleet (the sync up to five
// times a second while edges come and go), so this is kept cheap at 10,000 edges: the slice is
// sized for what is returned, the offline scan is skipped when every key is connected, and the
// sort moves small keys rather than the statuses.
func (g *Gateway) Edges(connectedOnly bool) []EdgeStatus {
	set := g.keys.snapshot()
	r := g.reg
	r.mu.Lock()
	n := len(r.byFP)
	if !connectedOnly {
		n += len(set.byFP)
	}
	out := make([]EdgeStatus, 0, n)
	known := 0 // connected edges whose key is in set
	for _, e := range r.byFP {
		var labels map[string]string
		if k := set.byFP[e.fp]; k != nil {
			labels = k.labels
			known++
		}
		st := r.status(e, labels)
		st.Gateway = g.cfg.ID
		out = append(out, st)
	}
	if !connectedOnly && known < len(set.byFP) {
		for fp, k := range set.byFP {
			if r.byFP[fp] != nil || k.agentless != nil {
				continue
			}
			st := EdgeStatus{Name: k.name, Fingerprint: fp, Labels: cloneLabels(k.labels), ReportedLabels: map[string]string{}, Kind: KindCompanion}
			if s, ok := r.seen[fp]; ok {
				if st.Name == "" && r.byName[s.name] == nil && (set.byName[s.name] == "" || set.byName[s.name] == fp) {
					st.Name = s.name
				}
				st.ReportedLabels = cloneLabels(s.hello.Labels)
				st.RemoteAddr, st.LastSeen = s.remote, s.lastSeen
				st.EdgeVersion, st.OS, st.Arch = s.hello.Version, s.hello.OS, s.hello.Arch
			}
			out = append(out, st)
		}
	}
	r.mu.Unlock()
	out = append(out, g.agentlessStatuses(set, connectedOnly)...)
	sortStatuses(out)
	return out
}

// statusKey is what sortStatuses orders by, with the status's index.
type statusKey struct {
	name, fp string
	i        int
}

// sortStatuses sorts by name then fingerprint (unique: no two statuses share a fingerprint).
// An EdgeStatus is 176 bytes: sorting 40-byte keys, then moving each status once (following
// the permutation's cycles), costs less than swapping the statuses themselves.
func sortStatuses(out []EdgeStatus) {
	keys := make([]statusKey, len(out))
	for i := range out {
		keys[i] = statusKey{out[i].Name, out[i].Fingerprint, i}
	}
	slices.SortFunc(keys, func(a, b statusKey) int {
		if c := strings.Compare(a.name, b.name); c != 0 {
			return c
		}
		return strings.Compare(a.fp, b.fp)
	})
	// out[j] must become the old out[keys[j].i]; keys[j].i = j marks position j done.
	for start := range keys {
		if keys[start].i == start {
			continue
		}
		tmp := out[start]
		j := start
		for {
			src := keys[j].i
			keys[j].i = j
			if src == start {
				out[j] = tmp
				break
			}
			out[j] = out[src]
			j = src
		}
	}
}

// RegisterKey authorizes an edge key: line is one authorized_keys line (options stripped),
// name optional (bound to the key), labels optional (bound, used for selection). Anything
// but a public key is refused without echoing it. A key already present is left unchanged
// and reported with Added=false. The edge can connect as soon as this returns.
func (g *Gateway) RegisterKey(line, name string, labels map[string]string) (KeyAdded, error) {
	k, err := g.keys.register(line, name, labels)
	if err != nil {
		return KeyAdded{}, err
	}
	if k.Added { // keysChanged wrote the key_added line
		g.log.Info("edge key registered", "fingerprint", k.Fingerprint, "name", k.Name)
	}
	if k.Labels == nil {
		k.Labels = map[string]string{}
	}
	return k, nil
}
