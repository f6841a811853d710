package gateway

// This file is the key lifecycle on AUTHORIZED_KEYS_FILE itself: revocation, listing, and the
// file-level entry points the admin CLI uses while a gateway may be running on the same file
// (the running gateway picks every change up through its watcher).

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// KeyRevoked is the outcome of revoking an edge key.
type KeyRevoked struct {
	Fingerprint string
	Name        string
}

// KeyEntry is one authorized key as listed by the admin CLI.
type KeyEntry struct {
	Fingerprint string
	Name        string
	Labels      map[string]string
}

// flockFile takes an exclusive flock on path (created 0600), blocking until it is free.
func flockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// keyByRef finds the key that ref, a bound name (any case) or a SHA256 fingerprint, names.
func (set *keySet) keyByRef(ref string) (fp string, k *authKey) {
	fp = ref
	if set.byFP[fp] == nil {
		fp = set.byName[strings.ToLower(ref)]
	}
	return fp, set.byFP[fp]
}

// revoke removes the key named by ref (bound name or SHA256 fingerprint) from the file,
// keeping every other line byte for byte. An unknown ref is an error.
func (s *keyStore) revoke(ref string) (KeyRevoked, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" || len(ref) > 128 {
		return KeyRevoked{}, fmt.Errorf("give an edge name or a SHA256:… fingerprint (at most 128 characters)")
	}
	var res KeyRevoked
	err := s.modify(func(data []byte, set *keySet) ([]byte, error) {
		fp, k := set.keyByRef(ref)
		if k == nil {
			return nil, fmt.Errorf("no authorized key has the name or fingerprint %q: see get_status or `mcp-ssh-gateway keys list`", trunc(ref, 70))
		}
		res = KeyRevoked{Fingerprint: fp, Name: k.name}
		return removeKeyLines(data, fp), nil
	})
	return res, err
}

// removeKeyLines drops every line whose key has fingerprint fp; other lines stay intact.
func removeKeyLines(data []byte, fp string) []byte {
	var out bytes.Buffer
	for line := range bytes.Lines(data) {
		if pub, _, _, _, err := ssh.ParseAuthorizedKey(line); err == nil && keys.Fingerprint(pub) == fp {
			continue
		}
		out.Write(line)
	}
	if out.Len() == 0 {
		return []byte{} // not nil: nil means "unchanged" to modify
	}
	return out.Bytes()
}

// list returns the authorized keys sorted by name, then fingerprint.
func (s *keyStore) list() []KeyEntry {
	set := s.snapshot()
	out := make([]KeyEntry, 0, len(set.byFP))
	for fp, k := range set.byFP {
		out = append(out, KeyEntry{Fingerprint: fp, Name: k.name, Labels: maps.Clone(k.labels)})
	}
	slices.SortFunc(out, func(a, b KeyEntry) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Fingerprint, b.Fingerprint)
	})
	return out
}

// fileStore opens path as a store with no watcher and no callbacks, for the admin CLI.
func fileStore(path string, log *slog.Logger) (*keyStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return newKeyStore(path, log, nil)
}

// ListKeys lists the keys of an authorized_keys file (admin CLI: keys list).
func ListKeys(path string, log *slog.Logger) ([]KeyEntry, error) {
	s, err := fileStore(path, log)
	if err != nil {
		return nil, err
	}
	return s.list(), nil
}

// AddKey authorizes one public key line in the file, as Gateway.RegisterKey does (admin CLI:
// keys add). A running gateway on the same file admits the key at once.
func AddKey(path, line, name string, labels map[string]string, log *slog.Logger) (KeyAdded, error) {
	s, err := fileStore(path, log)
	if err != nil {
		return KeyAdded{}, err
	}
	return s.register(line, name, labels)
}

// RevokeKey removes a key by name or fingerprint from the file (admin CLI: keys revoke). A
// running gateway on the same file closes that edge's tunnel within seconds.
func RevokeKey(path, ref string, log *slog.Logger) (KeyRevoked, error) {
	s, err := fileStore(path, log)
	if err != nil {
		return KeyRevoked{}, err
	}
	return s.revoke(ref)
}

// RevokeKey removes a key by name or fingerprint and closes its tunnel at once.
func (g *Gateway) RevokeKey(ref string) (KeyRevoked, error) {
	r, err := g.keys.revoke(ref)
	if err != nil {
		return KeyRevoked{}, err
	}
	g.log.Info("edge key revoked", "fingerprint", r.Fingerprint, "name", r.Name)
	return r, nil
}
