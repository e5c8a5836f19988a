//go:build linux || darwin || freebsd || netbsd || openbsd

package portforward

import (
	"net"
	"syscall"
)

// readWaiter returns a function that blocks until c has something to read (data, EOF or an error) without
// holding a buffer, or nil when c has no file descriptor to poll. An idle connection then pins no copy
// buffer at all (10,000 idle connections must fit in 100 MB).
//
// It asks the runtime poller through syscall.RawConn.Read: the callback peeks one byte without blocking
// and reports "not ready" on EAGAIN, so the goroutine parks in the poller exactly as a blocking Read would.
// Peeking rather than assuming "not ready" on the first call matters: with edge-triggered polling, data
// that arrived before the wait would otherwise never wake it.
func readWaiter(c net.Conn) func() error {
	rc, ok := rawConn(c)
	if !ok {
		return nil
	}
	return func() error {
		return rc.Read(func(fd uintptr) bool {
			var one [1]byte
			_, _, err := syscall.Recvfrom(int(fd), one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR
		})
	}
}
