package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// floodAuth is one connection of the unauthenticated audit flood: maxKeys fresh keys offered
// (each first as a public-key query), then a wrong enrolment secret if the gateway asks for
// one.
func floodAuth(t *testing.T, addr string, keysPerConn int) {
	signers := make([]ssh.Signer, keysPerConn)
	for i := range signers {
		signers[i] = newSigner(t)
	}
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(2 * time.Second))
	wrong := func(string, string, []string, []bool) ([]string, error) {
		return []string{"mcpssh-enroll-v1:wrong"}, nil
	}
	cfg := &ssh.ClientConfig{User: "edge", HostKeyCallback: ssh.InsecureIgnoreHostKey(),
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signers...), ssh.KeyboardInteractive(wrong)}}
	if c, _, _, err := ssh.NewClientConn(nc, addr, cfg); err == nil {
		c.Close()
		t.Error("a flood connection authenticated")
	}
}

// TestAuditFloodIsBounded repeats the unauthenticated flood of the audit log and stderr:
// public-key queries with fresh random keys, 127 a connection, then a signature and a wrong
// enrolment secret, from many connections for a bounded while. Before, every key queried was
// an auth_failure line of its own (the de-duplication was keyed on the fingerprint) and every
// wrong secret too: megabytes in seconds. Now an unknown key is judged only once its
// signature verified, and refusals are counted per source: the flood adds a few lines.
func TestAuditFloodIsBounded(t *testing.T) {
	const flood = 3 * time.Second
	const maxAuditBytes = 4 << 10
	tests := []struct {
		name  string
		enrol bool // the gateway keeps state: unknown keys may answer an enrolment secret
		keys  int  // per connection
	}{
		{"queries of made-up keys", false, 127},
		{"wrong enrolment secrets", true, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := startGateway(t, "", func(c *Config) {
				if tc.enrol {
					c.StateDir = t.TempDir()
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), flood)
			defer cancel()
			var wg sync.WaitGroup
			var conns sync.Map
			for w := range 8 {
				wg.Go(func() {
					for i := 0; ctx.Err() == nil; i++ {
						floodAuth(t, f.addr, tc.keys)
						conns.Store([2]int{w, i}, true)
					}
				})
			}
			wg.Wait()
			n := 0
			conns.Range(func(any, any) bool { n++; return true })
			st, err := os.Stat(f.auditPath)
			if err != nil {
				t.Fatal(err)
			}
			warns := strings.Count(f.logs.String(), "level=WARN")
			t.Logf("%d flood connections in %v: audit log %d bytes, %d warnings logged", n, flood, st.Size(), warns)
			if n < 8 {
				t.Fatalf("only %d flood connections: the test did not flood", n)
			}
			if st.Size() > maxAuditBytes {
				t.Fatalf("the flood wrote %d bytes to the audit log, want at most %d", st.Size(), maxAuditBytes)
			}
			if warns > 2*refusalLines+2 {
				t.Fatalf("the flood wrote %d warnings to the log, want at most %d", warns, 2*refusalLines+2)
			}
			if countEvents(t, f, "auth_failure") == 0 {
				t.Fatal("no auth_failure line at all: refusals must still show")
			}
		})
	}
}

// TestRefusalLog: the first refusal of each source an interval is written (no more than
// refusalLines in all); the rest is summed up when the interval ends.
func TestRefusalLog(t *testing.T) {
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8::/64")
	start := time.Unix(1e9, 0)
	type step struct {
		src     netip.Prefix
		at      time.Duration
		write   bool
		summary int // refusals summed up by this step (of the interval before)
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"one line per source an interval", []step{{a, 0, true, 0}, {a, 1, false, 0}, {b, 2, true, 0}, {b, 3, false, 0}, {a, 4, false, 0}}},
		{"a new interval writes the summary first", []step{{a, 0, true, 0}, {a, 1, false, 0}, {a, time.Minute, true, 1}, {a, time.Minute + 1, false, 0}}},
		{"nothing unlogged, no summary", []step{{a, 0, true, 0}, {b, 1, true, 0}, {a, time.Minute, true, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRefusalLog(time.Minute)
			for i, st := range tc.steps {
				write, sum := r.note(st.src, "unknown key", start.Add(st.at))
				if write != st.write || sum.Count != st.summary {
					t.Fatalf("step %d: note = %v, summary of %d; want %v, %d", i, write, sum.Count, st.write, st.summary)
				}
			}
		})
	}
	t.Run("at most refusalLines an interval from many sources", func(t *testing.T) {
		r := newRefusalLog(time.Minute)
		written := 0
		for i := range 10 * maxRefusalSources / 4 {
			src := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
			if w, _ := r.note(src, "unknown key", start); w {
				written++
			}
		}
		sum := r.flush(start.Add(time.Minute), false)
		if written != refusalLines || sum.Count != 10*maxRefusalSources/4-refusalLines || len(sum.Top) > refusalTop {
			t.Fatalf("%d written, summary %+v", written, sum.Count)
		}
	})
}

// TestUnknownThenAuthorizedKey: a client that offers an unknown key before its authorized
// one (the unknown key now gets a partial success) still authenticates with the second,
// with enrolment on and off; the unknown key is audited.
func TestUnknownThenAuthorizedKey(t *testing.T) {
	for _, enrol := range []bool{false, true} {
		t.Run(fmt.Sprintf("enrolment %v", enrol), func(t *testing.T) {
			stranger, known := newSigner(t), newSigner(t)
			f := startGateway(t, authLine(known, ""), func(c *Config) {
				if enrol {
					c.StateDir = t.TempDir()
				}
			})
			nc, err := net.DialTimeout("tcp", f.addr, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			nc.SetDeadline(time.Now().Add(5 * time.Second))
			cfg := &ssh.ClientConfig{User: "edge", HostKeyCallback: ssh.FixedHostKey(f.host.PublicKey()),
				Auth: []ssh.AuthMethod{ssh.PublicKeys(stranger, known)}}
			c, _, reqs, err := ssh.NewClientConn(nc, f.addr, cfg)
			if err != nil {
				t.Fatalf("the authorized key, offered second, was refused: %v", err)
			}
			go ssh.DiscardRequests(reqs)
			// The unknown key is judged once the handshake is over, on the gateway's side.
			waitFor(t, 3*time.Second, "the unknown key audited", func() bool { return countEvents(t, f, "auth_failure") >= 1 })
			c.Close()
			if n := countEvents(t, f, "auth_failure"); n != 1 {
				t.Fatalf("%d auth_failure lines, want 1 for the unknown key", n)
			}
		})
	}
}

// fakeMeta is the ssh.ConnMetadata of a connection from remote.
type fakeMeta struct{ remote net.Addr }

func (m fakeMeta) User() string          { return "edge" }
func (m fakeMeta) SessionID() []byte     { return nil }
func (m fakeMeta) ClientVersion() []byte { return []byte("SSH-2.0-flood") }
func (m fakeMeta) ServerVersion() []byte { return []byte("SSH-2.0-gw") }
func (m fakeMeta) RemoteAddr() net.Addr  { return m.remote }
func (m fakeMeta) LocalAddr() net.Addr   { return m.remote }

// TestKeyQueriesAreNotAudited: x/crypto/ssh calls the PublicKeyCallback for public-key
// queries, which carry no signature; a peer may send 127 of them a connection, each with a
// made-up key. The callback audits none of them; an unknown key is judged only when the
// library reports its verified signature (authLog, with the partial success the callback
// returned for that very key, whatever was queried after it), and refused only when the
// handshake fails.
func TestKeyQueriesAreNotAudited(t *testing.T) {
	for _, enrol := range []bool{false, true} {
		t.Run(fmt.Sprintf("enrolment %v", enrol), func(t *testing.T) {
			f, _ := newIdleGateway(t, func(c *Config) {
				if enrol {
					c.StateDir = t.TempDir()
				}
			})
			nc, _ := pipeFrom(t, "192.0.2.7")
			st := &connAuth{adm: f.g.newAdmission(nc)}
			var signed *ssh.PartialSuccessError
			var signedKey ssh.PublicKey
			for i := range 127 {
				key := newSigner(t).PublicKey()
				_, err := f.g.checkKey(st, key)
				var p *ssh.PartialSuccessError
				if !errors.As(err, &p) {
					t.Fatalf("query %d: %v, want a partial success", i, err)
				}
				if i == 120 { // signed after a few more queries (within the library's cache)
					signed, signedKey = p, key
				}
			}
			if n := countEvents(t, f, "auth_failure"); n != 0 || strings.Contains(f.logs.String(), "unknown key") {
				t.Fatalf("127 key queries wrote %d auth_failure lines (log: %q), want none", n, f.logs.String())
			}
			f.g.authLog(fakeMeta{nc.RemoteAddr()}, st, "publickey", signed)
			// Judged with the handshake: an enrolment in the same connection may still admit it.
			if n := countEvents(t, f, "auth_failure"); n != 0 || strings.Contains(f.logs.String(), "unknown key") {
				t.Fatalf("an unknown key refused before its handshake ended (%d lines, log %q)", n, f.logs.String())
			}
			st.adm.judgeHandshake(errors.New("ssh: no auth passed yet"))
			evs := f.auditLines(t)
			if len(evs) != 1 || evs[0].Event != "auth_failure" || evs[0].Fingerprint != keys.Fingerprint(signedKey) {
				t.Fatalf("after the signature verified: %+v, want one auth_failure naming the signed key", evs)
			}
		})
	}
}

// TestRefusalKindsEachWrittenOnce: the first refusal of each kind from a source is written,
// so a wrong enrolment secret after an unknown key from the same address is on record too.
func TestRefusalKindsEachWrittenOnce(t *testing.T) {
	r := newRefusalLog(time.Minute)
	src := sourcePrefix(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	now := time.Now()
	for i, tc := range []struct {
		kind string
		want bool
	}{
		{"edge refused: unknown key", true},
		{"edge enrolment refused", true},
		{"edge refused: unknown key", false},
		{"edge enrolment refused", false},
	} {
		if got, _ := r.note(src, tc.kind, now); got != tc.want {
			t.Errorf("refusal %d (%s) written one by one = %v, want %v", i, tc.kind, got, tc.want)
		}
	}
}

// TestEnrolledKeyNotRefused: the unknown key that a connection then enrols with a secret is not
// logged or audited as refused (the operator saw "edge refused: unknown key" for every
// successful enrolment); a different unknown key in a successful connection still is.
func TestEnrolledKeyNotRefused(t *testing.T) {
	f, _ := newIdleGateway(t, nil)
	for _, tc := range []struct {
		name          string
		unknown, auth string
		want          int
	}{
		{"enrolled in the same connection", "SHA256:new", "SHA256:new", 0},
		{"another key authenticated", "SHA256:stranger", "SHA256:known", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := countEvents(t, f, "auth_failure")
			nc, _ := pipeFrom(t, "192.0.2.9")
			a := f.g.newAdmission(nc)
			a.authFailure(tc.unknown)
			a.refuseUnknownKey(tc.auth)
			if n := countEvents(t, f, "auth_failure") - before; n != tc.want {
				t.Fatalf("%d auth_failure lines, want %d", n, tc.want)
			}
		})
	}
	if strings.Contains(f.logs.String(), "SHA256:new") {
		t.Errorf("the enrolled key was logged as refused: %s", f.logs.String())
	}
}
