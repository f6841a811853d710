package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/crypto/ssh"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/keys"
	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/configfile"
)

// Bounds and timings of the authorized_keys store.
const (
	maxAuthKeysFile = 16 << 20 // bytes
	maxAuthKeys     = 100_000
	maxKeyLine      = 16 << 10 // one public key line given to RegisterKey
	maxCommentLen   = 256
	reloadDebounce  = 100 * time.Millisecond
	reloadPoll      = 2 * time.Second // stat fallback when inotify misses or is unavailable
)

// authKey is one authorized edge key with what the gateway binds to it.
type authKey struct {
	fp     string
	line   string            // the line as in the file, trimmed (what a cluster shares)
	name   string            // bound name, lower case; "" when none
	labels map[string]string // bound labels; never nil
	// agentless is set for a key marked agentless (a device without the companion that keeps
	// a plain ssh -R tunnel to the gateway): the login the gateway uses through that tunnel.
	agentless *agentlessLogin
}

// keySet is one parsed authorized_keys file. It is never modified once built.
type keySet struct {
	byFP      map[string]*authKey
	byName    map[string]string // bound name → fingerprint
	agentless []string          // fingerprints of the agentless keys, in file order
	warnings  []LineWarning     // what was wrong with the file's lines (bounded)
}

// fileStamp is what the stat fallback compares to notice a change (see configfile.Stamp).
type fileStamp = configfile.Stamp

// keyStore is the in-memory copy of AUTHORIZED_KEYS_FILE, reloaded when the file changes and
// appended to by RegisterKey.
type keyStore struct {
	path     string
	log      *slog.Logger
	onChange func(added, removed []*authKey) // called (outside locks) after every change
	writeMu  sync.Mutex                      // serializes read-modify-write of the file

	mu      sync.RWMutex
	set     *keySet
	stamp   fileStamp
	swapped chan struct{} // closed, and replaced, each time a set is swapped in
}

// newKeyStore loads path; a missing file is an empty set (created on first registration).
// onChange (may be nil) is told which keys appeared and disappeared on every later change,
// whoever made it: this process, the admin CLI or an editor.
func newKeyStore(path string, log *slog.Logger, onChange func(added, removed []*authKey)) (*keyStore, error) {
	s := &keyStore{path: path, log: log, onChange: onChange}
	if _, err := s.reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// lookup returns the key with fingerprint fp, or nil.
func (s *keyStore) lookup(fp string) *authKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.set.byFP[fp]
}

// boundTo returns the fingerprint a name is bound to, or "".
func (s *keyStore) boundTo(name string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.set.byName[name]
}

// snapshot returns the current set (immutable).
func (s *keyStore) snapshot() *keySet {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.set
}

// reload reads the file and swaps the set in, reporting how many keys were removed. On error
// the old set stays.
func (s *keyStore) reload() (removed int, err error) {
	data, stamp, err := readAuthKeys(s.path)
	if err != nil {
		return 0, err
	}
	set, err := parseAuthKeys(data, s.log)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", s.path, err)
	}
	for _, w := range set.warnings {
		s.log.Warn("authorized_keys: line not used as written", "file", s.path, "line", w.Line, "fingerprint", w.Fingerprint, "reason", w.Reason)
	}
	return s.swap(set, stamp), nil
}

// swappedChan is closed once the set in force is replaced (possibly by an identical one).
func (s *keyStore) swappedChan() <-chan struct{} {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.swapped
}

// warnings returns the line warnings of the set in force.
func (s *keyStore) warnings() []LineWarning {
	return slices.Clone(s.snapshot().warnings)
}

// swap installs set and tells onChange which keys it gained and lost.
func (s *keyStore) swap(set *keySet, stamp fileStamp) int {
	var added, removed []*authKey
	s.mu.Lock()
	if s.set != nil {
		for fp, k := range s.set.byFP {
			if set.byFP[fp] == nil {
				removed = append(removed, k)
			}
		}
		for fp, k := range set.byFP {
			if s.set.byFP[fp] == nil {
				added = append(added, k)
			}
		}
	}
	s.set, s.stamp = set, stamp
	if s.swapped != nil {
		close(s.swapped)
	}
	s.swapped = make(chan struct{})
	s.mu.Unlock()
	if len(added)+len(removed) > 0 && s.onChange != nil {
		s.onChange(added, removed)
	}
	return len(removed)
}

func (s *keyStore) changed() bool {
	st := statFile(s.path)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return st != s.stamp
}

// watch reloads the set when the file changes, until ctx is done: inotify on the directory
// (editors and atomic writes replace the file), debounced, plus a cheap stat check every
// reloadPoll.
func (s *keyStore) watch(ctx context.Context) {
	events, errs, closeWatcher := s.watchDir()
	defer closeWatcher()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	defer debounce.Stop()
	poll := time.NewTicker(reloadPoll)
	defer poll.Stop()
	base := filepath.Base(s.path)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
			} else if filepath.Base(ev.Name) == base {
				debounce.Reset(reloadDebounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
			} else {
				s.log.Warn("authorized_keys: watcher error", "err", err)
			}
		case <-debounce.C:
			s.reloadLogged()
		case <-poll.C:
			if s.changed() {
				s.reloadLogged()
			}
		}
	}
}

// watchDir watches the file's directory with inotify. Without a watcher (nil channels, and
// logged) the stat check alone notices changes.
func (s *keyStore) watchDir() (<-chan fsnotify.Event, <-chan error, func()) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Warn("authorized_keys: no file watcher, checking every few seconds", "err", err)
		return nil, nil, func() {}
	}
	if err := w.Add(filepath.Dir(s.path)); err != nil {
		w.Close()
		s.log.Warn("authorized_keys: cannot watch directory, checking every few seconds", "dir", filepath.Dir(s.path), "err", err)
		return nil, nil, func() {}
	}
	return w.Events, w.Errors, func() { w.Close() }
}

// reloadLogged reloads the file and logs the outcome; a failed reload keeps the previous keys.
func (s *keyStore) reloadLogged() {
	removed, err := s.reload()
	if err != nil {
		s.log.Error("authorized_keys: reload failed, keeping the previous keys", "err", err)
		return
	}
	s.log.Info("authorized_keys reloaded", "file", s.path, "keys", len(s.snapshot().byFP), "removed", removed)
}

// register appends one key (see Gateway.RegisterKey for the contract).
func (s *keyStore) register(line, name string, labels map[string]string) (KeyAdded, error) {
	pub, comment, err := parseOneKey(line)
	if err != nil {
		return KeyAdded{}, err
	}
	name = strings.ToLower(strings.TrimSpace(name))
	if name != "" && !protocol.ValidName(name) {
		return KeyAdded{}, fmt.Errorf("name %q is invalid: use 1-63 of a-z 0-9 . _ - starting with a letter or digit", trunc(name, 70))
	}
	if labels == nil {
		labels = map[string]string{}
	}
	if err := validateBoundLabels(labels); err != nil {
		return KeyAdded{}, err
	}
	fp := keys.Fingerprint(pub)
	var res KeyAdded
	err = s.modify(func(data []byte, set *keySet) ([]byte, error) {
		if k := set.byFP[fp]; k != nil {
			res = KeyAdded{Fingerprint: fp, Name: k.name, Labels: maps.Clone(k.labels), Added: false}
			return nil, nil
		}
		if other := set.byName[name]; name != "" && other != "" {
			return nil, fmt.Errorf("name %q is already bound to key %s: choose another name or revoke that key first", name, other)
		}
		if len(set.byFP) >= maxAuthKeys {
			return nil, fmt.Errorf("%s already holds %d keys, the maximum", s.path, maxAuthKeys)
		}
		var b bytes.Buffer
		b.Write(data)
		if len(data) > 0 && data[len(data)-1] != '\n' {
			b.WriteByte('\n')
		}
		b.WriteString(formatKeyLine(pub, name, labels, comment))
		b.WriteByte('\n')
		res = KeyAdded{Fingerprint: fp, Name: name, Labels: maps.Clone(labels), Added: true}
		return b.Bytes(), nil
	})
	if err != nil {
		return KeyAdded{}, err
	}
	return res, nil
}

// bindNames binds each name of want (fingerprint → name) to its key in the file, in one
// rewrite: name="…" is added to the key's line, its other options, key and comment kept, so
// that the name sticks to the key that first used it (SPEC §5). It returns the fingerprints
// it bound. A key is skipped when it is gone or already has a name option (bound, or an
// invalid or conflicting one the operator must fix), or when its name is bound to another key
// meanwhile (or wanted by two keys at once: the first in the file wins).
func (s *keyStore) bindNames(want map[string]string) ([]string, error) {
	var bound []string
	err := s.modify(func(data []byte, set *keySet) ([]byte, error) {
		bound = bound[:0]
		taken := map[string]bool{}
		lines := bytes.SplitAfter(data, []byte("\n"))
		for i, line := range lines {
			pub, _, opts, _, err := ssh.ParseAuthorizedKey(line)
			if err != nil {
				continue
			}
			fp := keys.Fingerprint(pub)
			name, ok := want[fp]
			k := set.byFP[fp]
			if !ok || !protocol.ValidName(name) || k == nil || k.name != "" || set.byName[name] != "" || taken[name] ||
				slices.ContainsFunc(opts, isNameOption) {
				continue
			}
			line = bytes.TrimLeft(line, " \t")
			sep := " "
			if len(opts) > 0 {
				sep = ","
			}
			lines[i] = append([]byte(`name="`+name+`"`+sep), line...)
			taken[name] = true
			bound = append(bound, fp)
		}
		if len(bound) == 0 {
			return nil, nil
		}
		return bytes.Join(lines, nil), nil
	})
	if err != nil {
		return nil, err
	}
	return bound, nil
}

// isNameOption reports whether an authorized_keys option is our name="…".
func isNameOption(o string) bool {
	k, _, ok := strings.Cut(o, "=")
	return ok && strings.EqualFold(strings.TrimSpace(k), "name")
}

// modify runs one read-modify-write of the file under both the in-process mutex and an flock
// on a lock file beside it, so the gateway and the admin CLI never lose each other's lines.
// change returns the new content, or nil to leave the file as it is. The new set is swapped
// in at once, so a change is in force when modify returns.
func (s *keyStore) modify(change func(data []byte, set *keySet) ([]byte, error)) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("authorized_keys directory: %w", err)
	}
	unlock, err := flockFile(s.path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	data, stamp, err := readAuthKeys(s.path)
	if err != nil {
		return err
	}
	set, err := parseAuthKeys(data, s.log)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	out, err := change(data, set)
	if err != nil || out == nil {
		if err == nil {
			s.swap(set, stamp)
		}
		return err
	}
	if len(out) > maxAuthKeysFile {
		return fmt.Errorf("%s would exceed %d bytes", s.path, maxAuthKeysFile)
	}
	newSet, err := parseAuthKeys(out, s.log)
	if err != nil {
		return err
	}
	if err := keys.WriteFileAtomic(s.path, out, 0o600); err != nil {
		return err
	}
	s.swap(newSet, statFile(s.path))
	return nil
}

// errNotPublicKey never carries the input: it may be a private key pasted by mistake.
var errNotPublicKey = errors.New("public_key is not one OpenSSH public key line (like `ssh-ed25519 AAAA… comment`); the input was neither stored nor logged")

// parseOneKey parses exactly one authorized_keys line, dropping its options.
func parseOneKey(line string) (ssh.PublicKey, string, error) {
	line = strings.TrimSpace(line)
	if line == "" || len(line) > maxKeyLine || strings.ContainsAny(line, "\r\n\x00") || strings.Contains(line, "PRIVATE KEY") {
		return nil, "", errNotPublicKey
	}
	pub, comment, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || len(bytes.TrimSpace(rest)) > 0 {
		return nil, "", errNotPublicKey
	}
	if _, ok := pub.(*ssh.Certificate); ok {
		return nil, "", errors.New("public_key is an SSH certificate; register the plain public key instead")
	}
	return pub, cleanComment(comment), nil
}

// cleanComment keeps a comment printable, single-line and short.
func cleanComment(c string) string {
	c = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, c)
	return trunc(strings.TrimSpace(c), maxCommentLen)
}

// validateBoundLabels checks labels the gateway will write into authorized_keys: the protocol
// bounds plus characters that could not round-trip through the labels="k=v,…" option.
func validateBoundLabels(l map[string]string) error {
	if err := protocol.ValidateLabels(l); err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	for k, v := range l {
		if strings.ContainsAny(v, ",\"\\") || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("label %q: value may not contain commas, quotes, backslashes or control characters", k)
		}
	}
	return nil
}

// formatKeyLine renders `name="…",labels="…" <type> <base64> <comment>`.
func formatKeyLine(pub ssh.PublicKey, name string, labels map[string]string, comment string) string {
	var opts []string
	if name != "" {
		opts = append(opts, `name="`+name+`"`)
	}
	if len(labels) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			kv = append(kv, k+"="+labels[k])
		}
		opts = append(opts, `labels="`+strings.Join(kv, ",")+`"`)
	}
	line := keys.AuthorizedLine(pub)
	if len(opts) > 0 {
		line = strings.Join(opts, ",") + " " + line
	}
	if comment != "" {
		line += " " + comment
	}
	return line
}

// readAuthKeys reads the file, bounded; a missing file is empty.
func readAuthKeys(path string) ([]byte, fileStamp, error) {
	data, st, err := configfile.Read(path, "authorized keys", maxAuthKeysFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fileStamp{}, nil
	}
	return data, st, err
}

func statFile(path string) fileStamp { return configfile.StatStamp(path) }

// parseAuthKeys builds a keySet, line by line. Lines that are not keys are skipped (as sshd
// does), each with a warning; a bad name or labels option is ignored with a warning, the key
// itself staying authorized; an agentless line whose options are missing or invalid is not
// authorized at all (the gateway could not reach the device as the operator meant). The
// warnings (set.warnings, at most maxLineWarnings) are logged by the caller that reloads.
func parseAuthKeys(data []byte, _ *slog.Logger) (*keySet, error) {
	set := &keySet{byFP: map[string]*authKey{}, byName: map[string]string{}}
	w := &lineWarnings{}
	n := 0
	lineNo := 0
	for line := range bytes.Lines(data) {
		lineNo++
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) == 0 || trimmed[0] == '#' {
			continue
		}
		pub, _, opts, _, err := ssh.ParseAuthorizedKey(trimmed)
		if err != nil {
			w.add(lineNo, "", notAKeyReason(trimmed))
			continue
		}
		if n++; n > maxAuthKeys {
			return nil, fmt.Errorf("more than %d keys", maxAuthKeys)
		}
		fp := keys.Fingerprint(pub)
		if set.byFP[fp] != nil {
			w.add(lineNo, fp, "duplicate key: only its first line is used")
			continue
		}
		o, errs := parseKeyOptions(opts)
		if o.agentlessErr != nil {
			w.add(lineNo, fp, "key refused: "+o.agentlessErr.Error())
			continue
		}
		for _, e := range errs {
			w.add(lineNo, fp, "option ignored: "+e.Error())
		}
		k := &authKey{fp: fp, line: string(trimmed), labels: map[string]string{}, agentless: o.agentless}
		if o.labels != nil {
			k.labels = o.labels
		}
		if o.name != "" {
			if other := set.byName[o.name]; other != "" {
				w.add(lineNo, fp, fmt.Sprintf("name %q already bound to an earlier key (%s): ignored", o.name, other))
			} else {
				k.name = o.name
				set.byName[o.name] = fp
			}
		}
		set.byFP[fp] = k
		if k.agentless != nil {
			set.agentless = append(set.agentless, fp)
		}
	}
	set.warnings = w.done()
	return set, nil
}

// keyOptions are the options of one line that the gateway reads.
type keyOptions struct {
	name         string
	labels       map[string]string
	agentless    *agentlessLogin // set when the line is marked agentless and its options are valid
	agentlessErr error           // the line is marked agentless but cannot be used
}

// parseKeyOptions extracts our own options: name="…", labels="k=v,…", and agentless with
// user="…" and host_key="…"; others are sshd's. The errors are options ignored; an agentless
// line that cannot be used says so in agentlessErr.
func parseKeyOptions(opts []string) (keyOptions, []error) {
	var o keyOptions
	var errs []error
	var marked bool
	var user, hostKey *string
	for _, opt := range opts {
		key, val, hasVal := strings.Cut(opt, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		if !hasVal {
			if key == optAgentless {
				marked = true
			}
			continue
		}
		switch key {
		case "name":
			n := strings.ToLower(unquoteOption(val))
			if !protocol.ValidName(n) {
				errs = append(errs, fmt.Errorf("name %q is invalid", trunc(n, 70)))
				continue
			}
			o.name = n
		case "labels":
			l, err := parseLabels(unquoteOption(val))
			if err != nil {
				errs = append(errs, err)
				continue
			}
			o.labels = l
		case optUser:
			v := unquoteOption(val)
			user = &v
		case optHostKey:
			v := unquoteOption(val)
			hostKey = &v
		case optAgentless:
			o.agentlessErr = errors.New("agentless takes no value (write agentless,user=\"…\",host_key=\"…\")")
			return o, errs
		}
	}
	switch {
	case marked:
		o.agentless, o.agentlessErr = parseAgentless(user, hostKey)
	case user != nil || hostKey != nil:
		errs = append(errs, errors.New("user= and host_key= apply only to a line marked agentless"))
	}
	return o, errs
}

// unquoteOption strips the double quotes of an authorized_keys option value (\" is a quote).
func unquoteOption(v string) string {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`)
	}
	return v
}

// parseLabels parses "k=v,k=v" and validates it.
func parseLabels(s string) (map[string]string, error) {
	l := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("label %q is not key=value", trunc(kv, 70))
		}
		l[strings.TrimSpace(k)] = strings.TrimSpace(v)
		if len(l) > protocol.MaxLabels {
			break // ValidateLabels reports it
		}
	}
	if err := protocol.ValidateLabels(l); err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	return l, nil
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
