package gateway

// This file is what a cluster of gateways (package cluster) needs of one gateway: who else
// holds a name, closing a session another gateway took over, and the authorized keys as lines
// to share. The gateway knows nothing of NATS; without a cluster none of this is used.

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// NameHolder tells the fingerprint of the edge that holds a name on another gateway of the
// cluster, or "" when none does. It is asked while the registry is locked: it must answer
// from memory, without waiting.
type NameHolder func(name string) string

// NameClaim claims name for the key fp across the cluster before an edge that asks for it is
// named (it may wait briefly, but not while a lock is held). A claim that loses is reported
// by the NameHolder afterwards, so that the edge gets its fallback name.
type NameClaim func(name, fp string)

// SetNameHolder makes names unique across the cluster: an edge whose key has no bound name
// does not get a name that an edge of another gateway holds (it gets its fallback name).
// claim (may be nil) is called first, outside the registry's lock.
func (g *Gateway) SetNameHolder(f NameHolder, claim NameClaim) {
	g.nameHolder.Store(&f)
	if claim != nil {
		g.nameClaim.Store(&claim)
	}
}

// claimName claims the name an edge asks for, in a cluster, before the registry names it.
func (g *Gateway) claimName(requested, fp string) {
	if f := g.nameClaim.Load(); f != nil {
		if name := strings.ToLower(strings.TrimSpace(requested)); protocol.ValidName(name) {
			(*f)(name, fp)
		}
	}
}

// nameTaken is the boundFunc the registry names edges with: the key bound to name here, else
// the edge that holds it on another gateway.
func (g *Gateway) nameTaken(name string) string {
	if fp := g.keys.boundTo(name); fp != "" {
		return fp
	}
	if f := g.nameHolder.Load(); f != nil {
		return (*f)(name)
	}
	return ""
}

// Evict closes this gateway's session of the key fp because its edge connected to another
// gateway (given for the log): the newer session wins, as on one gateway. It reports whether
// there was a session to close.
func (g *Gateway) Evict(fp, by string) bool {
	e := g.reg.get(fp)
	if e == nil || e.fp != fp {
		return false
	}
	g.log.Info("edge connected to another gateway: closing its session here", "edge", g.reg.nameOf(e),
		"fingerprint", fp, "gateway", by)
	_, _, _ = e.conn.SendRequest(protocol.ReplacedRequest, false, nil)
	e.close()
	return true
}

// KeyLines returns every authorized key's line (options, key and comment, as in the file),
// by fingerprint: what a cluster shares with the other gateways.
func (g *Gateway) KeyLines() map[string]string {
	set := g.keys.snapshot()
	out := make(map[string]string, len(set.byFP))
	for fp, k := range set.byFP {
		out[fp] = k.line
	}
	return out
}

// KeyChange is a key change made on another gateway: Line is the key's authorized_keys line,
// or "" when the key was revoked.
type KeyChange struct {
	Fingerprint string
	Line        string
}

// ApplyKeys writes key changes made on other gateways into authorized_keys, in one rewrite
// whatever their number: a line replaces the line of the same key or is appended, an empty
// one removes the key (whose session here is then closed, as for a revocation made here).
// Changes already in force cost nothing. It returns the changes it refused, with why: a line
// that is not one usable key line for its fingerprint, or whose name is bound to another key
// here (the operator must resolve that).
func (g *Gateway) ApplyKeys(changes []KeyChange) (refused map[string]error, err error) {
	refused = map[string]error{}
	put := map[string]*authKey{} // fingerprint → the key as its new line binds it
	drop := map[string]bool{}
	set := g.keys.snapshot()
	for _, c := range changes {
		line := strings.TrimSpace(c.Line)
		if line == "" {
			delete(put, c.Fingerprint)
			if set.byFP[c.Fingerprint] != nil {
				drop[c.Fingerprint] = true
			}
			continue
		}
		delete(drop, c.Fingerprint)
		delete(put, c.Fingerprint) // the last change of a key is the one that counts
		k, err := parseKeyLine(line)
		switch {
		case err != nil:
			refused[c.Fingerprint] = err
		case k.fp != c.Fingerprint:
			refused[c.Fingerprint] = fmt.Errorf("shared key line is for key %s", k.fp)
		case set.byFP[k.fp] != nil && set.byFP[k.fp].line == line: // in force already
		default:
			put[k.fp] = k
		}
	}
	if len(put) == 0 && len(drop) == 0 {
		return refused, nil
	}
	err = g.keys.modify(func(data []byte, set *keySet) ([]byte, error) {
		owner := map[string]string{} // name → fingerprint once this batch is applied
		for name, fp := range set.byName {
			if !drop[fp] && put[fp] == nil {
				owner[name] = fp
			}
		}
		for fp, k := range put {
			if other := owner[k.name]; k.name != "" && other != "" && other != fp {
				refused[fp] = fmt.Errorf("name %q of key %s is bound to key %s here", k.name, fp, other)
				delete(put, fp)
				if old := set.byFP[fp]; old != nil && old.name != "" {
					owner[old.name] = fp // its old line stays
				}
				continue
			}
			if k.name != "" {
				owner[k.name] = fp
			}
		}
		var b bytes.Buffer
		written := map[string]bool{}
		for line := range bytes.Lines(data) {
			pub, _, _, _, err := ssh.ParseAuthorizedKey(line)
			if err == nil {
				fp := keys.Fingerprint(pub)
				if drop[fp] {
					continue
				}
				if k := put[fp]; k != nil {
					if !written[fp] {
						b.WriteString(k.line + "\n")
						written[fp] = true
					}
					continue
				}
			}
			b.Write(line)
			if len(line) > 0 && line[len(line)-1] != '\n' {
				b.WriteByte('\n')
			}
		}
		for fp, k := range put {
			if !written[fp] {
				b.WriteString(k.line + "\n")
			}
		}
		return append([]byte{}, b.Bytes()...), nil
	})
	return refused, err
}

// parseKeyLine parses one authorized_keys line with its options, as the file would hold it.
func parseKeyLine(line string) (*authKey, error) {
	if len(line) > maxKeyLine || strings.ContainsAny(line, "\r\n") {
		return nil, fmt.Errorf("shared key line is not one line of at most %d bytes", maxKeyLine)
	}
	one, err := parseAuthKeys([]byte(line), nil)
	if err != nil || len(one.byFP) != 1 || len(one.warnings) > 0 {
		return nil, errors.New("shared key line is not one usable authorized_keys line")
	}
	for _, k := range one.byFP {
		return k, nil
	}
	return nil, errors.New("unreachable")
}

// ConnectedCount is the number of companion edges connected to this gateway (what a cluster
// heartbeat announces every few seconds: counted, not listed).
func (g *Gateway) ConnectedCount() int {
	g.reg.mu.Lock()
	defer g.reg.mu.Unlock()
	return len(g.reg.byFP)
}

// ConnectedSince returns when the session of key fp connected to this gateway, if it is
// connected (companion edges only).
func (g *Gateway) ConnectedSince(fp string) (time.Time, bool) {
	if e := g.reg.get(fp); e != nil && e.fp == fp {
		return e.since, true
	}
	return time.Time{}, false
}
