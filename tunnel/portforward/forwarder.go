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
	conns     sync.WaitGroup
	// lastTick is when the session supervision last completed a round (UnixNano): Live fails when it stops.
	lastTick atomic.Int64
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
		drainCh: make(chan struct{})}
	for _, p := range cfg.Ports {
		f.pools = append(f.pools, newPool(f, p))
	}
	return f, nil
}

func (f *Forwarder) spec(p PortPair) session.Spec {
	return session.Spec{Target: f.cfg.Target, RemotePort: p.Remote, RemoteHost: f.cfg.RemoteHost,
		Document: f.cfg.Document, Reason: f.cfg.Reason}
}

// Started is closed once every listener is bound and every port's first sessions are ready (with
// Config.RetryStart: once every listener is bound).
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
// to finish, and every session is terminated (Flag TerminateSession + TerminateSession API) within
// TerminateTimeout; Run returns nil. A session that ends meanwhile, however it ends (the service's idle
// timeout or maximum duration, an administrator, a refused resume, a failed multiplexer, a stall), is
// replaced while the listener stays up. Run returns an error only when a first session cannot be started
// (unknown target, refused credentials) and Config.RetryStart is off.
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
		p.mu.Lock()
		p.ctx, p.slotWG = slotCtx, &slotsWG
		slots := p.slots
		p.mu.Unlock()
		for _, s := range slots {
			slotsWG.Add(1)
			go func() {
				defer slotsWG.Done()
				s.run(slotCtx, firsts)
			}()
		}
	}
	waitFor := len(f.pools) * f.cfg.Sessions
	if f.cfg.RetryStart {
		waitFor = 0 // the slots retry on their own; the listeners serve as soon as a session is up
	}
	var startErr error
	for range waitFor {
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
		f.stopSlots(cancelSlots)
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
	if f.cfg.ProbeInterval > 0 {
		go f.probeDestinations(stallStop, f.cfg.ProbeInterval)
	}
	defer close(stallStop)
	f.lastTick.Store(time.Now().UnixNano())
	close(f.started)

	<-ctx.Done()
	f.log.Info("Shutting down: draining connections", "timeout", f.cfg.DrainTimeout)
	f.drainOnce.Do(func() { f.draining.Store(true); close(f.drainCh) })
	f.closeListeners()
	acceptWG.Wait()
	f.stopSlots(cancelSlots)
	slotsWG.Wait()
	f.waitConns(f.cfg.DrainTimeout)
	for _, p := range f.pools {
		for _, s := range p.slotList() {
			s.abortAll(resetDrainDeadline)
		}
	}
	f.terminateAll()
	ended := f.waitConns(abortWait)
	if p := f.idle.Load(); p != nil && ended {
		// Only once no connection is left: one still parked would never resume.
		p.Close()
	}
	return nil
}

// Shutdown budget after the drain: TerminateTimeout for telling the service, then abortWait for reset
// connections to finish. MaxShutdownAfterDrain is their sum, what a pod's grace period must cover beyond
// the drain timeout.
const (
	// TerminateTimeout bounds ending every session at shutdown (Flag TerminateSession, then the
	// TerminateSession API), all sessions in parallel.
	TerminateTimeout      = 5 * time.Second
	abortWait             = 2 * time.Second
	MaxShutdownAfterDrain = TerminateTimeout + abortWait
)

// stopSlots ends every slot's run loop; no slot is added afterwards.
func (f *Forwarder) stopSlots(cancel context.CancelFunc) {
	for _, p := range f.pools {
		p.mu.Lock()
		p.stopped = true
		p.mu.Unlock()
	}
	cancel()
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

// terminateAll ends every live session of every slot, in parallel, within TerminateTimeout.
func (f *Forwarder) terminateAll() {
	ctx, cancel := context.WithTimeout(context.Background(), TerminateTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range f.pools {
		for _, s := range p.slotList() {
			p.mu.Lock()
			sess := s.sess
			p.mu.Unlock()
			if sess == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
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

// serveConn carries one accepted connection to its end (counted in f.conns until then). A connection over
// the port's limit, or one no session takes within ConnectTimeout, is reset at once.
func (f *Forwarder) serveConn(c net.Conn, p *pool) {
	if max := f.cfg.MaxConnections; max > 0 && p.conns.Add(1) > int64(max) {
		p.conns.Add(-1)
		p.countReset(resetConnectionLimit)
		f.log.Warn("Resetting a connection over the port's limit", "port", p.port.String(), "limit", max, "remote", c.RemoteAddr().String())
		resetConn(c)
		f.conns.Done()
		return
	} else if max <= 0 {
		p.conns.Add(1)
	}
	done := func() {
		p.conns.Add(-1)
		f.conns.Done()
	}
	// The deadline spans the retries, but its context and timer are released once a session is acquired:
	// held for a connection's whole life they cost ~400 B per idle connection.
	accepted := time.Now()
	deadline := accepted.Add(f.cfg.ConnectTimeout)
	for try := 0; try < 3; try++ {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		s, sess, err := p.acquire(ctx)
		cancel()
		if err == nil && try == 0 {
			p.connectSeconds.observe(time.Since(accepted).Seconds())
		}
		if err != nil {
			f.log.Warn("Resetting connection", "port", p.port.String(), "remote", c.RemoteAddr().String(), "err", err)
			p.countReset(resetNoSession)
			resetConn(c)
			done()
			return
		}
		err = s.handle(c, sess, done)
		if err == nil {
			return
		}
		f.log.Debug("Retrying connection on another session", "port", p.port.String(), "err", err)
	}
	p.countReset(resetNoSession)
	resetConn(c)
	done()
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
				for _, s := range p.slotList() {
					check(s, now)
				}
			}
			f.lastTick.Store(time.Now().UnixNano())
		}
	}
}

// readyGrace is how long a port whose session the service just ended still counts as ready while the
// replacement starts: connections that arrive meanwhile wait for it (ConnectTimeout) rather than fail, so
// a probe in that moment must not take the pod out of its Service.
const readyGrace = 10 * time.Second

// LivenessTimeout: Live fails when the session supervision has not completed a round for this long.
const LivenessTimeout = 2 * time.Minute

// Live returns nil unless the forwarder cannot make progress at all: its session supervision has not
// completed a round for LivenessTimeout (a wedged process the kubelet should restart). Sessions that are
// down, retrying or stalled do not make it fail: they heal without a restart.
func (f *Forwarder) Live() error {
	select {
	case <-f.started:
	default:
		return nil
	}
	if f.draining.Load() {
		return nil
	}
	if d := time.Since(time.Unix(0, f.lastTick.Load())); d > LivenessTimeout {
		return fmt.Errorf("session supervision has not run for %s", d.Round(time.Second))
	}
	return nil
}

// Ready returns nil when every port can carry a connection now: it has at least one session that is
// handshaken, attached and not stalled (sent frames get acks), or one is starting in place of a session
// the service just ended (readyGrace), or (ReconnectLazy) one starts on the next connection. Otherwise it
// says what is missing, with the last error of the port.
func (f *Forwarder) Ready() error {
	if f.draining.Load() {
		return errors.New("shutting down")
	}
	for _, ps := range f.Status().Ports {
		if !ps.Ready {
			if ps.LastError != "" {
				return fmt.Errorf("port %s has no ready session: %s", ps.Port, ps.LastError)
			}
			return fmt.Errorf("port %s has no ready session", ps.Port)
		}
	}
	select {
	case <-f.started:
	default:
		return errors.New("starting sessions")
	}
	return nil
}

// Status is the forwarder's state for readiness endpoints: per port, whether it can carry a connection,
// its sessions' states and the last error, classified.
type Status struct {
	Ready bool         `json:"ready"`
	Ports []PortStatus `json:"ports"`
}

// PortStatus is one port of Status.
type PortStatus struct {
	Port     string   `json:"port"`
	Ready    bool     `json:"ready"`
	Sessions []string `json:"sessions"` // state per slot: connecting, ready, resuming, stalled, idle, none
	// Reason classifies LastError (session.Reason): TargetNotConnected, AccessDenied, Throttled, ...
	Reason    string `json:"reason,omitempty"`
	LastError string `json:"lastError,omitempty"`
	// Destination is what the port's streams last saw of the destination: reachable, unreachable or
	// unknown (no answered stream yet); DestinationError says why it is unreachable.
	// DestinationAt is when that was last seen (a stream's answer or ConnectToPortError).
	Destination      string     `json:"destination"`
	DestinationAt    *time.Time `json:"destinationAt,omitempty"`
	DestinationError string     `json:"destinationError,omitempty"`
}

// Status reports every port's state.
func (f *Forwarder) Status() Status {
	st := Status{Ready: !f.draining.Load()}
	now := time.Now()
	for _, p := range f.pools {
		ps := p.status(now)
		st.Ready = st.Ready && ps.Ready
		st.Ports = append(st.Ports, ps)
	}
	select {
	case <-f.started:
	default:
		st.Ready = false
	}
	return st
}
