package rpc

import (
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/shared/protocol"
)

// runAs resolves a run_as user name into the credential a process starts with (setuid and
// setgid by the kernel at exec: no password and no sudo on any command line) and the
// environment that names the user. An empty name means the edge's own user (nil credential).
func (s *Server) runAs(name string) (*syscall.Credential, map[string]string, error) {
	if name == "" {
		return nil, nil, nil
	}
	if !slices.Contains(s.cfg.AllowRunAs, name) {
		allowed := strings.Join(s.cfg.AllowRunAs, ",")
		if allowed == "" {
			allowed = "empty: run_as is disabled"
		}
		return nil, nil, protocol.Errorf(protocol.CodePolicy,
			"run_as %q is not allowed on this edge (EDGE_ALLOW_RUN_AS=%s)", name, allowed)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, nil, protocol.Errorf(protocol.CodeNotFound, "run_as user %q does not exist on the edge: %v", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, nil, protocol.Errorf(protocol.CodeInternal, "run_as user %q has a non-numeric uid or gid", name)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	if cred.Groups == nil {
		cred.Groups = []uint32{uint32(gid)}
	}
	env := map[string]string{"HOME": u.HomeDir, "USER": u.Username, "LOGNAME": u.Username}
	return cred, env, nil
}
