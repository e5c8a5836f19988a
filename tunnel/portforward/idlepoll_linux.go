//go:build linux

package portforward

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// idlePoller holds local connections that have been idle for idleParkAfter in one epoll set of its own, so
// that an idle connection costs no goroutine and no goroutine stack (10,000 idle connections must fit in
// 100 MB, and a waiting goroutine's stack would be most of an idle connection's cost). When a parked socket
// becomes readable (data, EOF, error or hang-up), or when the connection is closed from elsewhere (wake), its
// resume function runs on a new goroutine, exactly once.
//
// Sockets are registered level-triggered and one-shot: arming a socket that already has data reports it at
// once, so nothing that arrives between the idle timeout and the arming is missed, and one readiness wakes
// one resume. The epoll descriptor itself is waited on through the runtime's poller (an epoll set is
// pollable), so the poller holds neither a goroutine stack of consequence nor a thread blocked in
// epoll_wait, and closing it ends its loop.
//
// A socket stays in the set, disarmed, between parks, and leaves it when the connection closes its
// descriptor. Readiness is matched to its resume function by a token, never by descriptor number, so a
// stale event for a closed connection finds no token and is ignored.
type idlePoller struct {
	ep   *os.File
	epfd int
	done chan struct{}

	mu     sync.Mutex
	next   uint64
	parked map[uint64]func()
}

func newIdlePoller() (*idlePoller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	p := &idlePoller{ep: os.NewFile(uintptr(fd), "portforward-idle-poller"), epfd: fd, done: make(chan struct{}),
		parked: map[uint64]func(){}}
	rc, err := p.ep.SyscallConn()
	if err != nil {
		p.ep.Close()
		return nil, err
	}
	go p.loop(rc)
	return p, nil
}

// loop waits for the epoll set to have events and starts the resume function of each, until Close.
func (p *idlePoller) loop(rc syscall.RawConn) {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	for {
		var ready []func()
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, err := syscall.EpollWait(int(fd), events, 0)
				if err == syscall.EINTR {
					continue
				}
				if err != nil || n <= 0 {
					return false // nothing ready: wait for the runtime's poller to report the set readable
				}
				ready = p.takeEvents(events[:n])
				return true
			}
		})
		if err != nil {
			return // closed
		}
		for _, resume := range ready {
			go resume()
		}
	}
}

func (p *idlePoller) takeEvents(events []syscall.EpollEvent) []func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	ready := make([]func(), 0, len(events))
	for _, ev := range events {
		token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
		if resume, ok := p.parked[token]; ok {
			delete(p.parked, token)
			ready = append(ready, resume)
		}
	}
	return ready
}

// take removes a parked token and returns its resume function, or nil if an event or wake took it first.
func (p *idlePoller) take(token uint64) func() {
	p.mu.Lock()
	defer p.mu.Unlock()
	resume := p.parked[token]
	delete(p.parked, token)
	return resume
}

// park arms c's socket and reports true: resume then runs on a new goroutine once the socket is readable or
// wake(slot) is called. slot holds the parked token meanwhile (0 when not parked), for wake. It reports
// false, with nothing armed, when the socket cannot be armed (the connection was closed already, or it has
// no descriptor): the caller then reads on, and its read reports what happened.
func (p *idlePoller) park(c net.Conn, slot *atomic.Uint64, resume func()) bool {
	rc, ok := rawConn(c)
	if !ok {
		return false
	}
	p.mu.Lock()
	p.next++
	token := p.next
	p.parked[token] = func() {
		slot.CompareAndSwap(token, 0)
		resume()
	}
	p.mu.Unlock()
	// Published before arming: a close from another goroutine after this point finds the token (wake).
	slot.Store(token)

	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd: int32(uint32(token)), Pad: int32(uint32(token >> 32))}
	var armErr error
	err := rc.Control(func(fd uintptr) {
		armErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		if armErr == syscall.ENOENT { // first park of this socket
			armErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil && armErr == nil {
		return true
	}
	// Not armed. Whoever takes the token runs the continuation: if a wake took it, resume is already on its
	// way and the caller must stop here.
	if p.take(token) == nil {
		return true
	}
	slot.CompareAndSwap(token, 0)
	return false
}

// wake resumes the connection parked under slot now, if it is parked. Closing a socket removes it from the
// epoll set without an event, so whoever closes a connection that may be parked calls this after the close.
func (p *idlePoller) wake(slot *atomic.Uint64) {
	token := slot.Swap(0)
	if token == 0 {
		return
	}
	if resume := p.take(token); resume != nil {
		go resume()
	}
}

// Close stops the poller. Every connection must have ended before: a connection still parked would never
// resume.
func (p *idlePoller) Close() error {
	err := p.ep.Close()
	<-p.done
	return err
}

// parkedCount is the number of parked connections (metrics, tests).
func (p *idlePoller) parkedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}
