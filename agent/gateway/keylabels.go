package gateway

// Relabelling a key in place: `mcp-ssh-gateway keys label`. The key's line in
// AUTHORIZED_KEYS_FILE is rewritten with its other options, key and comment kept, in one
// atomic read-modify-write (keyStore.modify), which a running gateway picks up at once.

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
)

// KeyLabelsSet is the outcome of relabelling a key.
type KeyLabelsSet struct {
	Fingerprint string
	Name        string
	Old, New    map[string]string
}

// SetKeyLabels rewrites the labels bound to the key named by ref (bound name or SHA256
// fingerprint) in the authorized_keys file at path (admin CLI: keys label). With replace the
// key's labels become labels; without, labels are merged into them and a label given with
// an empty value is removed.
func SetKeyLabels(path, ref string, labels map[string]string, replace bool, log *slog.Logger) (KeyLabelsSet, error) {
	s, err := fileStore(path, log)
	if err != nil {
		return KeyLabelsSet{}, err
	}
	return s.setLabels(ref, labels, replace)
}

// setLabels is SetKeyLabels on the store.
func (s *keyStore) setLabels(ref string, labels map[string]string, replace bool) (KeyLabelsSet, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" || len(ref) > 128 {
		return KeyLabelsSet{}, fmt.Errorf("give an edge name or a SHA256:… fingerprint (at most 128 characters)")
	}
	var res KeyLabelsSet
	err := s.modify(func(data []byte, set *keySet) ([]byte, error) {
		fp, k := set.keyByRef(ref)
		if k == nil {
			return nil, fmt.Errorf("no authorized key has the name or fingerprint %q: see `mcp-ssh-gateway keys list`", trunc(ref, 70))
		}
		next := map[string]string{}
		if !replace {
			next = maps.Clone(k.labels)
		}
		for lk, lv := range labels {
			if lv == "" {
				delete(next, lk)
			} else {
				next[lk] = lv
			}
		}
		if err := validateBoundLabels(next); err != nil {
			return nil, err
		}
		res = KeyLabelsSet{Fingerprint: fp, Name: k.name, Old: maps.Clone(k.labels), New: next}
		if maps.Equal(next, k.labels) {
			return nil, nil
		}
		return relabelLines(data, fp, next), nil
	})
	return res, err
}

// relabelLines rewrites every line of the key with fingerprint fp so that its labels option
// is labels (none when empty), keeping its other options, the key and the comment; other
// lines stay byte for byte.
func relabelLines(data []byte, fp string, labels map[string]string) []byte {
	var out bytes.Buffer
	for line := range bytes.Lines(data) {
		pub, comment, opts, _, err := ssh.ParseAuthorizedKey(line)
		if err != nil || keys.Fingerprint(pub) != fp {
			out.Write(line)
			continue
		}
		var kept []string
		for _, o := range opts {
			if k, _, ok := strings.Cut(o, "="); ok && strings.EqualFold(strings.TrimSpace(k), "labels") {
				continue
			}
			kept = append(kept, o)
		}
		if l := formatKeyLine(pub, "", labels, ""); len(labels) > 0 {
			opt, _, _ := strings.Cut(l, " ")
			kept = append(kept, opt) // labels="k=v,…", as register writes it
		}
		nl := keys.AuthorizedLine(pub)
		if len(kept) > 0 {
			nl = strings.Join(kept, ",") + " " + nl
		}
		if comment != "" {
			nl += " " + comment
		}
		out.WriteString(nl)
		if bytes.HasSuffix(line, []byte("\n")) {
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}
