//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package portforward

import "net"

// readWaiter has no buffer-free wait on this platform: copies fall back to a small per-connection buffer.
func readWaiter(net.Conn) func() error { return nil }
