package forward

import "github.com/mcp-ssh-gateway/mcp-ssh-gateway/agent/tools"

// Merged must keep serving every tool, key administration included.
var (
	_ tools.Fleet    = (*Merged)(nil)
	_ tools.KeyAdmin = (*Merged)(nil)
)
