package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/bench/scale"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// member is one serving gateway of a test cluster, with the Fleet its tools would use.
type member struct {
	g     *gateway.Gateway
	n     *Node
	fleet *Fleet
	addr  string
}

// startMember runs a listening gateway (host key shared by the cluster) in a cluster node.
func startMember(t testing.TB, s *server.Server, id, hostKeyFile, authorized string) *member {
	t.Helper()
	host, _, err := keys.LoadOrGenerate(hostKeyFile, "test")
	if err != nil {
		t.Fatal(err)
	}
	ak := filepath.Join(t.TempDir(), "authorized_keys")
	if err := os.WriteFile(ak, []byte(authorized), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(gateway.Config{HostKey: host, ID: id, Bind: "127.0.0.1:0", AuthorizedKeysFile: ak,
		StateDir: t.TempDir(), KeepaliveInterval: time.Second, InventoryInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := g.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = g.Serve(ctx) }()
	n, err := Start(ctx, Config{URL: s.ClientURL(), ID: id, Interval: time.Second, Gateway: g,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		cancel()
		<-served
	})
	return &member{g: g, n: n, fleet: &Fleet{Gateway: g, Local: g, Node: n}, addr: addr.String()}
}

// startEdges runs simulated edges (the edge's own tunnel and RPC code) against addr.
func startEdges(t testing.TB, addr, hostKeyFile string, ids []scale.Identity) *scale.Fleet {
	t.Helper()
	host, _, err := keys.LoadOrGenerate(hostKeyFile, "test")
	if err != nil {
		t.Fatal(err)
	}
	f, err := scale.StartFleet(context.Background(), scale.FleetConfig{Gateway: addr,
		HostKey: keys.Fingerprint(host.PublicKey()), KeepaliveInterval: time.Second, BackoffMax: time.Second,
		StateDir: t.TempDir()}, ids)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Stop() })
	return f
}

// heldBy waits until fleet resolves name to an edge connected to gateway id.
func heldBy(t testing.TB, f *Fleet, name, id string) gateway.Edge {
	t.Helper()
	var e gateway.Edge
	eventually(t, 15*time.Second, name+" reachable as connected to "+id, func() bool {
		var err error
		e, err = f.Edge(name)
		if err != nil || !e.Connected() {
			return false
		}
		return gateway.HeldBy(e) == id || (gateway.HeldBy(e) == "" && f.Node.ID() == id)
	})
	return e
}

// pair runs gateways gw-a and gw-b of one cluster on s, with edge pi-00000 connected to gw-a.
func pair(t testing.TB, s *server.Server) (a, b *member) {
	t.Helper()
	hostKey := filepath.Join(t.TempDir(), "host_ed25519")
	ids, err := scale.NewIdentities(1, "pi")
	if err != nil {
		t.Fatal(err)
	}
	a = startMember(t, s, "gw-a", hostKey, string(scale.AuthorizedKeys(ids)))
	b = startMember(t, s, "gw-b", hostKey, "")
	startEdges(t, a.addr, hostKey, ids)
	return a, b
}

// TestRelayedCalls runs every kind of call through a gateway that does not hold the edge and
// checks it against the same call through the holder.
func TestRelayedCalls(t *testing.T) {
	s := startNATS(t)
	a, b := pair(t, s)
	local := heldBy(t, a.fleet, "pi-00000", "gw-a")
	remote := heldBy(t, b.fleet, "pi-00000", "gw-a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("exec with stdin and large output", func(t *testing.T) {
		in := make([]byte, 6<<20)
		rand.Read(in)
		p := protocol.ExecParams{Argv: []string{"cat"}, TimeoutMs: 30000, MaxOutputBytes: 16 << 20}
		var got bytes.Buffer
		res, err := remote.Exec(ctx, "rid-exec", p, bytes.NewReader(in), func(ft protocol.FrameType, b []byte) {
			if ft == protocol.FrameStdout {
				got.Write(b)
			}
		})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("exec = %+v, %v", res, err)
		}
		if !bytes.Equal(got.Bytes(), in) {
			t.Fatalf("stdout %d bytes, want the %d bytes of stdin", got.Len(), len(in))
		}
	})
	t.Run("exit code and stderr", func(t *testing.T) {
		p := protocol.ExecParams{Command: "echo oops >&2; exit 3", TimeoutMs: 10000, MaxOutputBytes: 1 << 20}
		for _, e := range []gateway.Edge{local, remote} {
			var errOut strings.Builder
			res, err := e.Exec(ctx, "rid-exit", p, nil, func(ft protocol.FrameType, b []byte) {
				if ft == protocol.FrameStderr {
					errOut.Write(b)
				}
			})
			if err != nil || res.ExitCode != 3 || errOut.String() != "oops\n" {
				t.Fatalf("exec = %+v, stderr %q, %v", res, errOut.String(), err)
			}
		}
	})
	// A cancel before the holder's first message (it tells the caller its inbox only after
	// openedAfter, or with the answer) waits for that message, then reaches the edge too.
	for _, after := range []time.Duration{openedAfter / 10, 5 * openedAfter} {
		t.Run(fmt.Sprintf("cancel after %v reaches the edge", after), func(t *testing.T) {
			cctx, ccancel := context.WithTimeout(ctx, after)
			defer ccancel()
			start := time.Now()
			res, err := remote.Exec(cctx, "rid-cancel", protocol.ExecParams{Argv: []string{"sleep", "30"}, TimeoutMs: 60000,
				MaxOutputBytes: 1 << 20}, nil, nil)
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("cancelled exec took %v", d)
			}
			if err != nil || !res.Cancelled {
				t.Fatalf("cancelled exec = %+v, %v; want the edge's result, cancelled", res, err)
			}
		})
	}
	t.Run("upload and download", func(t *testing.T) {
		content := make([]byte, 12<<20)
		rand.Read(content)
		sum := sha256.Sum256(content)
		path := filepath.Join(t.TempDir(), "up.bin")
		ur, err := remote.Upload(ctx, "rid-up", protocol.UploadParams{Path: path, Size: int64(len(content)), Mode: 0o600},
			bytes.NewReader(content))
		if err != nil || ur.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("upload = %+v, %v", ur, err)
		}
		var got bytes.Buffer
		dr, err := remote.Download(ctx, "rid-down", protocol.DownloadParams{Path: path, MaxBytes: 64 << 20}, &got)
		if err != nil || !bytes.Equal(got.Bytes(), content) || dr.SHA256 != ur.SHA256 {
			t.Fatalf("download = %+v (%d bytes), %v", dr, got.Len(), err)
		}
	})
	t.Run("an edge error keeps its code", func(t *testing.T) {
		var got bytes.Buffer
		_, err := remote.Download(ctx, "rid-missing", protocol.DownloadParams{Path: "/nonexistent/x", MaxBytes: 1024}, &got)
		var pe *protocol.Error
		if !errors.As(err, &pe) || pe.Code == "" {
			t.Fatalf("download of a missing file = %v, want a *protocol.Error", err)
		}
	})
	t.Run("device info", func(t *testing.T) {
		l, err := local.DeviceInfo(ctx, "rid-info-l", false)
		if err != nil {
			t.Fatal(err)
		}
		r, err := remote.DeviceInfo(ctx, "rid-info-r", false)
		if err != nil || r.Edge != "pi-00000" || r.Hostname != l.Hostname {
			t.Fatalf("device info = %q %q, %v; local %q", r.Edge, r.Hostname, err, l.Hostname)
		}
	})
	t.Run("jobs answer as through the holder", func(t *testing.T) {
		// A simulated edge has no supervisor binary: both ways refuse the same way (the e2e
		// suite starts real jobs through a non-holder).
		p := protocol.JobStartParams{Exec: protocol.ExecParams{Argv: []string{"echo", "hi"}, TimeoutMs: 10000, MaxOutputBytes: 1 << 20}}
		_, lerr := local.JobStart(ctx, "rid-job-l", p)
		_, rerr := remote.JobStart(ctx, "rid-job-r", p)
		var lpe, rpe *protocol.Error
		if !errors.As(lerr, &lpe) || !errors.As(rerr, &rpe) || *lpe != *rpe {
			t.Fatalf("job_start through the holder: %v; relayed: %v", lerr, rerr)
		}
		ll, lerr := local.JobList(ctx, "rid-list-l")
		rl, rerr := remote.JobList(ctx, "rid-list-r")
		if lerr != nil || rerr != nil || len(ll.Jobs) != len(rl.Jobs) {
			t.Fatalf("job_list through the holder: %+v, %v; relayed: %+v, %v", ll, lerr, rl, rerr)
		}
		_, lerr = local.JobGet(ctx, "rid-get-l", protocol.JobGetParams{ID: "j-000000000000", MaxBytes: 10})
		_, rerr = remote.JobGet(ctx, "rid-get-r", protocol.JobGetParams{ID: "j-000000000000", MaxBytes: 10})
		if (lerr == nil) != (rerr == nil) || lerr != nil && lerr.Error() != rerr.Error() {
			t.Fatalf("job_get of an unknown job through the holder: %v; relayed: %v", lerr, rerr)
		}
	})
	t.Run("listing and inventories", func(t *testing.T) {
		var st gateway.EdgeStatus
		for _, e := range b.fleet.Edges(true) {
			if e.Name == "pi-00000" {
				st = e
			}
		}
		if !st.Connected || st.Gateway != "gw-a" {
			t.Fatalf("gw-b lists %+v, want pi-00000 connected to gw-a", st)
		}
		invs := b.fleet.Inventories(true)
		if len(invs) != 1 || invs[0].Status.Gateway != "gw-a" || invs[0].Summary == nil {
			t.Fatalf("gw-b inventories = %+v", invs)
		}
		info := b.fleet.Info()
		if info.Cluster == nil || !info.Cluster.Connected {
			t.Fatalf("cluster info = %+v", info.Cluster)
		}
	})
}

// TestReconnectElsewhereEvicts: the edge's key connecting to another gateway closes its old
// session; both gateways then route to the new one. Names are unique across gateways.
func TestReconnectElsewhereEvicts(t *testing.T) {
	s := startNATS(t)
	hostKey := filepath.Join(t.TempDir(), "host_ed25519")
	ids, err := scale.NewIdentities(1, "pi")
	if err != nil {
		t.Fatal(err)
	}
	a := startMember(t, s, "gw-a", hostKey, string(scale.AuthorizedKeys(ids)))
	b := startMember(t, s, "gw-b", hostKey, "")
	fp := keys.Fingerprint(ids[0].Signer.PublicKey())
	first := startEdges(t, a.addr, hostKey, ids)
	heldBy(t, b.fleet, "pi-00000", "gw-a")
	// The same key connects to gw-b while its session on gw-a is still up (as after a network
	// change the old one is still open): gw-a closes it.
	startEdges(t, b.addr, hostKey, ids)
	eventually(t, 10*time.Second, "gw-a closes the session gw-b took over", func() bool {
		_, ok := a.g.ConnectedSince(fp)
		return !ok
	})
	_ = first.Stop() // the device moved: the old one does not come back
	heldBy(t, a.fleet, "pi-00000", "gw-b")
	heldBy(t, b.fleet, "pi-00000", "gw-b")
	for _, m := range []*member{a, b} {
		n := 0
		for _, e := range m.fleet.Edges(true) {
			if e.Fingerprint == fp {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s lists the edge %d times, want once", m.n.ID(), n)
		}
	}

	// Two different unbound keys asking for one name on two gateways get two names.
	others, err := scale.NewIdentities(2, "cam")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range others {
		if _, err := a.g.RegisterKey(keys.AuthorizedLine(id.Signer.PublicKey()), "", nil); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, "keys shared", func() bool { return len(b.g.KeyLines()) == 3 })
	same := []scale.Identity{others[0], others[1]}
	same[1].Name = same[0].Name
	startEdges(t, a.addr, hostKey, same[:1])
	eventually(t, 10*time.Second, "cam on gw-a routed", func() bool { _, _, ok := b.n.routeOf(same[0].Name); return ok })
	startEdges(t, b.addr, hostKey, same[1:])
	var names []string
	eventually(t, 10*time.Second, "both cameras listed on both gateways", func() bool {
		names = names[:0]
		for _, e := range a.fleet.Edges(true) {
			if strings.HasPrefix(e.Name, "cam-00000") {
				names = append(names, e.Name)
			}
		}
		return len(names) == 2
	})
	if names[0] == names[1] {
		t.Fatalf("two keys share the name %q across gateways", names[0])
	}
}

// TestNATSOutage: with NATS gone, local calls go on and a relayed call fails at once with the
// holder named; once NATS is back (same port, same store), relayed calls work again.
func TestNATSOutage(t *testing.T) {
	dir := t.TempDir()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	a, b := pair(t, s)
	remote := heldBy(t, b.fleet, "pi-00000", "gw-a")
	local := heldBy(t, a.fleet, "pi-00000", "gw-a")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := protocol.ExecParams{Argv: []string{"true"}, TimeoutMs: 10000, MaxOutputBytes: 1024}

	port := s.Addr().(*net.TCPAddr).Port
	s.Shutdown()
	s.WaitForShutdown()
	eventually(t, 5*time.Second, "gw-b notices NATS is gone", func() bool { return !b.fleet.Info().Cluster.Connected })
	start := time.Now()
	_, err = remote.Exec(ctx, "rid-out", p, nil, nil)
	var ue *gateway.UnreachableError
	if !errors.As(err, &ue) || ue.Gateway != "gw-a" || time.Since(start) > time.Second {
		t.Fatalf("relayed exec without NATS = %v after %v, want an UnreachableError naming gw-a at once", err, time.Since(start))
	}
	if _, err := local.Exec(ctx, "rid-local", p, nil, nil); err != nil {
		t.Fatalf("local exec without NATS: %v", err)
	}

	opts.Port = port
	s, err = server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready after restart")
	}
	eventually(t, 15*time.Second, "relayed calls work again after NATS is back", func() bool {
		e, err := b.fleet.Edge("pi-00000")
		if err != nil {
			return false
		}
		_, err = e.Exec(ctx, "rid-back", p, nil, nil)
		return err == nil
	})
}

// emptyPair runs gateways gw-a and gw-b of one cluster with no keys, and returns their host key.
func emptyPair(t *testing.T) (a, b *member, host ssh.Signer) {
	t.Helper()
	s := startNATS(t)
	hostKey := filepath.Join(t.TempDir(), "host_ed25519")
	a = startMember(t, s, "gw-a", hostKey, "")
	b = startMember(t, s, "gw-b", hostKey, "")
	host, _, err := keys.LoadOrGenerate(hostKey, "test")
	if err != nil {
		t.Fatal(err)
	}
	return a, b, host
}

// TestEnrollThroughAnyGateway: an enrolment created on one gateway works through another,
// once across the cluster.
func TestEnrollThroughAnyGateway(t *testing.T) {
	a, b, host := emptyPair(t)
	a.g.SetPublicAddr(a.addr)
	secret := func(name string) string {
		t.Helper()
		eventually(t, 10*time.Second, "cluster buckets ready", func() bool { return a.n.enrollBucket() != nil })
		en, err := a.g.CreateEnrollment(name, map[string]string{"role": "cam"}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		pe, err := protocol.ParseEnrollment(en.String)
		if err != nil {
			t.Fatal(err)
		}
		return pe.Secret
	}
	enrol := func(addr, secret string) (string, error) {
		k, _, err := keys.LoadOrGenerate(filepath.Join(t.TempDir(), "k"), "edge")
		if err != nil {
			t.Fatal(err)
		}
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		answer := ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
			return []string{secret}, nil
		})
		c, _, _, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{User: "edge", HostKeyCallback: ssh.FixedHostKey(host.PublicKey()),
			Auth: []ssh.AuthMethod{ssh.PublicKeys(k), answer}})
		if err == nil {
			c.Close()
		}
		return keys.Fingerprint(k.PublicKey()), err
	}
	first := secret("cam-1")
	fp, err := enrol(b.addr, first)
	if err != nil {
		t.Fatalf("enrolment created on gw-a, used through gw-b: %v", err)
	}
	if !strings.Contains(b.g.KeyLines()[fp], `name="cam-1"`) {
		t.Fatalf("gw-b bound %q", b.g.KeyLines()[fp])
	}
	eventually(t, 10*time.Second, "enrolled key reaches gw-a", func() bool { return a.g.KeyLines()[fp] != "" })
	if _, err := enrol(a.addr, first); err == nil {
		t.Fatal("a secret used through gw-b worked again through gw-a")
	}
	second := secret("cam-2")
	if _, err := enrol(a.addr, second); err != nil {
		t.Fatalf("enrolment used through the gateway that made it: %v", err)
	}
	if _, err := enrol(b.addr, second); err == nil {
		t.Fatal("a secret used through gw-a worked again through gw-b")
	}
}

// TestApprovePendingOnAnotherGateway: a key that knocked on one gateway is listed and
// approved through another, and is then authorized on both.
func TestApprovePendingOnAnotherGateway(t *testing.T) {
	a, b, host := emptyPair(t)
	k, _, err := keys.LoadOrGenerate(filepath.Join(t.TempDir(), "k"), "edge")
	if err != nil {
		t.Fatal(err)
	}
	fp := keys.Fingerprint(k.PublicKey())
	nc, err := net.DialTimeout("tcp", b.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, _, _, err := ssh.NewClientConn(nc, b.addr, &ssh.ClientConfig{User: "newcam",
		HostKeyCallback: ssh.FixedHostKey(host.PublicKey()), Auth: []ssh.AuthMethod{ssh.PublicKeys(k)}}); err == nil {
		t.Fatal("an unknown key was admitted")
	}
	nc.Close()
	eventually(t, 10*time.Second, "gw-a lists the key pending on gw-b", func() bool {
		list, err := a.fleet.PendingEdges()
		return err == nil && slices.ContainsFunc(list, func(p gateway.PendingEdge) bool { return p.Fingerprint == fp })
	})
	res, err := a.fleet.ApproveEdge(fp, "", map[string]string{"site": "lab"})
	if err != nil || res.Name != "newcam" || res.Fingerprint != fp {
		t.Fatalf("approve through gw-a = %+v, %v", res, err)
	}
	eventually(t, 10*time.Second, "approved key authorized on gw-b, no longer pending", func() bool {
		list, err := b.fleet.PendingEdges()
		return strings.Contains(b.g.KeyLines()[fp], `name="newcam"`) && err == nil && len(list) == 0
	})
}
