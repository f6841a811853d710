package policy

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// Request is one proposed call, as the MCP tool layer sees it, to be judged by Decide.
type Request struct {
	Tool           string
	Edge           string            // the edge's name ("" for tools that address no edge)
	EdgeLabels     map[string]string // labels bound at the gateway (the only ones that select)
	Argv           []string          // run_command-like tools with argv
	Command        string            // a shell string (shell: false refuses it; also refused whenever `commands` is set)
	EnvNames       []string          // env variable names the call sets
	Path           string            // upload/download path on the edge
	TimeoutSeconds int               // effective timeout the call asks (0 = not a timed call)
}

// Decision is the verdict on one Request.
type Decision struct {
	Allowed       bool
	NeedsApproval bool
	Role          string
	// Rule names the rule that decided, e.g. "viewer rule 1 (edges env=prod)": for an allowed
	// call the allowing rule; for a refusal the rule whose edges and tool matched and whose
	// condition refused it (the one Reason quotes); "" when no rule came that close.
	Rule string
	// Reason is one line that names the role and why (refusals start "role viewer: …" or
	// "role viewer may not …").
	Reason string
	// Paths are the deciding rule's path prefixes (cleaned), for the edge to enforce again;
	// nil = any. Always nil for a refusal.
	Paths []string
}

// How far a rule got with a request; the refusal quotes the furthest.
const (
	stageNone  = iota // the rule does not list the tool
	stageTool         // the tool is listed, the edge does not match
	stageEdge         // tool and edge match, a condition refused
	stageAllow        // the rule allows the call
)

// addressesEdge reports whether the request names an edge, so the edges selector applies.
// Labels without a name still count, so a caller that forgets Edge is not let past it.
func (r *Request) addressesEdge() bool { return r.Edge != "" || r.EdgeLabels != nil }

// Decide judges a request of a client with the given role. A call is allowed when one rule of
// the role allows all of it: its edges selector matches the edge's gateway-bound labels (for
// tools that address an edge), its tools list the tool, and every condition it sets
// (commands, shell, paths, max_timeout_seconds) holds. Of several allowing rules, one that
// needs no approval is preferred; otherwise the first. The role "" or an undefined role is
// refused.
func (p *Policy) Decide(role string, r Request) Decision {
	d := Decision{Role: role}
	switch {
	case p == nil:
		d.Reason = "no policy is loaded: every call is refused"
		return d
	case role == "":
		d.Reason = "client has no role in the policy: every call is refused"
		return d
	case !p.HasRole(role):
		d.Reason = fmt.Sprintf("client has no role: role %s is not defined in the policy", quote(role))
		return d
	case r.Tool == "":
		d.Reason = fmt.Sprintf("role %s: the request names no tool", role)
		return d
	}

	var approve *rule // first allowing rule that needs approval
	var closest *rule
	closestReason := ""
	furthest := stageNone
	edgeSeen := false // some rule of the role matches the edge, whatever its tools
	for _, ru := range p.roles[role] {
		if r.addressesEdge() && ru.sel.Matches(r.EdgeLabels) {
			edgeSeen = true
		}
		stage, reason := ru.judge(role, &r)
		if stage == stageAllow {
			if !ru.needsApproval(r.Tool) {
				return ru.allow(d, r.Tool, false)
			}
			if approve == nil {
				approve = ru
			}
			continue
		}
		if stage > furthest {
			furthest = stage
			if stage == stageEdge {
				closest, closestReason = ru, reason
			}
		}
	}
	if approve != nil {
		return approve.allow(d, r.Tool, true)
	}
	switch furthest {
	case stageEdge:
		d.Rule = closest.name
		d.Reason = closestReason
	case stageTool:
		if edgeSeen {
			d.Reason = fmt.Sprintf("role %s may not use %s on edge %s (%s)", role, quoteName(r.Tool), quoteName(r.Edge), labelWords(r.EdgeLabels))
		} else {
			d.Reason = fmt.Sprintf("role %s has no rule for edge %s (%s)", role, quoteName(r.Edge), labelWords(r.EdgeLabels))
		}
	default:
		d.Reason = fmt.Sprintf("role %s may not use %s", role, quoteName(r.Tool))
	}
	return d
}

// allow fills in an allowing decision.
func (ru *rule) allow(d Decision, tool string, approval bool) Decision {
	d.Allowed = true
	d.NeedsApproval = approval
	d.Rule = ru.name
	d.Reason = fmt.Sprintf("role %s: allowed by %s", d.Role, ru.name)
	if approval {
		d.Reason += fmt.Sprintf("; %s waits for a person's approval", quoteName(tool))
	}
	d.Paths = slices.Clone(ru.paths)
	return d
}

func (ru *rule) listsTool(tool string) bool { return ru.allTools || ru.tools[tool] }

func (ru *rule) needsApproval(tool string) bool { return ru.approvalAll || ru.approval[tool] }

// judge says how far the rule gets with the request and, at stageEdge, why it refuses.
func (ru *rule) judge(role string, r *Request) (int, string) {
	if !ru.listsTool(r.Tool) {
		return stageNone, ""
	}
	if r.addressesEdge() && !ru.sel.Matches(r.EdgeLabels) {
		return stageTool, ""
	}
	if why := ru.refuse(r); why != "" {
		return stageEdge, "role " + role + ": " + why
	}
	return stageAllow, ""
}

// refuse checks the rule's conditions and returns why the request fails one, or "".
func (ru *rule) refuse(r *Request) string {
	if r.Command != "" {
		if ru.commands != nil {
			return fmt.Sprintf("shell command strings are refused where commands %s apply (%s); pass argv instead", listWords(ru.commands), ru.where)
		}
		if ru.shell == shellOff {
			return fmt.Sprintf("shell command strings are not allowed on %s; pass argv instead", ru.where)
		}
	}
	if ru.commands != nil {
		if len(r.Argv) > 0 {
			if why := ru.refuseArgv0(r.Argv[0]); why != "" {
				return why
			}
		}
		for _, name := range r.EnvNames {
			if protocol.ForbiddenEnv(name) {
				return fmt.Sprintf("env %s may not be set where commands %s apply (%s): it changes what runs", quote(name), listWords(ru.commands), ru.where)
			}
		}
	}
	if ru.paths != nil && r.Path != "" {
		if why := ru.refusePath(r.Path); why != "" {
			return why
		}
	}
	if ru.maxTimeout > 0 && r.TimeoutSeconds > ru.maxTimeout {
		return fmt.Sprintf("timeout_seconds %d is above the %d allowed on %s", r.TimeoutSeconds, ru.maxTimeout, ru.where)
	}
	return ""
}

// refuseArgv0 matches argv[0] against the rule's commands: a bare name only an identical bare
// argv[0] (the edge resolves it with its own PATH, which the caller cannot set here); an
// absolute path only the identical path after cleaning, and never one with a '..' element
// (the kernel resolves '..' after symlinks, path.Clean before).
func (ru *rule) refuseArgv0(a string) string {
	if strings.HasPrefix(a, "/") {
		if hasDotDot(a) {
			return fmt.Sprintf("argv[0] %s contains a '..' element; name the command plainly", quote(a))
		}
		if slices.Contains(ru.commands, path.Clean(a)) {
			return ""
		}
	} else if !strings.Contains(a, "/") && slices.Contains(ru.commands, a) {
		return ""
	}
	return fmt.Sprintf("argv[0] %s is not one of the commands %s allowed on %s", quote(a), listWords(ru.commands), ru.where)
}

// refusePath checks an edge path against the rule's prefixes after cleaning; a relative path
// or one with a '..' element is refused outright.
func (ru *rule) refusePath(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("path %s is not absolute", quote(p))
	case hasDotDot(p):
		return fmt.Sprintf("path %s contains a '..' element", quote(p))
	case strings.ContainsRune(p, 0):
		return fmt.Sprintf("path %s contains a NUL byte", quote(p))
	}
	clean := path.Clean(p)
	for _, prefix := range ru.paths {
		if under(clean, prefix) {
			return ""
		}
	}
	return fmt.Sprintf("path %s is not under the paths %s allowed on %s", quote(clean), listWords(ru.paths), ru.where)
}

// under reports whether clean (a clean absolute path) is dir or inside it; dir is clean too.
func under(clean, dir string) bool {
	return dir == "/" || clean == dir || strings.HasPrefix(clean, dir+"/")
}

// ToolVisible reports whether some rule of the role names the tool (or "*"): the tools a
// client's tools/list shows.
func (p *Policy) ToolVisible(role, tool string) bool {
	if p == nil {
		return false
	}
	for _, ru := range p.roles[role] {
		if ru.listsTool(tool) {
			return true
		}
	}
	return false
}

// EdgeVisible reports whether some rule of the role matches an edge with these gateway-bound
// labels: the edges a client sees in get_status, find_edges and resources.
func (p *Policy) EdgeVisible(role string, labels map[string]string) bool {
	if p == nil {
		return false
	}
	for _, ru := range p.roles[role] {
		if ru.sel.Matches(labels) {
			return true
		}
	}
	return false
}

// EdgeToolVisible reports whether some rule of the role matches both the edge (by its
// gateway-bound labels) and the tool; it says nothing of the rule's other conditions.
func (p *Policy) EdgeToolVisible(role, tool string, labels map[string]string) bool {
	if p == nil {
		return false
	}
	for _, ru := range p.roles[role] {
		if ru.listsTool(tool) && ru.sel.Matches(labels) {
			return true
		}
	}
	return false
}

// maxListed bounds how many entries of a list a reason shows.
const maxListed = 10

// listWords renders a list as "[a b c]": at most maxListed entries and maxMessagePart bytes.
func listWords(l []string) string {
	if len(l) <= maxListed {
		return "[" + cut(strings.Join(l, " ")) + "]"
	}
	return fmt.Sprintf("[%s … and %d more]", cut(strings.Join(l[:maxListed], " ")), len(l)-maxListed)
}

// labelWords renders labels as "labels k=v,k=v" sorted by key, or "no labels", in one short line.
func labelWords(l map[string]string) string {
	if len(l) == 0 {
		return "no labels"
	}
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(l)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + l[k])
	}
	return "labels " + oneLine(cut(b.String()))
}

// cut shortens s to maxMessagePart bytes.
func cut(s string) string {
	if len(s) <= maxMessagePart {
		return s
	}
	return s[:runeStart(s, maxMessagePart)] + "…"
}

// quoteName renders an edge or tool name in a message: bare when it is a plain name,
// quoted (and cut) otherwise.
func quoteName(s string) string {
	if s != "" && validName(s) {
		return s
	}
	return quote(s)
}
