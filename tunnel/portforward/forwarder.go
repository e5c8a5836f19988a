package portforward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// Forwarder serves every port of a Config: a listener and a session pool per port.
type Forwarder struct {
	cfg     Config
	starter Starter
	log     *slog.Logger
	pools   []*pool

	listenMu  sync.Mutex
	listeners []net.Listener
	started   chan struct{}

	draining  atomic.Bool
	drainCh   chan struct{}
	drainOnce sync.Once
	fatalCh   chan error
	conns     sync.WaitGroup
	// idle holds idle local connections without a goroutine each (nil where the platform has no poller);
	// it lives from Run's start until every connection has ended. Set once by Run; read by connections and
	// metrics.
	idle atomic.Pointer[idlePoller]
}

// New validates cfg. starter is usually a *session.Client.
func New(cfg Config, starter Starter) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if starter == nil {
		return nil, errors.New("portforward: a session starter is required")
	}
	cfg = cfg.withDefaults()
	f := &Forwarder{cfg: cfg, starter: starter, log: cfg.Logger, started: make(chan struct{}),
		drainCh: make(chan struct{}), fatalCh: make(chan error, 1)}
	for _, p := range cfg.Ports {
		pl := &pool{f: f, port: p, changed: make(chan struct{})}
		for i := range cfg.Sessions {
			pl.slots = append(pl.slots, &slot{f: f, pool: pl, idx: i, port: p, log: f.log})
		}
		f.pools = append(f.pools, pl)
	}
	return f, nil
}

func (f *Forwarder) spec(p PortPair) session.Spec {
	return session.Spec{Target: f.cfg.Target, RemotePort: p.Remote, RemoteHost: f.cfg.RemoteHost,
		Document: f.cfg.Document, Reason: f.cfg.Reason}
}

// fail ends Run with err (channel_closed from the service).
func (f *Forwarder) fail(err error) {
	select {
	case f.fatalCh <- err:
	default:
	}
}

// Started is closed once every listener is bound and every port's first sessions are ready.
func (f *Forwarder) Started() <-chan struct{} { return f.started }

// Addrs returns the bound listener addresses in port order (ephemeral ports resolved); valid after Started.
func (f *Forwarder) Addrs() []net.Addr {
	f.listenMu.Lock()
	defer f.listenMu.Unlock()
	out := make([]net.Addr, len(f.listeners))
	for i, l := range f.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Run binds every listener (before any session, so "address in use" costs no session), starts the first
// sessions of every port, prints "Forwarding from ADDR:LOCAL -> TARGET:REMOTE" per port and serves until
// ctx ends. Then it drains: readiness goes false, listeners close, open connections get up to DrainTimeout
// to finish, and every session is terminated (Flag TerminateSession + TerminateSession API); Run returns
// nil. It returns an error when a first session cannot be started (unknown target, refused credentials)
// or when the service closes a session with channel_closed (a *datachannel.ChannelClosedError, wrapped).
func (f *Forwarder) Run(ctx context.Context) error {
	for _, p := range f.pools {
		l, err := net.Listen("tcp", listenAddr(f.cfg.Address, p.port.Local))
		if err != nil {
			f.closeListeners()
			return fmt.Errorf("cannot listen on %s: %w", listenAddr(f.cfg.Address, p.port.Local), err)
		}
		f.listenMu.Lock()
		f.listeners = append(f.listeners, l)
		f.listenMu.Unlock()
		// Resolve an ephemeral local port now, before any goroutine reads the pair.
		p.port.Local = l.Addr().(*net.TCPAddr).Port
		for _, s := range p.slots {
			s.port = p.port
		}
	}

	slotCtx, cancelSlots := context.WithCancel(context.Background())
	defer cancelSlots()
	var slotsWG sync.WaitGroup
	firsts := make(chan error, len(f.pools)*f.cfg.Sessions)
	for _, p := range f.pools {
		for _, s := range p.slots {
			slotsWG.Add(1)
			go func() {
				defer slotsWG.Done()
				s.run(slotCtx, firsts)
			}()
		}
	}
	var startErr error
	for range len(f.pools) * f.cfg.Sessions {
		select {
		case err := <-firsts:
			if err != nil && startErr == nil {
				startErr = err
			}
		case <-ctx.Done():
			if startErr == nil {
				startErr = ctx.Err()
			}
		}
		if startErr != nil {
			break
		}
	}
	if startErr != nil {
		cancelSlots()
		f.closeListeners()
		slotsWG.Wait()
		f.terminateAll()
		if ctx.Err() != nil && errors.Is(startErr, ctx.Err()) {
			return nil
		}
		return startErr
	}

	for i, p := range f.pools {
		addr := f.listeners[i].Addr().(*net.TCPAddr)
		remote := f.cfg.Target
		if f.cfg.RemoteHost != "" {
			remote = f.cfg.RemoteHost
		}
		fmt.Fprintf(f.cfg.Out, "Forwarding from %s -> %s:%d\n",
			net.JoinHostPort(f.cfg.Address, strconv.Itoa(addr.Port)), remote, p.port.Remote)
	}
	if p, err := newIdlePoller(); err != nil {
		f.log.Debug("Idle connections keep a goroutine each", "reason", err)
	} else {
		f.idle.Store(p)
	}
	var acceptWG sync.WaitGroup
	for i, p := range f.pools {
		acceptWG.Add(1)
		go func() {
			defer acceptWG.Done()
			f.acceptLoop(f.listeners[i], p)
		}()
	}
	stallStop := make(chan struct{})
	go f.everySlot(stallStop, max(f.cfg.StallTimeout/4, 100*time.Millisecond), (*slot).checkStall)
	// The stalled-stream watchdog ticks at a fortieth of its timeout so a reset comes within 2.5% of it.
	go f.everySlot(stallStop, max(f.cfg.StreamStallTimeout/40, 20*time.Millisecond), (*slot).resetStalledStreams)
	defer close(stallStop)
	close(f.started)

	var runErr error
	select {
	case <-ctx.Done():
		f.log.Info("Shutting down: draining connections", "timeout", f.cfg.DrainTimeout)
	case runErr = <-f.fatalCh:
		f.log.Warn("Session closed by the service", "err", runErr)
	}
	f.drainOnce.Do(func() { f.draining.Store(true); close(f.drainCh) })
	f.closeListeners()
	acceptWG.Wait()
	cancelSlots()
	slotsWG.Wait()
	if runErr == nil {
		f.waitConns(f.cfg.DrainTimeout)
	}
	for _, p := range f.pools {
		for _, s := range p.slots {
			s.abortAll()
		}
	}
	f.terminateAll()
	ended := f.waitConns(5 * time.Second)
	if p := f.idle.Load(); p != nil && ended {
		// Only once no connection is left: one still parked would never resume.
		p.Close()
	}
	return runErr
}

func (f *Forwarder) waitConns(d time.Duration) bool {
	done := make(chan struct{})
	go func() { f.conns.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

func (f *Forwarder) closeListeners() {
	f.listenMu.Lock()
	defer f.listenMu.Unlock()
	for _, l := range f.listeners {
		l.Close()
	}
}

// terminateAll ends every live session of every slot, in parallel.
func (f *Forwarder) terminateAll() {
	var wg sync.WaitGroup
	for _, p := range f.pools {
		for _, s := range p.slots {
			p.mu.Lock()
			sess := s.sess
			p.mu.Unlock()
			if sess == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				sess.Terminate(ctx)
				s.uninstall(sess)
			}()
		}
	}
	wg.Wait()
}

func (f *Forwarder) acceptLoop(l net.Listener, p *pool) {
	var tempDelay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !f.draining.Load() {
				// EMFILE and the like: back off instead of spinning, like net/http does.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(tempDelay)
				select {
				case <-t.C:
				case <-f.drainCh:
					t.Stop()
					return
				}
				continue
			}
			return
		}
		tempDelay = 0
		f.conns.Add(1)
		go f.serveConn(c, p)
	}
}

// serveConn carries one accepted connection to its end (counted in f.conns until then).
func (f *Forwarder) serveConn(c net.Conn, p *pool) {
	// The deadline spans the retries, but its context and timer are released once a session is acquired:
	// held for a connection's whole life they cost ~400 B per idle connection (issue 4 scale profile).
	deadline := time.Now().Add(f.cfg.ConnectTimeout)
	for try := 0; try < 3; try++ {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		s, sess, err := p.acquire(ctx)
		cancel()
		if err != nil {
			f.log.Warn("Dropping connection", "port", p.port.String(), "remote", c.RemoteAddr().String(), "err", err)
			c.Close()
			f.conns.Done()
			return
		}
		err = s.handle(c, sess, f.conns.Done)
		if err == nil {
			return
		}
		f.log.Debug("Retrying connection on another session", "port", p.port.String(), "err", err)
	}
	c.Close()
	f.conns.Done()
}

// everySlot calls check on every slot of every port each interval until stop is closed; the session stall
// detector and the stalled-stream watchdog run this way.
func (f *Forwarder) everySlot(stop <-chan struct{}, interval time.Duration, check func(*slot, time.Time)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for _, p := range f.pools {
				for _, s := range p.slots {
					check(s, now)
				}
			}
		}
	}
}

// Ready returns nil when every port has at least one session that is handshaken, attached and not stalled
// (the data path moves: sent frames get acks), and the forwarder is not draining; otherwise what is missing.
func (f *Forwarder) Ready() error {
	if f.draining.Load() {
		return errors.New("shutting down")
	}
	select {
	case <-f.started:
	default:
		return errors.New("starting sessions")
	}
	for _, p := range f.pools {
		ok := false
		p.mu.Lock()
		for _, s := range p.slots {
			if s.sess != nil && !s.stalled && s.sess.State() == session.StateReady {
				ok = true
				break
			}
		}
		p.mu.Unlock()
		if !ok {
			return fmt.Errorf("port %s has no ready session", p.port)
		}
	}
	return nil
}
