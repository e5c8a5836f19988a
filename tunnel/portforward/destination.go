package portforward

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Destination states of PortStatus.Destination.
const (
	DestinationUnknown     = "unknown"     // no stream has reached the agent's dial yet
	DestinationReachable   = "reachable"   // the latest stream that got an answer reached the destination
	DestinationUnreachable = "unreachable" // the agent could not connect the latest stream (ConnectToPortError)
)

// destinationRecord is what the port's streams last told about its destination. Only streams that got an
// answer from the agent count: data or a clean end says the agent's dial succeeded, ConnectToPortError says
// it failed; a stream lost with its session says nothing about the destination.
type destinationRecord struct {
	mu       sync.Mutex
	reached  time.Time // the latest stream that received data or a clean end
	refused  time.Time // the latest ConnectToPortError
	refusals uint64
}

func (d *destinationRecord) reachedNow() {
	d.mu.Lock()
	d.reached = time.Now()
	d.mu.Unlock()
}

func (d *destinationRecord) refusedNow() {
	d.mu.Lock()
	d.refused = time.Now()
	d.refusals++
	d.mu.Unlock()
}

// state is the destination's state, when it was last observed, and, when unreachable, what to tell the user.
func (d *destinationRecord) state(dest string) (state string, at time.Time, problem string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case d.reached.IsZero() && d.refused.IsZero():
		return DestinationUnknown, time.Time{}, ""
	case d.refused.After(d.reached):
		return DestinationUnreachable, d.refused, fmt.Sprintf("the SSM Agent could not connect to %s (ConnectToPortError; refusals so far: %d)",
			dest, d.refusals)
	}
	return DestinationReachable, d.reached, ""
}

// destination is the address the agent dials for this pool's port, as the agent sees it.
func (p *pool) destination() string {
	host := "localhost"
	if h := p.f.cfg.RemoteHost; h != "" {
		host = h
	}
	return net.JoinHostPort(host, strconv.Itoa(p.port.Remote))
}

// probeTimeout bounds one probe: the agent's dial timeout (10 s in the SSM Agent) and a round trip.
const probeTimeout = 15 * time.Second

// probeDestinations opens one connection through each ready port's own listener every interval, until stop
// is closed. The probe is an ordinary connection: it is carried as a stream, the agent dials the
// destination, and the probe ends its side at once; the agent's answer (its FIN after the destination
// closed, or ConnectToPortError) updates the port's destinationRecord like any other connection's.
func (f *Forwarder) probeDestinations(stop <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for i, p := range f.pools {
			if p.status(time.Now()).Ready {
				go probeOnce(loopbackFor(f.listeners[i].Addr().(*net.TCPAddr)))
			}
		}
	}
}

// probeOnce connects to addr, ends its side at once, and waits for the other end, reset or timeout.
func probeOnce(addr string) {
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(probeTimeout))
	if cw, ok := c.(closeWriter); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, c)
}

// loopbackFor is the address to dial to reach a listener bound to a, which may be unspecified (0.0.0.0, ::).
func loopbackFor(a *net.TCPAddr) string {
	ip := a.IP
	switch {
	case ip == nil || ip.Equal(net.IPv4zero):
		ip = net.IPv4(127, 0, 0, 1)
	case ip.Equal(net.IPv6unspecified):
		ip = net.IPv6loopback
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}
