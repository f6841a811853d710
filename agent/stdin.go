package main

import (
	"os"
	"syscall"
)

// pollableStdin returns standard input as a file the Go runtime reads through its poller,
// when it is a pipe or a socket (how MCP clients start the gateway), else os.Stdin.
//
// Go opens an inherited stdin in blocking mode, so the MCP server's read of the next request
// holds one of the runtime's processors (a P) in the read system call while the client is
// silent, until the runtime's monitor takes it back, up to 10 ms later: with two processors,
// every other goroutine is left one. A trace of benchmark row g showed the read holding a P
// for 1–13 ms at a time, 844 ms in 2.5 s. In non-blocking mode the read parks the goroutine.
// A terminal is left alone: its mode is shared with the shell that started the gateway.
func pollableStdin() *os.File {
	if f := pollable(syscall.Stdin, "/dev/stdin"); f != nil {
		return f
	}
	return os.Stdin
}

// pollable puts descriptor fd in non-blocking mode and returns it as a new file that the
// runtime's poller serves, or nil when fd is not a pipe or a socket.
func pollable(fd int, name string) *os.File {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil
	}
	if kind := st.Mode & syscall.S_IFMT; kind != syscall.S_IFIFO && kind != syscall.S_IFSOCK {
		return nil
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), name)
}
