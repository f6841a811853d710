//go:build !linux

package rpc

// awaitExit is Linux-only (pidfd); elsewhere cmd.Wait waits in waitid/wait4 itself.
func awaitExit(int) bool { return false }
