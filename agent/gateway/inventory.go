package gateway

// This file keeps the fleet's inventory at the gateway. Only the gateway opens streams, so it
// pulls: each connected edge is asked for its device info at connect and then every
// Config.InventoryInterval (with jitter, so that a restarted gateway does not ask 10,000 edges
// at once). The edge decides what each answer costs it (cheap figures always, slow probes
// rarely); the gateway keeps the latest answer per key, compactly, so that get_device_info,
// find_edges and the MCP resources read it without a round trip.

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

const (
	defaultInventoryInterval = 2 * time.Minute
	// inventoryPullTimeout bounds one pull (the edge's slow probes included).
	inventoryPullTimeout = 2 * time.Minute
	// maxInventories bounds the store: entries of offline edges are dropped first.
	maxInventories = 20000
	// maxInventoryBlob bounds one stored (compressed) inventory.
	maxInventoryBlob = 256 << 10
	// maxInterned bounds the string interning table.
	maxInterned = 8192
	// maxToolLists bounds the table of shared tool lists.
	maxToolLists = 1024
	// maxScheduledPulls bounds the scheduled pulls running at once. After a reconnect storm
	// every edge's first pull is due within seconds: unbounded, 10,000 goroutines each held a
	// deep stack and a half-decoded inventory at the same time, and the runtime keeps every
	// goroutine descriptor it ever made. 256 at once still pull 10,000 edges in seconds on
	// loopback (about 40 s at a 1 s round trip). Pulls asked for by a tool are not counted.
	maxScheduledPulls = 256
)

// InventorySummary is the part of an edge's inventory that choosing an edge needs, kept
// uncompressed for every edge (find_edges filters and sorts 10,000 of them in a few ms).
// Its slices are shared by every edge with the same tools (most of a fleet): read them,
// never change them.
type InventorySummary struct {
	OS, Platform, PlatformVersion, Arch string
	LogicalCores                        int
	Load1                               float64
	MemoryTotal, MemoryAvailable        uint64
	DiskFree                            uint64   // most free bytes on one local filesystem
	DiskFreeMount                       string   // which one
	Tools                               []string // sorted names: tools and container runtimes
	ToolVersions                        []string // version of Tools[i], "" if unknown
	ContainerRuntimes                   []string
	PackageManager, InitSystem          string
	UpdatesChecked                      bool
	PendingUpdates, SecurityUpdates     int
	FailedUnits                         int
	GPU                                 bool
	CollectedAt                         time.Time // edge's clock
	ReceivedAt                          time.Time // gateway's clock
}

// HasTool reports whether the edge has the named tool or container runtime.
func (s *InventorySummary) HasTool(name string) bool {
	_, ok := slices.BinarySearch(s.Tools, name)
	return ok
}

// ToolVersion is the version of a tool, "" when unknown or absent.
func (s *InventorySummary) ToolVersion(name string) string {
	if i, ok := slices.BinarySearch(s.Tools, name); ok {
		return s.ToolVersions[i]
	}
	return ""
}

// EdgeInventory is one edge's status with its inventory summary (nil before the first pull).
type EdgeInventory struct {
	Status  EdgeStatus
	Summary *InventorySummary
}

// inventoryEntry is what the store keeps per key: the summary and the full inventory as
// gzip-compressed JSON (about 1–2 KiB), decoded only when one edge's details are read.
type inventoryEntry struct {
	sum  InventorySummary
	blob []byte
}

// inventoryStore holds the latest inventory per key fingerprint, bounded in count and size.
type inventoryStore struct {
	mu       sync.Mutex
	byFP     map[string]*inventoryEntry
	max      int // entries kept, maxInventories
	interned map[string]string
	lists    map[string]toolList // by the key shareTools builds
	gz       sync.Pool           // *compressor
	pulling  chan struct{}       // one token per scheduled pull running (maxScheduledPulls)
}

// toolList is the tools part of a summary, shared by the edges that have the same one.
type toolList struct {
	tools, versions, runtimes []string
}

// compressor is a gzip writer with the buffer it writes to, reused across pulls.
type compressor struct {
	buf bytes.Buffer
	zw  *gzip.Writer
}

func newInventoryStore() *inventoryStore {
	return &inventoryStore{byFP: map[string]*inventoryEntry{}, max: maxInventories, interned: map[string]string{},
		lists: map[string]toolList{}, pulling: make(chan struct{}, maxScheduledPulls)}
}

// shareTools returns the shared copy of a tool list equal to l, keeping l as that copy when
// there is none yet (and room for it). Callers hold s.mu.
func (s *inventoryStore) shareTools(l toolList) toolList {
	var k strings.Builder
	for i, t := range l.tools {
		k.WriteString(t)
		k.WriteByte(0)
		k.WriteString(l.versions[i])
		k.WriteByte(0)
	}
	k.WriteByte(1)
	for _, r := range l.runtimes {
		k.WriteString(r)
		k.WriteByte(0)
	}
	key := k.String()
	if c, ok := s.lists[key]; ok {
		return c
	}
	if len(s.lists) < maxToolLists {
		s.lists[key] = l
	}
	return l
}

// intern returns a shared copy of a short, common string (OS, tool names, versions), so that
// 10,000 summaries do not each hold their own "linux" and "git". Callers hold s.mu.
func (s *inventoryStore) intern(v string) string {
	if len(v) > 64 {
		return v
	}
	if c, ok := s.interned[v]; ok {
		return c
	}
	if len(s.interned) < maxInterned {
		s.interned[v] = v
	}
	return v
}

// put stores d (already normalized) for fp. connected tells which entries may be evicted when
// the store is full: those of keys not connected, oldest first.
func (s *inventoryStore) put(fp string, d *protocol.DeviceInfo, connected func(fp string) bool) error {
	blob, err := s.compress(d)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byFP[fp]; !ok && len(s.byFP) >= s.max {
		victim, oldest := "", time.Time{}
		for k, e := range s.byFP {
			if !connected(k) && (victim == "" || e.sum.ReceivedAt.Before(oldest)) {
				victim, oldest = k, e.sum.ReceivedAt
			}
		}
		if victim == "" {
			return fmt.Errorf("inventory store is full (%d connected edges)", s.max)
		}
		delete(s.byFP, victim)
	}
	var prev *InventorySummary
	if e := s.byFP[fp]; e != nil {
		prev = &e.sum
	}
	s.byFP[fp] = &inventoryEntry{sum: s.summarize(d, prev), blob: blob}
	return nil
}

// summarize extracts the summary of d; prev is the edge's previous one (nil for none), whose
// shared tool list is kept when it did not change. Callers hold s.mu.
func (s *inventoryStore) summarize(d *protocol.DeviceInfo, prev *InventorySummary) InventorySummary {
	sum := InventorySummary{
		OS: s.intern(d.OS), Platform: s.intern(d.Platform), PlatformVersion: s.intern(d.PlatformVersion),
		Arch: s.intern(d.Arch), LogicalCores: d.CPU.LogicalCores, Load1: d.Load.Load1,
		MemoryTotal: d.Memory.Total, MemoryAvailable: d.Memory.Available,
		PackageManager: s.intern(d.Capabilities.PackageManager), InitSystem: s.intern(d.Capabilities.InitSystem),
		UpdatesChecked: d.Updates.Checked, PendingUpdates: d.Updates.Pending, SecurityUpdates: d.Updates.Security,
		FailedUnits: len(d.Capabilities.FailedUnits), GPU: d.GPU.Present, ReceivedAt: time.Now(),
	}
	if !d.Updates.Checked {
		sum.SecurityUpdates = -1
	}
	sum.CollectedAt, _ = time.Parse(time.RFC3339, d.CollectedAt)
	for _, disk := range d.Disks {
		if disk.Free > sum.DiskFree {
			sum.DiskFree, sum.DiskFreeMount = disk.Free, s.intern(disk.Mount)
		}
	}
	names := make([]string, 0, len(d.Capabilities.Tools)+len(d.Capabilities.ContainerRuntimes))
	for name := range d.Capabilities.Tools {
		names = append(names, name)
	}
	var l toolList
	for _, rt := range d.Capabilities.ContainerRuntimes {
		if _, ok := d.Capabilities.Tools[rt]; !ok {
			names = append(names, rt)
		}
		l.runtimes = append(l.runtimes, s.intern(rt))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	l.tools = make([]string, len(names))
	l.versions = make([]string, len(names))
	for i, n := range names {
		v := d.Capabilities.ToolVersions[n]
		if v == "" {
			v = d.Capabilities.ContainerRuntimeVersions[n]
		}
		l.tools[i], l.versions[i] = s.intern(n), s.intern(v)
	}
	if prev != nil && slices.Equal(prev.Tools, l.tools) && slices.Equal(prev.ToolVersions, l.versions) &&
		slices.Equal(prev.ContainerRuntimes, l.runtimes) {
		l = toolList{prev.Tools, prev.ToolVersions, prev.ContainerRuntimes} // the usual re-pull
	} else {
		l = s.shareTools(l)
	}
	sum.Tools, sum.ToolVersions, sum.ContainerRuntimes = l.tools, l.versions, l.runtimes
	return sum
}

// compress encodes d as gzip-compressed JSON.
// The blob is allocated at its exact size, the only allocation that outlives the call.
func (s *inventoryStore) compress(d *protocol.DeviceInfo) ([]byte, error) {
	c, _ := s.gz.Get().(*compressor)
	if c == nil {
		c = &compressor{}
		c.zw, _ = gzip.NewWriterLevel(&c.buf, gzip.BestSpeed)
	} else {
		c.buf.Reset()
		c.zw.Reset(&c.buf)
	}
	defer s.gz.Put(c)
	if err := json.NewEncoder(c.zw).Encode(d); err != nil {
		return nil, fmt.Errorf("encode inventory: %w", err)
	}
	if err := c.zw.Close(); err != nil {
		return nil, fmt.Errorf("compress inventory: %w", err)
	}
	if c.buf.Len() > maxInventoryBlob {
		return nil, fmt.Errorf("inventory is %d bytes compressed (max %d)", c.buf.Len(), maxInventoryBlob)
	}
	return bytes.Clone(c.buf.Bytes()), nil
}

// get returns the full stored inventory of fp.
func (s *inventoryStore) get(fp string) (protocol.DeviceInfo, bool, error) {
	var d protocol.DeviceInfo
	s.mu.Lock()
	e := s.byFP[fp]
	s.mu.Unlock()
	if e == nil {
		return d, false, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(e.blob))
	if err != nil {
		return d, false, fmt.Errorf("stored inventory: %w", err)
	}
	if err := json.NewDecoder(io.LimitReader(zr, protocol.MaxJSONFrame)).Decode(&d); err != nil {
		return d, false, fmt.Errorf("stored inventory: %w", err)
	}
	return d, true, nil
}

// summary returns a copy of fp's summary, or nil.
func (s *inventoryStore) summary(fp string) *InventorySummary {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byFP[fp]; e != nil {
		sum := e.sum
		return &sum
	}
	return nil
}

// forget drops the inventories of keys that are no longer authorized.
func (s *inventoryStore) forget(fps []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fp := range fps {
		delete(s.byFP, fp)
	}
}

// maxFirstPullDelay bounds how long a connect storm may put off an edge's first pull.
const maxFirstPullDelay = time.Minute

// inventoryWait is how long until the next scheduled pull of an edge's inventory: under a
// second after connect (spread a little, for a reconnect storm, and put off while the storm
// lasts: deferFirstPull), then InventoryInterval ±10 %.
// It returns 0 when no further pull is scheduled (a negative InventoryInterval: only the pull
// at connect happens). supervise runs the schedule, so it costs no goroutine per edge.
func (g *Gateway) inventoryWait(first bool) time.Duration {
	if first {
		return time.Duration(rand.Int64N(int64(time.Second))) + 1
	}
	interval := g.cfg.InventoryInterval
	if interval < 0 {
		return 0
	}
	return interval - interval/10 + time.Duration(rand.Int64N(int64(interval/5)+1))
}

// deferFirstPull reports whether an edge connected since `since` should put its first pull
// off by another second or two: during a reconnect storm (e.g. after a gateway restart: at
// least half the handshake slots taken, or stormConnects handshakes started within the last
// second), for at most maxFirstPullDelay. The pull (device_info round trip, JSON decode,
// re-encode and gzip at the gateway, JSON encode at the edge) measured 14 % of the gateway's
// CPU in a 10,000-edge restart, spent on the same cores as the handshakes the rest of the
// fleet is waiting for; done once the storm is over, it costs the same and the fleet is back
// sooner.
func (g *Gateway) deferFirstPull(since time.Time) bool {
	n := len(g.handshakes)
	storm := n > 0 && n >= cap(g.handshakes)/2 || g.connects.recent(time.Now()) >= stormConnects
	return storm && time.Since(since) < maxFirstPullDelay
}

// stormConnects handshakes started within a second make a connect storm. A fleet's usual
// churn is far below it; a restart of a gateway with thousands of edges far above.
const stormConnects = 100

// connectRate counts the handshakes started in the current and the previous wall-clock second.
type connectRate struct {
	mu        sync.Mutex
	sec       int64
	cur, prev int
}

// add counts a handshake started at now.
func (r *connectRate) add(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roll(now.Unix())
	r.cur++
}

// recent is the larger of this second's and the previous second's count.
func (r *connectRate) recent(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.roll(now.Unix())
	return max(r.cur, r.prev)
}

// roll moves the window to second s. Callers hold r.mu.
func (r *connectRate) roll(s int64) {
	switch s {
	case r.sec:
		return
	case r.sec + 1:
		r.prev, r.cur = r.cur, 0
	default:
		r.prev, r.cur = 0, 0
	}
	r.sec = s
}

// pullInventory is the scheduled pull: it asks the edge with key fp for its inventory and
// stores it.
func (g *Gateway) pullInventory(ctx context.Context, fp string, refresh bool) (protocol.DeviceInfo, error) {
	return g.pull(ctx, g.handleOf(fp, ""), "", refresh)
}

// pull asks h's edge for its inventory (request id rid, or a new one) and stores it.
func (g *Gateway) pull(ctx context.Context, h *handle, rid string, refresh bool) (protocol.DeviceInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, inventoryPullTimeout)
	defer cancel()
	var d protocol.DeviceInfo
	payload, err := g.call(ctx, h, rpc{id: rid, method: protocol.MethodDeviceInfo, params: protocol.DeviceInfoParams{Refresh: refresh}})
	if err != nil {
		return d, err
	}
	if err := protocol.DecodeResponse(payload, &d); err != nil {
		return d, err
	}
	d.Normalize()
	d.Labels = map[string]string{} // never stored: bound labels are read at answer time
	if err := g.inv.put(h.fp, &d, func(fp string) bool { return g.reg.get(fp) != nil }); err != nil {
		g.log.Warn("inventory not stored", "fingerprint", h.fp, "err", err)
	}
	return d, nil
}

// Inventories lists the edges (as Edges does) with their inventory summaries.
func (g *Gateway) Inventories(connectedOnly bool) []EdgeInventory {
	edges := g.Edges(connectedOnly)
	out := make([]EdgeInventory, len(edges))
	for i, st := range edges {
		if st.Kind == KindAgentless {
			out[i] = EdgeInventory{Status: st, Summary: g.agentlessSummary(st.Fingerprint)}
			continue
		}
		out[i] = EdgeInventory{Status: st, Summary: g.inv.summary(st.Fingerprint)}
	}
	return out
}

// WatchEdges returns a channel that receives a value (coalesced) whenever an edge connects or
// disconnects, or the set of authorized keys changes, until ctx ends.
func (g *Gateway) WatchEdges(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	g.watchMu.Lock()
	g.watchers[ch] = struct{}{}
	g.watchMu.Unlock()
	context.AfterFunc(ctx, func() {
		g.watchMu.Lock()
		delete(g.watchers, ch)
		g.watchMu.Unlock()
	})
	return ch
}

// notifyEdges wakes every WatchEdges channel without blocking.
func (g *Gateway) notifyEdges() {
	g.watchMu.Lock()
	defer g.watchMu.Unlock()
	for ch := range g.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
