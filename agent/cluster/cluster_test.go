package cluster

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/gateway"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startNATS runs an in-process NATS server with JetStream on 127.0.0.1.
func startNATS(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func connect(t testing.TB, s *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// openLink is a link on a connection of its own.
func openLink(t testing.TB, s *server.Server, peer string) *link {
	t.Helper()
	ix, err := newInboxes(connect(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return ix.open(peer)
}

// TestLinkBulkIsFlowControlled sends 64 MiB over a link: it arrives whole and in order, and
// the sender never has more than the window unacknowledged.
func TestLinkBulkIsFlowControlled(t *testing.T) {
	s := startNATS(t)
	a := openLink(t, s, "")
	defer a.close()
	b := openLink(t, s, a.inbox)
	defer b.close()
	a.setPeer(b.inbox)
	b.setPeer(a.inbox)

	payload := make([]byte, 64<<20)
	if _, err := rand.Read(payload); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	maxInFlight := int64(0)
	sent := make(chan error, 1)
	go func() {
		for off := 0; off < len(payload); off += 1 << 20 {
			if err := a.sendBulk(ctx, kindData, nil, payload[off:off+1<<20]); err != nil {
				sent <- err
				return
			}
			a.mu.Lock()
			maxInFlight = max(maxInFlight, a.sent-a.acked)
			a.mu.Unlock()
		}
		sent <- a.publish(kindEOF, nil, nil)
	}()
	h := sha256.New()
	n, err := io.Copy(h, &bulkReader{ctx: ctx, l: b, n: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(payload)
	if n != int64(len(payload)) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("received %d bytes, sha256 %x; want %d, %x", n, h.Sum(nil), len(payload), want)
	}
	if maxInFlight > linkWindow {
		t.Fatalf("%d bytes unacknowledged at once, window %d", maxInFlight, linkWindow)
	}
}

// TestLinkLostWhenPeerIsSilent: a peer that stops answering (a gateway killed mid-call) ends
// the link after linkSilence instead of leaving the call waiting.
func TestLinkLostWhenPeerIsSilent(t *testing.T) {
	s := startNATS(t)
	l := openLink(t, s, "")
	defer l.close()
	l.setPeer("mcpgw.nobody")
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*linkSilence)
	defer cancel()
	if _, err := l.next(ctx); err != errLinkLost {
		t.Fatalf("next = %v, want errLinkLost", err)
	}
	if d := time.Since(start); d < linkSilence || d > linkSilence+2*pingEvery {
		t.Fatalf("link lost after %v, want about %v", d, linkSilence)
	}
}

// TestKeyKeys checks the fingerprint ↔ KV key mapping both ways.
func TestKVKeys(t *testing.T) {
	for _, fp := range []string{"SHA256:abc+/def=", "SHA256:" + strings.Repeat("A+/", 10)} {
		k := kvKey(fp)
		if strings.ContainsAny(k, ":+/") {
			t.Errorf("kvKey(%q) = %q has characters a KV key may not", fp, k)
		}
		if back := fpOfKey(k); back != fp {
			t.Errorf("fpOfKey(kvKey(%q)) = %q", fp, back)
		}
	}
}

// newGateway is a gateway (not listening) with its own authorized_keys, in a cluster node.
func newGateway(t *testing.T, s *server.Server, id string) (*gateway.Gateway, *Node) {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	host, _ := ssh.NewSignerFromKey(priv)
	g, err := gateway.New(gateway.Config{HostKey: host, ID: id, Bind: "127.0.0.1:0",
		AuthorizedKeysFile: filepath.Join(t.TempDir(), "authorized_keys"), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := Start(ctx, Config{URL: s.ClientURL(), ID: id, Interval: time.Second, Gateway: g,
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		n.Close()
		g.Close()
	})
	return g, n
}

func edgeKeyLine(t *testing.T) (line, fp string) {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp))) + " test", keys.Fingerprint(sp)
}

// eventually polls cond for up to d.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestKeysSharedAcrossGateways: a key registered on one gateway is authorized on the other,
// with its bound name and labels; revoked on the other, it is gone from both; a gateway that
// joins later learns both.
func TestKeysSharedAcrossGateways(t *testing.T) {
	s := startNATS(t)
	a, _ := newGateway(t, s, "gw-a")
	b, _ := newGateway(t, s, "gw-b")
	line, fp := edgeKeyLine(t)
	if _, err := a.RegisterKey(line, "pi-1", map[string]string{"site": "lab"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "key registered on gw-a reaches gw-b", func() bool {
		return strings.Contains(b.KeyLines()[fp], `name="pi-1"`) && strings.Contains(b.KeyLines()[fp], "site=lab")
	})
	other, otherFP := edgeKeyLine(t)
	if _, err := b.RegisterKey(other, "pi-2", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RevokeKey("pi-1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "key revoked on gw-b is revoked on gw-a", func() bool {
		_, has := a.KeyLines()[fp]
		_, hasOther := a.KeyLines()[otherFP]
		return !has && hasOther
	})
	c, _ := newGateway(t, s, "gw-c")
	eventually(t, 10*time.Second, "a gateway that joins later has the cluster's keys", func() bool {
		_, has := c.KeyLines()[fp]
		_, hasOther := c.KeyLines()[otherFP]
		return !has && hasOther
	})
}
