//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package portforward

import "net"

// localRefuses cannot ask the kernel here; the write in progress is the only evidence.
func localRefuses(net.Conn) bool { return true }
