package localfleet

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// AttackKinds is how many kinds of misbehaviour Attacker.Attack cycles through.
const AttackKinds = 4

// attackWait bounds how long one attack round waits for the gateway to drop it: short, so
// that every attacker keeps reconnecting (a yamux frame for an unknown stream, kind 2, is
// drained by the library rather than dropped).
const attackWait = 250 * time.Millisecond

// Attacker is a compromised device: its key is authorized, everything else it does is hostile.
// The hostile-peer test and the benchmark both use it.
type Attacker struct {
	Signer ssh.Signer
	FP     string // SHA256:… of the key
	Victim string // the healthy edge whose name it claims
}

// NewAttackers derives n attacker keys from seed (the same seed gives the same keys, so a
// child process can rebuild the keys its parent authorized) and returns them, claiming the
// name victim, with their authorized_keys lines.
func NewAttackers(seed []byte, n int, victim string) ([]Attacker, string, error) {
	out := make([]Attacker, n)
	var lines strings.Builder
	for i := range out {
		h := sha256.New()
		h.Write(seed)
		binary.Write(h, binary.BigEndian, uint64(i))
		s, err := ssh.NewSignerFromKey(ed25519.NewKeyFromSeed(h.Sum(nil)))
		if err != nil {
			return nil, "", fmt.Errorf("attacker key %d: %w", i, err)
		}
		out[i] = Attacker{Signer: s, FP: keys.Fingerprint(s.PublicKey()), Victim: victim}
		lines.WriteString(keys.AuthorizedLine(s.PublicKey()) + "\n")
	}
	return out, lines.String(), nil
}

// Dial authenticates to the gateway at addr as the user Victim (a name the attacker does not
// own) and serves nothing: requests are discarded and channels refused.
func (a Attacker) Dial(addr string, host ssh.PublicKey) (ssh.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{User: a.Victim, Auth: []ssh.AuthMethod{ssh.PublicKeys(a.Signer)},
		HostKeyCallback: ssh.FixedHostKey(host)})
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	go ssh.DiscardRequests(reqs)
	go func() {
		for ch := range chans {
			ch.Reject(ssh.Prohibited, "no")
		}
	}()
	return c, nil
}

// Attack runs one round of misbehaviour number kind (modulo AttackKinds) against the gateway
// at addr and returns when the gateway dropped it, or after a bounded wait; it reports
// whether it got as far as an authenticated connection:
//
//	0: an oversized hello
//	1: a hello claiming another edge's name and a role=db label, then yamux streams opened
//	   towards the gateway (which only the gateway may open)
//	2: the same lying hello, then garbage and a yamux frame header claiming 4 GiB
//	3: a reconnect flood: the lying hello, and hang up at once
func (a Attacker) Attack(addr string, host ssh.PublicKey, kind int) bool {
	c, err := a.Dial(addr, host)
	if err != nil {
		return false
	}
	defer c.Close()
	a.misbehave(c, kind)
	return true
}

// misbehave is one round of Attack on an authenticated connection.
func (a Attacker) misbehave(c ssh.Conn, kind int) {
	lie, _ := json.Marshal(protocol.Hello{Protocol: protocol.Version, Name: a.Victim, Labels: map[string]string{"role": "db"},
		Version: "evil", OS: "linux", Arch: "amd64", MaxConcurrent: 4096})
	switch kind % AttackKinds {
	case 0:
		big, _ := json.Marshal(protocol.Hello{Protocol: protocol.Version, Name: a.Victim, Version: strings.Repeat("x", 64<<10)})
		if ch, _, err := c.OpenChannel(protocol.ChannelType, big); err == nil {
			ch.Close()
		}
	case 1:
		ch, reqs, err := c.OpenChannel(protocol.ChannelType, lie)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		sess, err := yamux.Server(ch, protocol.YamuxConfig(slog.New(slog.DiscardHandler)))
		if err != nil {
			return
		}
		defer sess.Close()
		for range 20 {
			st, err := sess.OpenStream()
			if err != nil {
				break
			}
			st.Write([]byte("not a request"))
		}
		select {
		case <-sess.CloseChan():
		case <-time.After(attackWait):
		}
	case 2:
		ch, reqs, err := c.OpenChannel(protocol.ChannelType, lie)
		if err != nil {
			return
		}
		go ssh.DiscardRequests(reqs)
		garbage := make([]byte, 64<<10)
		rand.Read(garbage)
		ch.Write([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
		ch.Write(garbage)
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, ch); close(done) }()
		select {
		case <-done:
		case <-time.After(attackWait):
		}
	case 3:
		if ch, _, err := c.OpenChannel(protocol.ChannelType, lie); err == nil {
			ch.Close()
		}
	}
}
