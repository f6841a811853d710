package policy

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/configfile"
)

// Bounds of a policy file and its parts.
const (
	// MaxFileBytes is the largest policy file Parse and Load accept.
	MaxFileBytes = 1 << 20
	// DefaultApprovalTimeout is how long a call waits for a person when the file does not
	// set approval_timeout_seconds.
	DefaultApprovalTimeout = 120 * time.Second

	maxRoles           = 256
	maxRulesPerRole    = 256
	maxListLen         = 256 // tools, commands, paths, approval of one rule
	maxHTTPClients     = 1024
	maxCommandLen      = 4096
	maxPathLen         = 4096
	maxTimeoutLimit    = 31 * 24 * 3600 // max_timeout_seconds
	maxApprovalTimeout = 24 * 3600      // approval_timeout_seconds
)

// Names the gateway gives its own clients; the policy file may not reuse them for HTTP clients.
const (
	stdioClient = "stdio"
	httpClient  = "http" // MCP_HTTP_TOKEN's client
	adminRole   = "admin"
)

// validName reports whether s is a role or HTTP client name: 1-63 of letters, digits, '.',
// '_', '-', starting with a letter or digit.
func validName(s string) bool { return validChars(s, 63, true, "._-") }

// validTool reports whether s is a tool name as the policy may write it: 1-128 of letters,
// digits, '_', '.', '-'.
func validTool(s string) bool { return validChars(s, 128, false, "_.-") }

// validChars reports whether s is 1 to maxLen bytes of ASCII letters, digits and extra, starting
// with a letter or digit when alnumFirst.
func validChars(s string, maxLen int, alnumFirst bool, extra string) bool {
	if s == "" || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 && alnumFirst || strings.IndexByte(extra, c) < 0) {
			return false
		}
	}
	return true
}

// Policy is one loaded, validated policy; immutable, safe for concurrent use. Obtain one from
// Parse, Load, AllowAll or Watcher.Current. A nil *Policy allows nothing.
type Policy struct {
	stdioRole       string
	clients         []client
	roles           map[string][]*rule
	roleOrder       []string
	approvalTimeout time.Duration
	allowAll        bool
}

// client is one HTTP client of the file.
type client struct {
	name, role string
	sum        [sha256.Size]byte
}

// shellMode is a rule's `shell` setting.
type shellMode int8

const (
	shellUnset shellMode = iota // absent: allowed unless commands is set
	shellOn
	shellOff
)

// rule is one compiled rule of a role.
type rule struct {
	name        string // "viewer rule 1 (edges env=prod)"
	where       string // "env=prod" or "every edge", for reasons
	sel         Selector
	allTools    bool
	tools       map[string]bool
	commands    []string // nil = any; bare names or clean absolute paths
	shell       shellMode
	paths       []string // nil = any; clean absolute prefixes
	maxTimeout  int      // seconds; 0 = no limit
	approvalAll bool
	approval    map[string]bool
}

// Option adjusts how Parse, Load and NewWatcher read a policy.
type Option func(*options)

type options struct {
	knownTools map[string]bool
}

// WithKnownTools makes the policy refuse tool names, in `tools` and `approval`, that are not
// among names: a misspelt `approval: [upload_fle]` under `tools: ["*"]` would otherwise let
// upload_file through without a person. Pass the names of every tool the server registers.
func WithKnownTools(names ...string) Option {
	return func(o *options) {
		o.knownTools = make(map[string]bool, len(names))
		for _, n := range names {
			o.knownTools[n] = true
		}
	}
}

// AllowAll is the policy in force when there is no POLICY_FILE: the stdio client is admin,
// and role admin has one rule allowing every tool on every edge with no approval. HTTPClient
// knows no token (MCP_HTTP_TOKEN's client "http" is the caller's to map to role admin).
func AllowAll() *Policy {
	r := &rule{
		name:     "admin (no POLICY_FILE: everything allowed)",
		where:    "every edge",
		allTools: true,
	}
	return &Policy{
		stdioRole:       adminRole,
		roles:           map[string][]*rule{adminRole: {r}},
		roleOrder:       []string{adminRole},
		approvalTimeout: DefaultApprovalTimeout,
		allowAll:        true,
	}
}

// IsAllowAll reports whether p is AllowAll's policy (no POLICY_FILE).
func (p *Policy) IsAllowAll() bool { return p != nil && p.allowAll }

// StdioRole returns the role of the stdio client (clients.stdio.role). When the file has no
// clients.stdio the stdio client has no access at all and StdioRole returns "", which Decide
// refuses ("client has no role"); only AllowAll makes it admin without saying so.
func (p *Policy) StdioRole() string {
	if p == nil {
		return ""
	}
	return p.stdioRole
}

// HTTPClient finds the HTTP client whose token_sha256 is the SHA-256 of token. The digest is
// compared in constant time with every entry (no early exit), so timing tells nothing about
// which entry, or how much of one, matched. An empty token matches nothing.
func (p *Policy) HTTPClient(token string) (name, role string, ok bool) {
	if p == nil || token == "" {
		return "", "", false
	}
	sum := sha256.Sum256([]byte(token))
	found := -1
	for i := range p.clients {
		if subtle.ConstantTimeCompare(sum[:], p.clients[i].sum[:]) == 1 && found < 0 {
			found = i
		}
	}
	if found < 0 {
		return "", "", false
	}
	return p.clients[found].name, p.clients[found].role, true
}

// ApprovalTimeout is how long a call that needs approval waits for a person before it is
// refused (approval_timeout_seconds; DefaultApprovalTimeout when absent).
func (p *Policy) ApprovalTimeout() time.Duration {
	if p == nil || p.approvalTimeout <= 0 {
		return DefaultApprovalTimeout
	}
	return p.approvalTimeout
}

// HasRole reports whether role is defined (it may still have no rules).
func (p *Policy) HasRole(role string) bool {
	if p == nil {
		return false
	}
	_, ok := p.roles[role]
	return ok
}

// Roles returns the defined role names in file order.
func (p *Policy) Roles() []string {
	if p == nil {
		return []string{}
	}
	return slices.Clone(p.roleOrder)
}

// HTTPClientCount returns how many HTTP clients the file defines.
func (p *Policy) HTTPClientCount() int {
	if p == nil {
		return 0
	}
	return len(p.clients)
}

// Load reads and parses the policy file at path (a regular file of at most MaxFileBytes).
// Errors start with the path.
func Load(path string, opts ...Option) (*Policy, error) {
	data, _, err := readFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(data, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// Parse reads and validates one policy (YAML, the README's Policy section). Decoding is strict: an unknown or
// misspelt key, a duplicate key, a key without a value, a wrong type or a second YAML
// document is an error. Every error is one line naming the line of the file, the field and
// what is wrong.
func Parse(b []byte, opts ...Option) (*Policy, error) {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("the policy is %d bytes long (max %d)", len(b), MaxFileBytes)
	}
	root, err := parseTree(b)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var doc fileDoc
	if err := dec.Decode(&doc); err != nil {
		return nil, yamlError(err)
	}
	return compile(&doc, locator{root: root}, o)
}

// parseTree parses b into its node tree (for line numbers and key presence) and checks what
// the typed decoder does not: exactly one document, a mapping at the top, no key without a
// value (a `commands:` whose items were commented out must not mean "any command").
func parseTree(b []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the policy is empty: it needs at least clients and roles")
		}
		return nil, yamlError(err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, yamlError(err)
		}
		return nil, fmt.Errorf("line %d: the policy holds more than one YAML document (remove the '---')", more.Line)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the policy must be a mapping with clients, roles and approval_timeout_seconds", doc.Line)
	}
	top := doc.Content[0]
	if err := noEmptyValues(top, 0); err != nil {
		return nil, err
	}
	return top, nil
}

// noEmptyValues refuses a mapping key whose value is null, anywhere in the tree. Aliases are
// not followed (their anchors are checked where they stand).
func noEmptyValues(n *yaml.Node, depth int) error {
	if depth > 32 {
		return fmt.Errorf("line %d: the policy is nested too deeply", n.Line)
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
				return fmt.Errorf("line %d: %s has no value: give it one or remove the key", k.Line, quote(k.Value))
			}
			if err := noEmptyValues(v, depth+1); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if err := noEmptyValues(c, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// The shape of the file, decoded strictly (KnownFields).
type fileDoc struct {
	Clients                *clientsDoc          `yaml:"clients"`
	Roles                  map[string][]ruleDoc `yaml:"roles"`
	ApprovalTimeoutSeconds *int                 `yaml:"approval_timeout_seconds"`
}

type clientsDoc struct {
	Stdio *stdioDoc       `yaml:"stdio"`
	HTTP  []httpClientDoc `yaml:"http"`
}

type stdioDoc struct {
	Role string `yaml:"role"`
}

type httpClientDoc struct {
	Name        string `yaml:"name"`
	TokenSHA256 string `yaml:"token_sha256"`
	Role        string `yaml:"role"`
}

type ruleDoc struct {
	Edges             string   `yaml:"edges"`
	Tools             []string `yaml:"tools"`
	Commands          []string `yaml:"commands"`
	Shell             *bool    `yaml:"shell"`
	Paths             []string `yaml:"paths"`
	MaxTimeoutSeconds *int     `yaml:"max_timeout_seconds"`
	Approval          []string `yaml:"approval"`
}

// docTypes names the decoded types in messages, with their known keys.
func docTypes() map[string]reflect.Type {
	return map[string]reflect.Type{
		"fileDoc":       reflect.TypeFor[fileDoc](),
		"clientsDoc":    reflect.TypeFor[clientsDoc](),
		"stdioDoc":      reflect.TypeFor[stdioDoc](),
		"httpClientDoc": reflect.TypeFor[httpClientDoc](),
		"ruleDoc":       reflect.TypeFor[ruleDoc](),
	}
}

// docWhat says in words where a type stands in the file.
func docWhat(typ string) string {
	switch typ {
	case "fileDoc":
		return "at the top of the policy"
	case "clientsDoc":
		return "in clients"
	case "stdioDoc":
		return "in clients.stdio"
	case "httpClientDoc":
		return "in an http client"
	case "ruleDoc":
		return "in a rule"
	}
	return "here"
}

// docTypeWords renders a Go type of the decoder's messages as YAML words.
func docTypeWords(t string) string {
	switch strings.TrimPrefix(t, "*") {
	case "string":
		return "a string"
	case "int":
		return "an integer"
	case "bool":
		return "true or false"
	case "[]string":
		return "a list of strings"
	case "[]policy.ruleDoc":
		return "a list of rules"
	case "map[string][]policy.ruleDoc":
		return "a mapping of role names to lists of rules"
	case "[]policy.httpClientDoc":
		return "a list of http clients"
	case "policy.ruleDoc", "policy.httpClientDoc", "policy.stdioDoc", "policy.clientsDoc", "policy.fileDoc":
		return "a mapping"
	}
	return t
}

func tagWords(tag string) string {
	switch tag {
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!str":
		return "the string"
	case "!!int":
		return "the integer"
	case "!!float":
		return "the number"
	case "!!bool":
		return "the boolean"
	}
	return tag
}

// yamlError makes a decoder error one line, in the policy's words.
func yamlError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := rewordYAML(te.Errors[0])
		if n := len(te.Errors) - 1; n > 0 {
			msg += fmt.Sprintf(" (and %d more)", n)
		}
		return errors.New(msg)
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg, _, _ = strings.Cut(msg, "\n")
	return errors.New(oneLine(msg))
}

// rewordYAML rewrites the decoder's "line N: field x not found in type policy.ruleDoc" and
// "line N: cannot unmarshal !!seq into string" in the policy's words.
func rewordYAML(s string) string {
	rest, ok := strings.CutPrefix(s, "line ")
	num, rest, ok2 := strings.Cut(rest, ": ")
	if !ok || !ok2 || num == "" || strings.Trim(num, "0123456789") != "" {
		return oneLine(s)
	}
	if f, ok := strings.CutPrefix(rest, "field "); ok {
		if name, typ, ok := strings.Cut(f, " not found in type policy."); ok {
			known := "?"
			if t, ok := docTypes()[typ]; ok {
				known = strings.Join(yamlKeys(t), ", ")
			}
			return fmt.Sprintf("line %s: unknown key %s %s (known keys: %s)", num, quote(name), docWhat(typ), known)
		}
	}
	if c, ok := strings.CutPrefix(rest, "cannot unmarshal !!"); ok {
		if i := strings.LastIndex(c, " into "); i >= 0 {
			found, into := c[:i], c[i+len(" into "):]
			tag, val, hasVal := strings.Cut(found, " ")
			got := tagWords("!!" + tag)
			if v, ok := strings.CutPrefix(val, "`"); hasVal && ok {
				got += " " + quote(strings.TrimSuffix(v, "`"))
			}
			return fmt.Sprintf("line %s: expected %s, found %s", num, docTypeWords(into), got)
		}
	}
	return oneLine(s)
}

// yamlKeys lists the yaml keys of a struct type, in field order.
func yamlKeys(t reflect.Type) []string {
	keys := make([]string, 0, t.NumField())
	for f := range t.Fields() {
		k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		keys = append(keys, k)
	}
	return keys
}

// locator finds nodes of the parsed tree by path (string keys, int indexes) for line numbers
// and key presence. Aliases are followed; merged keys (<<) are not found, which only costs a
// line number.
type locator struct {
	root *yaml.Node
}

func (l locator) find(steps ...any) (key, val *yaml.Node) {
	n := l.root
	for _, s := range steps {
		for n != nil && n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n == nil {
			return nil, nil
		}
		switch s := s.(type) {
		case string:
			if n.Kind != yaml.MappingNode {
				return nil, nil
			}
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == s {
					key, next = n.Content[i], n.Content[i+1]
					break
				}
			}
			n = next
		case int:
			if n.Kind != yaml.SequenceNode || s < 0 || s >= len(n.Content) {
				return nil, nil
			}
			key, n = nil, n.Content[s]
		}
	}
	return key, n
}

// line is the line of the key (or list item) at the path; 0 when not found.
func (l locator) line(steps ...any) int {
	k, v := l.find(steps...)
	switch {
	case k != nil:
		return k.Line
	case v != nil:
		return v.Line
	}
	return 0
}

// has reports whether the path exists in the tree.
func (l locator) has(steps ...any) bool {
	_, v := l.find(steps...)
	return v != nil
}

// notInt reports whether the value at the path exists and is not a YAML integer (the
// decoder would truncate 1.5 to 1).
func (l locator) notInt(steps ...any) bool {
	_, v := l.find(steps...)
	return v != nil && v.ShortTag() != "!!int"
}

// mapKeys lists the keys of the mapping at the path, in file order.
func (l locator) mapKeys(steps ...any) []string {
	_, v := l.find(steps...)
	if v == nil || v.Kind != yaml.MappingNode {
		return nil
	}
	var keys []string
	for i := 0; i+1 < len(v.Content); i += 2 {
		keys = append(keys, v.Content[i].Value)
	}
	return keys
}

// at prefixes a message with its line, when known.
func at(line int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		return fmt.Errorf("line %d: %s", line, msg)
	}
	return errors.New(msg)
}

// compile validates the decoded document and builds the Policy.
func compile(doc *fileDoc, loc locator, o options) (*Policy, error) {
	p := &Policy{roles: map[string][]*rule{}, approvalTimeout: DefaultApprovalTimeout}

	if !loc.has("roles") || len(doc.Roles) == 0 {
		return nil, at(loc.line("roles"), "roles: define at least one role (a list of rules), e.g. roles: {viewer: [{edges: \"*\", tools: [get_status]}]}")
	}
	if len(doc.Roles) > maxRoles {
		return nil, at(loc.line("roles"), "roles: %d roles (max %d)", len(doc.Roles), maxRoles)
	}
	// File order where the tree shows it; any other (merged) names after, sorted.
	order := make([]string, 0, len(doc.Roles))
	for _, name := range loc.mapKeys("roles") {
		if _, ok := doc.Roles[name]; ok && !slices.Contains(order, name) {
			order = append(order, name)
		}
	}
	var rest []string
	for name := range doc.Roles {
		if !slices.Contains(order, name) {
			rest = append(rest, name)
		}
	}
	slices.Sort(rest)
	order = append(order, rest...)

	for _, name := range order {
		if !validName(name) {
			return nil, at(loc.line("roles", name), "roles: role name %s is invalid: use 1-63 of letters, digits, '.', '_', '-', starting with a letter or digit", quote(name))
		}
		docs := doc.Roles[name]
		if len(docs) > maxRulesPerRole {
			return nil, at(loc.line("roles", name), "role %s has %d rules (max %d)", name, len(docs), maxRulesPerRole)
		}
		rules := make([]*rule, 0, len(docs))
		for i, d := range docs {
			r, err := compileRule(name, i, d, loc, o)
			if err != nil {
				return nil, err
			}
			rules = append(rules, r)
		}
		p.roles[name] = rules
	}
	p.roleOrder = order

	if c := doc.Clients; c != nil {
		if c.Stdio != nil {
			line := loc.line("clients", "stdio", "role")
			if line == 0 {
				line = loc.line("clients", "stdio")
			}
			if c.Stdio.Role == "" {
				return nil, at(line, "clients.stdio: role is missing (write stdio: {role: admin}, or remove stdio to give the stdio client no access)")
			}
			if _, ok := p.roles[c.Stdio.Role]; !ok {
				return nil, at(line, "clients.stdio: role %s is not defined under roles (defined: %s)", quote(c.Stdio.Role), strings.Join(order, ", "))
			}
			p.stdioRole = c.Stdio.Role
		}
		if len(c.HTTP) > maxHTTPClients {
			return nil, at(loc.line("clients", "http"), "clients.http: %d clients (max %d)", len(c.HTTP), maxHTTPClients)
		}
		names := map[string]int{}
		sums := map[[sha256.Size]byte]string{}
		for i, h := range c.HTTP {
			line := func(field string) int {
				if l := loc.line("clients", "http", i, field); l > 0 {
					return l
				}
				return loc.line("clients", "http", i)
			}
			what := fmt.Sprintf("clients.http[%d]", i)
			if h.Name != "" {
				what = "http client " + quote(h.Name)
			}
			switch {
			case h.Name == "":
				return nil, at(line("name"), "%s: name is missing", what)
			case !validName(h.Name):
				return nil, at(line("name"), "%s: name is invalid: use 1-63 of letters, digits, '.', '_', '-', starting with a letter or digit", what)
			case h.Name == httpClient || h.Name == stdioClient:
				return nil, at(line("name"), "%s: the name is reserved for the gateway's own %s client; choose another", what, h.Name)
			}
			if prev, dup := names[h.Name]; dup {
				return nil, at(line("name"), "%s: the name is already used by clients.http[%d]; client names must be unique", what, prev)
			}
			names[h.Name] = i
			if h.TokenSHA256 == "" {
				return nil, at(line("name"), "%s: token_sha256 is missing (the hex SHA-256 of the client's bearer token, e.g. from `printf %%s \"$TOKEN\" | sha256sum`)", what)
			}
			raw, err := hex.DecodeString(h.TokenSHA256)
			if err != nil || len(raw) != sha256.Size {
				return nil, at(line("token_sha256"), "%s: token_sha256 must be 64 hex digits (the SHA-256 of the token, not the token itself)", what)
			}
			sum := [sha256.Size]byte(raw)
			if sum == sha256.Sum256(nil) {
				return nil, at(line("token_sha256"), "%s: token_sha256 is the SHA-256 of an empty token", what)
			}
			if other, dup := sums[sum]; dup {
				return nil, at(line("token_sha256"), "%s: token_sha256 is the same as http client %s's; every client needs its own token", what, quote(other))
			}
			sums[sum] = h.Name
			if h.Role == "" {
				return nil, at(line("name"), "%s: role is missing", what)
			}
			if _, ok := p.roles[h.Role]; !ok {
				return nil, at(line("role"), "%s: role %s is not defined under roles (defined: %s)", what, quote(h.Role), strings.Join(order, ", "))
			}
			p.clients = append(p.clients, client{name: h.Name, role: h.Role, sum: sum})
		}
	}

	if t := doc.ApprovalTimeoutSeconds; t != nil {
		if loc.notInt("approval_timeout_seconds") {
			return nil, at(loc.line("approval_timeout_seconds"), "approval_timeout_seconds: expected a whole number of seconds")
		}
		if *t < 1 || *t > maxApprovalTimeout {
			return nil, at(loc.line("approval_timeout_seconds"), "approval_timeout_seconds: %d is out of range (1 to %d)", *t, maxApprovalTimeout)
		}
		p.approvalTimeout = time.Duration(*t) * time.Second
	}
	return p, nil
}

// compileRule validates rule i (0-based) of role and compiles it.
func compileRule(role string, i int, d ruleDoc, loc locator, o options) (*rule, error) {
	base := []any{"roles", role, i}
	line := func(steps ...any) int {
		if l := loc.line(append(slices.Clone(base), steps...)...); l > 0 {
			return l
		}
		return loc.line(base...)
	}
	has := func(field string) bool { return loc.has(append(slices.Clone(base), field)...) }
	what := fmt.Sprintf("role %s, rule %d", role, i+1)

	sel, err := ParseSelector(d.Edges)
	if err != nil {
		return nil, at(line("edges"), "%s, edges: %v", what, err)
	}
	r := &rule{sel: sel, where: cut(sel.String())}
	r.name = fmt.Sprintf("%s rule %d (edges %s)", role, i+1, r.where)
	if sel.MatchesAll() {
		r.where = "every edge"
	}

	checkTool := func(field string, j int, t string) error {
		if t == "*" {
			return nil
		}
		if !validTool(t) {
			if t == "" {
				return at(line(field, j), "%s, %s: a tool name is empty", what, field)
			}
			return at(line(field, j), "%s, %s: %s is not a tool name (letters, digits, '_', '.', '-'; or \"*\" for every tool)", what, field, quote(t))
		}
		if o.knownTools != nil && !o.knownTools[t] {
			return at(line(field, j), "%s, %s: there is no tool %s", what, field, quote(t))
		}
		return nil
	}

	if len(d.Tools) == 0 {
		return nil, at(line("tools"), "%s: tools is missing or empty: list the tools this rule allows, or [\"*\"] for all", what)
	}
	if len(d.Tools) > maxListLen {
		return nil, at(line("tools"), "%s, tools: %d entries (max %d)", what, len(d.Tools), maxListLen)
	}
	r.tools = map[string]bool{}
	for j, t := range d.Tools {
		if err := checkTool("tools", j, t); err != nil {
			return nil, err
		}
		if t == "*" {
			r.allTools = true
		}
		r.tools[t] = true
	}

	if has("commands") || d.Commands != nil {
		if len(d.Commands) == 0 {
			return nil, at(line("commands"), "%s: commands is an empty list, which would allow no command: list the commands, or remove the key to allow any", what)
		}
		if len(d.Commands) > maxListLen {
			return nil, at(line("commands"), "%s, commands: %d entries (max %d)", what, len(d.Commands), maxListLen)
		}
		r.commands = make([]string, 0, len(d.Commands))
		for j, c := range d.Commands {
			clean, err := checkCommand(c)
			if err != nil {
				return nil, at(line("commands", j), "%s, commands: %v", what, err)
			}
			if !slices.Contains(r.commands, clean) {
				r.commands = append(r.commands, clean)
			}
		}
	}

	if d.Shell != nil {
		r.shell = shellOff
		if *d.Shell {
			r.shell = shellOn
			if r.commands != nil {
				return nil, at(line("shell"), "%s: shell: true together with commands: where commands apply, shell strings are always refused (they could run anything); remove one of them", what)
			}
		}
	}

	if has("paths") || d.Paths != nil {
		if len(d.Paths) == 0 {
			return nil, at(line("paths"), "%s: paths is an empty list, which would allow no path: list the path prefixes, or remove the key to allow any", what)
		}
		if len(d.Paths) > maxListLen {
			return nil, at(line("paths"), "%s, paths: %d entries (max %d)", what, len(d.Paths), maxListLen)
		}
		r.paths = make([]string, 0, len(d.Paths))
		for j, pp := range d.Paths {
			switch {
			case len(pp) > maxPathLen:
				return nil, at(line("paths", j), "%s, paths: an entry is %d bytes long (max %d)", what, len(pp), maxPathLen)
			case !strings.HasPrefix(pp, "/"):
				return nil, at(line("paths", j), "%s, paths: %s is not an absolute path (write it from /, e.g. /var/log/)", what, quote(pp))
			case hasDotDot(pp):
				return nil, at(line("paths", j), "%s, paths: %s contains a '..' element; write the directory plainly", what, quote(pp))
			case strings.ContainsFunc(pp, isControl):
				return nil, at(line("paths", j), "%s, paths: %s contains control characters", what, quote(pp))
			}
			clean := path.Clean(pp)
			if !slices.Contains(r.paths, clean) {
				r.paths = append(r.paths, clean)
			}
		}
	}

	if t := d.MaxTimeoutSeconds; t != nil {
		if loc.notInt(append(slices.Clone(base), "max_timeout_seconds")...) {
			return nil, at(line("max_timeout_seconds"), "%s, max_timeout_seconds: expected a whole number of seconds", what)
		}
		if *t < 1 || *t > maxTimeoutLimit {
			return nil, at(line("max_timeout_seconds"), "%s, max_timeout_seconds: %d is out of range (1 to %d; remove the key for no limit)", what, *t, maxTimeoutLimit)
		}
		r.maxTimeout = *t
	}

	if len(d.Approval) > maxListLen {
		return nil, at(line("approval"), "%s, approval: %d entries (max %d)", what, len(d.Approval), maxListLen)
	}
	r.approval = map[string]bool{}
	for j, t := range d.Approval {
		if err := checkTool("approval", j, t); err != nil {
			return nil, err
		}
		if t == "*" {
			r.approvalAll = true
		} else if !r.allTools && !r.tools[t] {
			return nil, at(line("approval", j), "%s, approval: %s is not among the rule's tools %v; approval only applies to tools the rule allows", what, t, d.Tools)
		}
		r.approval[t] = true
	}
	return r, nil
}

// checkCommand validates one `commands` entry and returns it cleaned: a bare executable name
// (matched against a bare argv[0]) or an absolute path (matched against the same path).
func checkCommand(c string) (string, error) {
	const how = "a command is one executable without arguments or shell syntax: a bare name like uptime or an absolute path like /usr/bin/uptime"
	switch {
	case c == "":
		return "", errors.New("an entry is empty")
	case len(c) > maxCommandLen:
		return "", fmt.Errorf("an entry is %d bytes long (max %d)", len(c), maxCommandLen)
	case strings.ContainsFunc(c, func(r rune) bool { return isControl(r) || r == ' ' || r == '\t' }),
		strings.ContainsAny(c, ";|&$`<>'\"\\\u00a0"):
		return "", fmt.Errorf("%s is not a command: %s", quote(c), how)
	case c == "." || c == "..":
		return "", fmt.Errorf("%s is not a command: %s", quote(c), how)
	case !strings.Contains(c, "/"):
		return c, nil
	case !strings.HasPrefix(c, "/"):
		return "", fmt.Errorf("%s is a relative path: %s", quote(c), how)
	case hasDotDot(c):
		return "", fmt.Errorf("%s contains a '..' element; write the executable's path plainly", quote(c))
	}
	clean := path.Clean(c)
	if clean == "/" || strings.HasSuffix(c, "/") {
		return "", fmt.Errorf("%s is a directory, not an executable: %s", quote(c), how)
	}
	return clean, nil
}

// hasDotDot reports whether a slash-separated path has a ".." element.
func hasDotDot(p string) bool {
	return slices.Contains(strings.Split(p, "/"), "..")
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// fileStamp identifies a version of the policy file (see configfile.Stamp).
type fileStamp = configfile.Stamp

// readFile reads a policy file: a regular file (symlinks followed) of at most MaxFileBytes.
func readFile(name string) ([]byte, fileStamp, error) {
	return configfile.Read(name, "policy", MaxFileBytes)
}

func statFile(name string) fileStamp { return configfile.StatStamp(name) }
