package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/audit"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
)

// Names in NATS. Every subject and bucket of the cluster starts with "mcpgw".
const (
	bucketEdges  = "mcpgw_edges" // edge fingerprint → route (which gateway holds it)
	bucketKeys   = "mcpgw_keys"  // key fingerprint → authorized_keys line; deleted = revoked
	bucketNames  = "mcpgw_names" // edge name → fingerprint of the edge holding it
	subjectPeers = "mcpgw.peers" // each gateway's heartbeat
	peerEvery    = 2 * time.Second
	peerGone     = 3 * peerEvery
	// openWait bounds how long a relayed call waits for the holder to take it.
	openWait = 3 * time.Second
	// maxRelayed bounds the calls a gateway relays for the others at once.
	maxRelayed = 1024
	// natsOpTimeout bounds one KV operation.
	natsOpTimeout = 5 * time.Second
)

// callSubject is where the gateway id takes the calls relayed to it.
func callSubject(id string) string { return "mcpgw.gw." + id + ".call" }

// kvKey is a fingerprint as a KV key (which allows only [-/_=.a-zA-Z0-9]).
func kvKey(fp string) string { return kvKeyEnc.Replace(fp) }

// fpOfKey reverses kvKey.
func fpOfKey(k string) string { return kvKeyDec.Replace(k) }

var (
	kvKeyEnc = strings.NewReplacer(":", ".", "+", "-", "/", "_")
	kvKeyDec = strings.NewReplacer(".", ":", "-", "+", "_", "/")
)

// Config is what a gateway needs to join a cluster.
type Config struct {
	URL   string // CLUSTER_NATS_URL
	Creds string // CLUSTER_NATS_CREDS: a NATS credentials file, or ""
	ID    string // GATEWAY_ID, unique in the cluster
	// Interval is how often this gateway refreshes the routes of its edges; they expire after
	// three intervals without one (a gateway that died). Default 15s (KEEPALIVE_INTERVAL).
	Interval time.Duration
	Gateway  *gateway.Gateway
	Audit    *audit.Logger // the relayed calls this gateway runs for others; nil discards
	Log      *slog.Logger
}

// Node is one gateway's membership of the cluster: the routes of every edge, the peers, the
// key changes shared with them, and the calls it relays for them. Create it with Start.
type Node struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	ix    *inboxes // the relayed calls' links
	gw    *gateway.Gateway
	relay chan struct{} // semaphore of relayed calls

	mu     sync.RWMutex
	routes map[string]route     // fingerprint → route, of edges held by other gateways
	names  map[string]string    // name → fingerprint, of those
	peers  map[string]peerState // by gateway id
	enroll jetstream.KeyValue   // the enrolment bucket of the current session; nil without one
	// namesKV is the names bucket of the current session (nil without one); claims are the
	// names another gateway's edge was found to hold when one here asked for them.
	namesKV jetstream.KeyValue
	claims  map[string]nameClaim
	// agreed is what this gateway's authorized keys and the bucket last agreed on
	// (fingerprint → line); only the key sync loop uses it.
	agreed map[string]string

	watchMu  sync.Mutex
	watchers map[chan struct{}]struct{} // woken when the routing table changes

	writes atomic.Int64 // routes written, for the route watch's stall check

	downMu sync.Mutex
	down   chan struct{} // closed while the NATS connection is down; a new one once it is back

	wake chan struct{} // the NATS connection came back: start over
	done chan struct{}
	wg   sync.WaitGroup
}

// route is where an edge is connected, as its holder published it.
type route struct {
	Gateway string             `json:"gateway"`
	Status  gateway.EdgeStatus `json:"status"`
	rev     uint64             // KV revision
}

// peerState is what a gateway's heartbeat said, and when it arrived.
type peerState struct {
	ID    string    `json:"id"`
	Edges int       `json:"edges"`
	Seen  time.Time `json:"-"`
}

// Start connects to NATS and runs the node until Close. A NATS server that cannot be reached
// now is retried without end: meanwhile the gateway serves its own edges, and calls for
// others' fail at once.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.ID == "" || strings.ContainsAny(cfg.ID, " .*>\t\r\n") {
		return nil, fmt.Errorf("cluster: gateway id %q cannot be part of a NATS subject", cfg.ID)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 15 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: cfg.Log.With("component", "cluster"), gw: cfg.Gateway,
		relay: make(chan struct{}, maxRelayed), routes: map[string]route{}, names: map[string]string{},
		peers: map[string]peerState{}, watchers: map[chan struct{}]struct{}{}, claims: map[string]nameClaim{}, down: make(chan struct{}), wake: make(chan struct{}, 1), done: make(chan struct{})}
	opts := []nats.Option{
		nats.Name("mcp-ssh-gateway " + cfg.ID),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectBufSize(-1), // while NATS is away a publish fails at once: no call waits on a buffer
		nats.ReconnectHandler(func(*nats.Conn) {
			n.log.Info("NATS connection restored")
			n.setDown(false)
			n.kick()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			n.log.Warn("NATS connection lost: serving this gateway's edges only until it is back", "err", err)
			n.setDown(true)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			// Messages dropped for a slow consumer break every link that lost one.
			if n.ix != nil && sub == n.ix.sub && errors.Is(err, nats.ErrSlowConsumer) {
				n.log.Warn("relayed calls ended: this gateway could not keep up with their messages", "err", err)
				n.ix.failAll(errLinkLost)
			}
		}),
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("CLUSTER_NATS_URL %s: %w", cfg.URL, err)
	}
	n.nc = nc
	if n.ix, err = newInboxes(nc); err != nil {
		nc.Close()
		return nil, err
	}
	if _, err := nc.Subscribe(callSubject(cfg.ID), n.serveCall); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	if _, err := nc.Subscribe(pendingSubject(cfg.ID), n.servePending); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	if _, err := nc.Subscribe(subjectPeers, n.heardPeer); err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: subscribe: %w", err)
	}
	cfg.Gateway.SetNameHolder(n.nameHolder, n.claimName)
	cfg.Gateway.SetEnrollShare(enrollShare{n})
	n.wg.Go(func() { n.run(ctx) })
	n.wg.Go(func() { n.heartbeat(ctx) })
	return n, nil
}

// Close leaves the cluster: routes of this gateway's edges are withdrawn (the edges reconnect
// elsewhere and are routed there), then the connection closes.
func (n *Node) Close() {
	select {
	case <-n.done:
		return
	default:
	}
	close(n.done)
	n.wg.Wait()
	n.nc.Close()
}

// setDown records that the NATS connection went down (calls relayed over it end at once) or
// came back.
func (n *Node) setDown(down bool) {
	n.downMu.Lock()
	select {
	case <-n.down:
		if !down {
			n.down = make(chan struct{})
		}
	default:
		if down {
			close(n.down)
		}
	}
	n.downMu.Unlock()
	if down {
		n.ix.failAll(errNATSLost)
	}
}

// downChan is closed once the NATS connection is down.
func (n *Node) downChan() <-chan struct{} {
	n.downMu.Lock()
	defer n.downMu.Unlock()
	return n.down
}

// newLink is a link for a relayed call that ends as soon as the NATS connection drops (what
// it carries could not get through until the connection is back): setDown fails the links
// open then, and one opened while the connection is down fails here.
func (n *Node) newLink(peer string) *link {
	l := n.ix.open(peer)
	select {
	case <-n.downChan():
		l.fail(errNATSLost)
	default:
	}
	return l
}

// ID is this gateway's id.
func (n *Node) ID() string { return n.cfg.ID }

// kick restarts the sync loops (after a reconnect).
func (n *Node) kick() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run keeps the buckets, the watches and the published routes in sync, starting over when
// NATS comes back after an outage.
func (n *Node) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	for ctx.Err() == nil {
		err := n.session(ctx)
		if ctx.Err() != nil {
			break
		}
		n.log.Warn("cluster sync interrupted: retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-n.wake:
		case <-time.After(time.Second):
		}
	}
	n.withdraw()
}

// session is one run of the sync loops over one NATS connection: it returns on an error
// (the connection was lost) or when ctx ends.
func (n *Node) session(ctx context.Context) error {
	js, err := jetstream.New(n.nc)
	if err != nil {
		return err
	}
	ttl := 3 * n.cfg.Interval
	opCtx, cancel := context.WithTimeout(ctx, natsOpTimeout)
	// Routes live in memory (the gateways write them again after a NATS restart); keys on disk.
	edges, err := js.CreateOrUpdateKeyValue(opCtx, jetstream.KeyValueConfig{Bucket: bucketEdges, History: 1,
		TTL: ttl, LimitMarkerTTL: max(ttl, time.Second), Storage: jetstream.MemoryStorage})
	var keys, names jetstream.KeyValue
	if err == nil {
		names, err = js.CreateOrUpdateKeyValue(opCtx, jetstream.KeyValueConfig{Bucket: bucketNames, History: 1,
			TTL: ttl, LimitMarkerTTL: max(ttl, time.Second), Storage: jetstream.MemoryStorage})
		n.mu.Lock()
		n.namesKV = names
		n.mu.Unlock()
	}
	if err == nil {
		keys, err = js.CreateOrUpdateKeyValue(opCtx, jetstream.KeyValueConfig{Bucket: bucketKeys, History: 1,
			Storage: jetstream.FileStorage})
	}
	if err == nil {
		var enroll jetstream.KeyValue
		enroll, err = js.CreateOrUpdateKeyValue(opCtx, jetstream.KeyValueConfig{Bucket: bucketEnroll, History: 1,
			TTL: gateway.MaxEnrollTTL, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage})
		n.mu.Lock()
		n.enroll = enroll
		n.mu.Unlock()
	}
	cancel()
	if err != nil {
		return fmt.Errorf("JetStream key-value buckets (is JetStream enabled on the NATS server?): %w", err)
	}
	n.log.Debug("cluster sync started")
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context) error{
		func(c context.Context) error { return n.watchRoutes(c, edges) },
		func(c context.Context) error { return n.publishRoutes(c, edges, names) },
		func(c context.Context) error { return n.syncKeys(c, keys) },
	} {
		wg.Go(func() {
			if err := loop(sctx); err != nil && sctx.Err() == nil {
				errc <- err
			}
			stop()
		})
	}
	select {
	case <-sctx.Done():
	case <-n.wake:
		errc <- errors.New("NATS reconnected")
	}
	stop()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return ctx.Err()
	}
}

// heartbeat announces this gateway to the others every peerEvery.
func (n *Node) heartbeat(ctx context.Context) {
	t := time.NewTicker(peerEvery)
	defer t.Stop()
	for {
		b, _ := json.Marshal(peerState{ID: n.cfg.ID, Edges: n.gw.ConnectedCount()})
		_ = n.nc.Publish(subjectPeers, b)
		select {
		case <-ctx.Done():
			return
		case <-n.done:
			return
		case <-t.C:
		}
	}
}

// heardPeer records another gateway's heartbeat.
func (n *Node) heardPeer(m *nats.Msg) {
	var p peerState
	if len(m.Data) > 4096 || json.Unmarshal(m.Data, &p) != nil || p.ID == "" || p.ID == n.cfg.ID {
		return
	}
	p.Seen = time.Now()
	n.mu.Lock()
	if len(n.peers) < 1024 || n.peers[p.ID].ID != "" {
		n.peers[p.ID] = p
	}
	n.mu.Unlock()
}

// Status reports the NATS link and the peers heard from recently, sorted by id.
func (n *Node) Status() *gateway.ClusterInfo {
	s := &gateway.ClusterInfo{Connected: n.nc.IsConnected(), Peers: []gateway.PeerInfo{}}
	n.mu.RLock()
	for _, p := range n.peers {
		if time.Since(p.Seen) < peerGone {
			s.Peers = append(s.Peers, gateway.PeerInfo{ID: p.ID, Edges: p.Edges, LastSeen: p.Seen})
		}
	}
	n.mu.RUnlock()
	slices.SortFunc(s.Peers, func(a, b gateway.PeerInfo) int { return strings.Compare(a.ID, b.ID) })
	return s
}
