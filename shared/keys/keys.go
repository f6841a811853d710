// Package keys loads, generates and describes the SSH keys both binaries use: the gateway's
// host key, an edge's identity key, and the host-key pins an edge trusts.
package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// MaxKeyFile bounds what LoadOrGenerate reads: no SSH private key comes near it.
const MaxKeyFile = 64 << 10

// LoadOrGenerate reads an OpenSSH private key from path. If the file does not exist it
// generates an ed25519 key, writes it with mode 0600 (creating the directory 0700) and
// reports generated=true. A file that exists but cannot be read or parsed is an error: a
// key is never silently replaced.
func LoadOrGenerate(path, comment string) (signer ssh.Signer, generated bool, err error) {
	b, err := readBounded(path)
	if err == nil {
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			return nil, false, fmt.Errorf("parse private key %s: %w", path, err)
		}
		return s, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("read private key %s: %w", path, err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("generate key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, false, fmt.Errorf("encode key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("create key directory: %w", err)
	}
	if err := WriteFileAtomic(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, false, err
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, false, err
	}
	return s, true, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > MaxKeyFile {
		return nil, fmt.Errorf("%s is %d bytes, larger than any key (max %d)", path, st.Size(), MaxKeyFile)
	}
	return os.ReadFile(path)
}

// WriteFileAtomic writes data to a temporary file beside path, syncs it and renames it into
// place, so readers see the old content or the new, never a mix. The directory is synced too.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Fingerprint is the SHA256:… form that `ssh-keygen -l` prints.
func Fingerprint(pub ssh.PublicKey) string { return ssh.FingerprintSHA256(pub) }

// AuthorizedLine is pub in authorized_keys format, without a trailing newline.
func AuthorizedLine(pub ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

// Pins is the set of gateway host keys an edge trusts (EDGE_GATEWAY_HOST_KEY).
type Pins struct {
	fingerprints map[string]bool
}

// ParsePins reads a comma-separated list of `SHA256:…` fingerprints or authorized_keys-format
// public keys. Any one of them matching is enough (key rotation). An empty or malformed
// entry is an error: an edge must never start trusting nothing in particular.
func ParsePins(s string) (*Pins, error) {
	p := &Pins{fingerprints: map[string]bool{}}
	for _, raw := range strings.Split(s, ",") {
		e := strings.TrimSpace(raw)
		if e == "" {
			continue
		}
		if strings.HasPrefix(e, "SHA256:") {
			if len(e) != len("SHA256:")+43 {
				return nil, fmt.Errorf("host key pin %q is not a SHA256 fingerprint (SHA256: and 43 base64 characters)", e)
			}
			p.fingerprints[e] = true
			continue
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(e))
		if err != nil {
			return nil, fmt.Errorf("host key pin %.40q is neither a SHA256:… fingerprint nor a public key: %v", e, err)
		}
		p.fingerprints[Fingerprint(pub)] = true
	}
	if len(p.fingerprints) == 0 {
		return nil, errors.New("no gateway host key pinned: set EDGE_GATEWAY_HOST_KEY to the gateway's SHA256:… fingerprint")
	}
	return p, nil
}

// ErrHostKeyMismatch is returned by the Pins host key callback for an unpinned key.
var ErrHostKeyMismatch = errors.New("gateway host key does not match the pinned key")

// Match reports whether pub is one of the pinned keys.
func (p *Pins) Match(pub ssh.PublicKey) bool { return p.fingerprints[Fingerprint(pub)] }

// HostKeyCallback refuses any host key that is not pinned, before authentication starts.
func (p *Pins) HostKeyCallback() ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if p.Match(key) {
			return nil
		}
		return fmt.Errorf("%w: %s offered %s", ErrHostKeyMismatch, hostname, Fingerprint(key))
	}
}
