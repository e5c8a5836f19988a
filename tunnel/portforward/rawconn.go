package portforward

import (
	"net"
	"syscall"
)

// rawConn is c's file descriptor access, or false when c has none (a pipe, a wrapped connection): the
// socket-level shortcuts (readability without a buffer, send-buffer checks, the idle poller) are then
// skipped.
func rawConn(c net.Conn) (syscall.RawConn, bool) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, false
	}
	rc, err := sc.SyscallConn()
	return rc, err == nil
}
