package scale

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// WriteIdentities saves ids (name and private key seed, one per line) to path, mode 0600, so
// that another simulator process can run them.
func WriteIdentities(path string, ids []Identity) error {
	var b bytes.Buffer
	for _, id := range ids {
		fmt.Fprintf(&b, "%s %s\n", id.Name, base64.StdEncoding.EncodeToString(id.Key.Seed()))
	}
	return keys.WriteFileAtomic(path, b.Bytes(), 0o600)
}

// ReadIdentities loads what WriteIdentities saved.
func ReadIdentities(path string) ([]Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("identities: %w", err)
	}
	defer f.Close()
	var ids []Identity
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		name, seed64, ok := strings.Cut(sc.Text(), " ")
		seed, err := base64.StdEncoding.DecodeString(seed64)
		if !ok || err != nil || len(seed) != ed25519.SeedSize || !protocol.ValidName(name) {
			return nil, fmt.Errorf("%s line %d: not `name base64-seed`", path, n)
		}
		if len(ids) >= MaxEdges {
			return nil, fmt.Errorf("%s: more than %d identities", path, MaxEdges)
		}
		key := ed25519.NewKeyFromSeed(seed)
		s, err := ssh.NewSignerFromKey(key)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		ids = append(ids, Identity{Name: name, Key: key, Signer: s})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ids, nil
}
