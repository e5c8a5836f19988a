package main

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// delayProxy is a TCP proxy that injects round-trip time: every chunk read from one side is written to the
// other side half an RTT later, in order, without limiting bandwidth (a delay line, not a stop-and-wait
// relay). The kernel here has no netem, so this is how the harness puts distance between the tunnel client
// and the message gateway, and between the direct baseline's client and its server.
//
// Only data is delayed, not connection setup: a direct connection through the proxy costs one RTT per
// request/response, not the two of a real TCP handshake plus request. That favours the direct baseline,
// which makes the tunnel-versus-direct ratios conservative.
type delayProxy struct {
	ln       net.Listener
	upstream atomic.Pointer[string]
	oneWay   atomic.Int64 // nanoseconds

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	done  chan struct{}
	once  sync.Once
}

// maxQueuedBytes bounds what one direction of one proxied connection holds in its delay line; beyond it the
// reader stops reading and TCP backpressure reaches the sender, as a real path's buffers would.
const maxQueuedBytes = 16 << 20

// newDelayProxy listens on a loopback port. upstream may be set later with setUpstream, before the first
// connection arrives.
func newDelayProxy(upstream string, rtt time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	p.setUpstream(upstream)
	p.setRTT(rtt)
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

func (p *delayProxy) addr() string             { return p.ln.Addr().String() }
func (p *delayProxy) setUpstream(addr string)  { p.upstream.Store(&addr) }
func (p *delayProxy) setRTT(rtt time.Duration) { p.oneWay.Store(int64(rtt / 2)) }
func (p *delayProxy) rtt() time.Duration       { return 2 * time.Duration(p.oneWay.Load()) }
func (p *delayProxy) track(c net.Conn, add bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if add {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *delayProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *delayProxy) handle(client net.Conn) {
	defer p.wg.Done()
	up, err := net.Dial("tcp", *p.upstream.Load())
	if err != nil {
		client.Close()
		return
	}
	setNoDelay(client)
	setNoDelay(up)
	p.track(client, true)
	p.track(up, true)
	defer p.track(client, false)
	defer p.track(up, false)
	d := time.Duration(p.oneWay.Load())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipeDirection(up, client, d) }()
	go func() { defer wg.Done(); pipeDirection(client, up, d) }()
	wg.Wait()
	client.Close()
	up.Close()
}

func setNoDelay(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

// pipeDirection copies src to dst, delaying each chunk by d. EOF is forwarded as a half-close after the data
// before it; an error on either side closes both.
func pipeDirection(dst, src net.Conn, d time.Duration) {
	if d <= 0 {
		_, err := io.Copy(dst, src) // splice(2) on Linux: the direct baseline at 0 ms is kernel speed.
		finishDirection(dst, src, err)
		return
	}
	type chunk struct {
		b   []byte
		due time.Time
	}
	q := make(chan chunk, 256)
	var queued atomic.Int64
	space := make(chan struct{}, 1)
	writerDone := make(chan struct{})
	var werr error
	go func() {
		defer close(writerDone)
		t := time.NewTimer(time.Hour)
		defer t.Stop()
		for c := range q {
			if wait := time.Until(c.due); wait > 0 {
				t.Reset(wait)
				<-t.C
			}
			if werr == nil {
				_, werr = dst.Write(c.b)
				if werr != nil {
					src.Close() // unblock the reader
				}
			}
			queued.Add(-int64(len(c.b)))
			select {
			case space <- struct{}{}:
			default:
			}
		}
	}()
	buf := make([]byte, 64<<10)
	var rerr error
	for {
		for queued.Load() > maxQueuedBytes {
			<-space // the writer drains the queue even after a write error, so this always ends
		}
		n, err := src.Read(buf)
		if n > 0 {
			b := make([]byte, n)
			copy(b, buf[:n])
			queued.Add(int64(n))
			q <- chunk{b: b, due: time.Now().Add(d)}
		}
		if err != nil {
			rerr = err
			break
		}
	}
	close(q)
	<-writerDone
	if werr != nil {
		rerr = werr
	}
	finishDirection(dst, src, rerr)
}

func finishDirection(dst, src net.Conn, err error) {
	if err == nil || errors.Is(err, io.EOF) {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
			return
		}
	}
	dst.Close()
	src.Close()
}

func (p *delayProxy) Close() error {
	p.once.Do(func() {
		close(p.done)
		p.ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
	return nil
}
