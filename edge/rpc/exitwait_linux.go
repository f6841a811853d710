package rpc

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once process pid (a child not yet reaped) has exited, waiting in Go's
// network poller on a pidfd instead of in a blocking waitid: a thread blocked in a system
// call makes the runtime hand its processor to another thread and take it back when the
// call returns, which costs a run_command more than the wait itself on an edge with one
// processor for Go. The process is left for cmd.Wait to reap (WNOWAIT), which then returns
// at once. False if the kernel has no pidfd (before Linux 5.3): the caller just waits.
func awaitExit(pid int) bool {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return false
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	exited := false
	err = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		werr := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
		if werr != nil {
			return true // e.g. ECHILD: nothing to wait for here; cmd.Wait reports it
		}
		exited = info.Signo == int32(unix.SIGCHLD) // Linux leaves it zero while the child runs
		return exited
	})
	return err == nil && exited
}
