//go:build !linux

package portforward

import (
	"errors"
	"net"
	"sync/atomic"
)

// idlePoller is Linux-only (epoll); elsewhere an idle connection keeps its goroutine, blocked on the
// readability of its socket.
type idlePoller struct{}

func newIdlePoller() (*idlePoller, error) {
	return nil, errors.New("portforward: no idle poller on this platform")
}

func (*idlePoller) park(net.Conn, *atomic.Uint64, func()) bool { return false }
func (*idlePoller) wake(*atomic.Uint64)                        {}
func (*idlePoller) Close() error                               { return nil }
func (*idlePoller) parkedCount() int                           { return 0 }
