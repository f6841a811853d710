package forward

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// testSSHD is the test's OpenSSH server (localfleet.SSHD), with the fields the tests read.
type testSSHD struct {
	*localfleet.SSHD
	t       testing.TB
	addr    string
	user    string
	hostKey ssh.PublicKey
}

// newSigner makes an ed25519 key: the signer and its OpenSSH PEM private key file.
func newSigner(t testing.TB) (ssh.Signer, []byte) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	return s, pem.EncodeToMemory(blk)
}

// startSSHD starts sshd authorizing client; it is stopped at cleanup. Without
// /usr/sbin/sshd the test is skipped (failed when CI=true).
func startSSHD(t testing.TB, client ssh.PublicKey) *testSSHD {
	t.Helper()
	d, err := localfleet.StartSSHD(t.TempDir(), client)
	if errors.Is(err, localfleet.ErrNoSSHD) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return &testSSHD{SSHD: d, t: t, addr: d.Addr, user: d.User, hostKey: d.HostKey}
}

// restart drops every connection and brings the server back.
func (s *testSSHD) restart() {
	s.t.Helper()
	if err := s.Restart(); err != nil {
		s.t.Fatal(err)
	}
}

// processesWith lists the pids whose command line contains all of args (NUL-joined).
func processesWith(args ...string) []int {
	want := strings.Join(args, "\x00")
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if strings.Contains(string(b), want) {
			if st, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil && strings.Contains(string(st), ") Z ") {
				continue // a zombie is not running
			}
			out = append(out, p)
		}
	}
	return out
}

// countingSigner counts every use of the client key: it shows whether authentication was
// ever attempted.
type countingSigner struct {
	ssh.Signer
	uses atomic.Int32
}

func (c *countingSigner) PublicKey() ssh.PublicKey {
	c.uses.Add(1)
	return c.Signer.PublicKey()
}

func (c *countingSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	c.uses.Add(1)
	return c.Signer.Sign(r, data)
}

// testFleet is a Fleet on a file naming the given sshd hosts, running until cleanup.
type testFleet struct {
	*Fleet
	file   string
	events chan Event
}

// fleetEntry is one host line of a test's forward edges file.
func fleetEntry(name string, s *testSSHD, hostKey string, labels string) string {
	if hostKey == "" {
		hostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.hostKey)))
	}
	if labels == "" {
		labels = "{}"
	}
	return fmt.Sprintf("- name: %s\n  address: %s\n  user: %s\n  host_key: %q\n  labels: %s\n", name, s.addr, s.user, hostKey, labels)
}

func newTestFleet(t *testing.T, key ssh.Signer, yaml string, tweak func(*Options)) *testFleet {
	t.Helper()
	file := filepath.Join(t.TempDir(), "forward_edges.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	tf := &testFleet{file: file, events: make(chan Event, 256)}
	opts := Options{ClientKey: key, InventoryInterval: -1, BackoffBase: 50 * time.Millisecond, BackoffMax: 300 * time.Millisecond,
		KeepAlive: time.Second, PipeGrace: 500 * time.Millisecond, PollInterval: 200 * time.Millisecond,
		OnEvent: func(e Event) {
			select {
			case tf.events <- e:
			default:
			}
		}}
	if tweak != nil {
		tweak(&opts)
	}
	f, err := New(file, opts)
	if err != nil {
		t.Fatal(err)
	}
	tf.Fleet = f
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return tf
}

// edge resolves name and waits until it is connected.
func (tf *testFleet) edge(t *testing.T, name string) *Edge {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		e, err := tf.Edge(name)
		if err == nil && e.Connected() {
			return e.(*Edge)
		}
		if time.Now().After(deadline) {
			t.Fatalf("edge %s not connected: %v %+v", name, err, tf.Statuses(false))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fixture is one sshd with a fleet connected to it as edge "dev".
type fixture struct {
	sshd  *testSSHD
	fleet *testFleet
	edge  *Edge
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	key, _ := newSigner(t)
	s := startSSHD(t, key.PublicKey())
	tf := newTestFleet(t, key, fleetEntry("dev", s, "", "{role: test}"), nil)
	return &fixture{sshd: s, fleet: tf, edge: tf.edge(t, "dev")}
}
