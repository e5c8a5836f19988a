//go:build linux || darwin || freebsd || netbsd || openbsd

package portforward

import (
	"net"

	"golang.org/x/sys/unix"
)

// localRefuses reports whether the kernel would refuse a write to c right now: its send buffer is full
// because the local reader stopped taking data. It asks the kernel directly (poll for POLLOUT, no wait),
// so the answer does not depend on when the copy goroutine last ran: on a loaded machine a healthy
// connection's socket is writable even while its copy waits to be scheduled. A socket in error is not
// refusing (its write fails and ends the copy by itself); a connection without a file descriptor cannot be
// asked, and then the write in progress is the only evidence.
func localRefuses(c net.Conn) bool {
	rc, ok := rawConn(c)
	if !ok {
		return true
	}
	refuses := false
	err := rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, 0)
		refuses = err == nil && n == 0
	})
	return err == nil && refuses
}
