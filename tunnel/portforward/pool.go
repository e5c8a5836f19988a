package portforward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// Starter starts sessions; *session.Client is the production one.
type Starter interface {
	Start(ctx context.Context, spec session.Spec, onState func(session.State)) (*session.Session, error)
}

type mode int

const (
	modeMux mode = iota
	modeBasic
)

// pool is the set of independent sessions of one port (--sessions N). A new connection goes to the available
// session with the fewest open streams; a session that is connecting, resuming, stalled or closed takes
// none, and a basic-mode session takes one connection in its life (§9.3: it carries one TCP connection, and
// bytes of an ended one may still be in flight), so in basic mode the pool grows to one session per
// concurrent connection, up to Config.MaxBasicSessions.
type pool struct {
	f    *Forwarder
	port PortPair

	mu      sync.Mutex
	slots   []*slot       // grows only (basic mode); read through slotList
	changed chan struct{} // closed and replaced on every change that may make a slot available
	wanted  chan struct{} // closed and replaced when a connection waits for a session (lazy slots start one)
	lastErr error         // why the latest session start or session failed, for readiness; nil once one is up

	ctx     context.Context // the slots' lifetime (set by Forwarder.Run before any slot runs)
	slotWG  *sync.WaitGroup
	stopped bool // set before ctx is cancelled: no slot may be added once Run waits for them

	conns  atomic.Int64 // local connections accepted and not ended (Config.MaxConnections)
	resets resetCounts
	ends   endCounts
	dest   destinationRecord

	connectSeconds *histogram // from accepting a local connection to a session taking it (PortStats.ConnectSeconds)
}

// status is the port's PortStatus. A port is ready while a session can take a connection now, or is idle
// (ReconnectLazy), or was replaced less than readyGrace ago.
func (p *pool) status(now time.Time) PortStatus {
	ps := PortStatus{Port: p.port.String()}
	var at time.Time
	ps.Destination, at, ps.DestinationError = p.dest.state(p.destination())
	if !at.IsZero() {
		ps.DestinationAt = &at
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		state := "none"
		switch {
		case s.sess != nil && s.stalled:
			state = "stalled"
		case s.sess != nil:
			state = s.sess.State().String()
		case s.idle:
			state = "idle"
		}
		ps.Sessions = append(ps.Sessions, state)
		if state == "ready" && s.replacing == endNone || state == "idle" ||
			!s.gapSince.IsZero() && now.Sub(s.gapSince) < readyGrace {
			ps.Ready = true
		}
	}
	if p.lastErr != nil {
		ps.LastError, ps.Reason = p.lastErr.Error(), session.Reason(p.lastErr)
	}
	return ps
}

func newPool(f *Forwarder, port PortPair) *pool {
	p := &pool{f: f, port: port, changed: make(chan struct{}), wanted: make(chan struct{}),
		connectSeconds: newHistogram(connectBuckets)}
	for range f.cfg.Sessions {
		p.slots = append(p.slots, p.newSlotLocked())
	}
	return p
}

func (p *pool) newSlotLocked() *slot {
	return &slot{f: p.f, pool: p, idx: len(p.slots), port: p.port, log: p.f.log}
}

// slotList is a snapshot of the pool's slots (the slice only grows, so the snapshot stays valid).
func (p *pool) slotList() []*slot {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.slots
}

func (p *pool) notify() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

func (p *pool) countReset(why resetReason) { p.resets[why].Add(1) }

// acquire reserves a stream on the best available slot, waiting for one until ctx ends or the forwarder
// drains.
func (p *pool) acquire(ctx context.Context) (*slot, *session.Session, error) {
	for {
		p.mu.Lock()
		var best *slot
		busyBasic := 0
		for _, s := range p.slots {
			if s.availableLocked() && (best == nil || s.open < best.open) {
				best = s
			}
			if s.mode == modeBasic && s.sess != nil && s.open > 0 {
				busyBasic++
			}
		}
		if best != nil {
			best.open++
			best.used = true
			sess := best.sess
			p.mu.Unlock()
			return best, sess, nil
		}
		if busyBasic == len(p.slots) && len(p.slots) < p.f.cfg.MaxBasicSessions && p.ctx != nil && !p.stopped {
			// Every session is a busy basic one: this connection gets a session of its own.
			s := p.newSlotLocked()
			p.slots = append(p.slots, s)
			p.slotWG.Add(1)
			go func() {
				defer p.slotWG.Done()
				s.run(p.ctx, nil)
			}()
		}
		close(p.wanted)
		p.wanted = make(chan struct{})
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("no session became ready for port %s: %w", p.port, ctx.Err())
		case <-p.f.drainCh:
			return nil, nil, errDraining
		}
	}
}

func (p *pool) release(s *slot) {
	p.mu.Lock()
	s.open--
	retire := s.mode == modeBasic && s.open == 0 && s.sess != nil
	sess := s.sess
	p.mu.Unlock()
	if retire {
		// A basic session has carried its one connection: replace it so that output still in flight for
		// that connection can never reach the next one.
		s.replace(sess, endBasicDone)
	}
	p.notify()
}

var errDraining = errors.New("shutting down")

// slot is one place in a pool: it owns one session at a time and replaces it when it ends.
type slot struct {
	f    *Forwarder
	pool *pool
	idx  int
	port PortPair
	log  *slog.Logger

	// guarded by pool.mu
	sess      *session.Session
	mux       *smux.Session
	streams   *streamTable // of mux
	basic     *basicMux
	mode      mode
	open      int
	used      bool // the session was given a connection (basic mode: its one)
	stalled   bool
	idle      bool      // lazy: no session, one starts when a connection waits
	gapSince  time.Time // a session ended and its replacement is starting (readiness grace)
	replacing endReason // why the slot itself ended the current session (endNone: it did not)

	cmu   sync.Mutex
	conns map[*fwdConn]struct{}

	fmu             sync.Mutex
	pendingRefusals []time.Time

	// metrics, cumulative over the slot's sessions
	streamsTotal  atomic.Uint64
	starts        atomic.Uint64
	connectErrors atomic.Uint64
	stalledResets atomic.Uint64
	toLocalCopies atomic.Int64 // agent → local copy goroutines running now
	smu           sync.Mutex
	base          datachannel.Stats
	baseResumes   uint64
	stallAcks     uint64
	stallSince    time.Time
	downSince     time.Time // the session has been resuming since (Config.PartitionTimeout)
}

func (s *slot) availableLocked() bool {
	if s.sess == nil || s.stalled || s.replacing != endNone || s.sess.State() != session.StateReady {
		return false
	}
	if s.mode == modeBasic {
		return !s.used && s.basic != nil
	}
	return s.mux != nil && !s.mux.IsClosed()
}

// run keeps a session in the slot until ctx ends. The first start's result is sent on first (nil: nobody
// waits for it); later failures, and first ones with Config.RetryStart, are retried with capped backoff
// while the listener stays up. A session that ends for any reason other than our own shutdown is replaced:
// at once (with jitter) under ReconnectEager, or when a connection waits under ReconnectLazy.
func (s *slot) run(ctx context.Context, first chan<- error) {
	var bo backoff
	lazy := false
	for {
		if lazy && !s.waitForDemand(ctx) {
			return
		}
		lazy = false
		spec := s.f.spec(s.port)
		sess, err := s.f.starter.Start(ctx, spec, func(session.State) { s.pool.notify() })
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.pool.mu.Lock()
			s.pool.lastErr, s.gapSince = err, time.Time{}
			s.pool.mu.Unlock()
			if first != nil && !s.f.cfg.RetryStart {
				first <- err
				return
			}
			d := bo.next()
			s.log.Warn("Failed to start a session, retrying", "port", s.port.String(), "slot", s.idx, "in", d.Round(time.Millisecond), "err", err)
			if !sleepCtx(ctx, d) {
				return
			}
			continue
		}
		m, err := sessionMode(sess.Handshake())
		if err != nil {
			sess.Terminate(ctx)
			s.pool.mu.Lock()
			s.pool.lastErr = err
			s.pool.mu.Unlock()
			if first != nil && !s.f.cfg.RetryStart {
				first <- err
				return
			}
			s.log.Error("Refusing the session", "port", s.port.String(), "slot", s.idx, "err", err)
			if !sleepCtx(ctx, bo.next()) {
				return
			}
			continue
		}
		bo.reset()
		s.starts.Add(1)
		s.install(sess, m)
		if first != nil {
			first <- nil
			first = nil
		}
		select {
		case <-sess.Done():
		case <-ctx.Done():
			return // the forwarder drains and terminates
		}
		why := s.uninstall(sess)
		if why == endShutdown {
			return
		}
		s.pool.ends.add(why)
		if why != endBasicDone {
			s.log.Warn("Session ended, starting a new one; the listener stays up", "port", s.port.String(), "slot", s.idx,
				"session", sess.ID(), "reason", why.String(), "err", sess.Err())
		}
		if s.f.cfg.Reconnect == ReconnectLazy && why.byService() {
			lazy = true
			continue
		}
		s.pool.mu.Lock()
		s.gapSince = time.Now()
		s.pool.mu.Unlock()
		// Jitter, so replicas whose sessions the service ended at the same moment do not all start (and
		// later end) together.
		if j := s.f.cfg.ReconnectJitter; j > 0 && !sleepCtx(ctx, rand.N(j)) {
			return
		}
	}
}

// waitForDemand parks a lazy slot until a connection waits for a session; false when ctx ended first.
func (s *slot) waitForDemand(ctx context.Context) bool {
	s.pool.mu.Lock()
	s.idle = true
	wanted := s.pool.wanted
	s.pool.mu.Unlock()
	s.pool.notify()
	defer func() {
		s.pool.mu.Lock()
		s.idle = false
		s.pool.mu.Unlock()
	}()
	select {
	case <-wanted:
		return true
	case <-ctx.Done():
		return false
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// replace ends sess on the slot's own decision (why), unless it already ended or was replaced: the
// service is told (Flag TerminateSession, TerminateSession API) within a bound, and the slot's run loop
// then starts a new session. Its connections are reset.
func (s *slot) replace(sess *session.Session, why endReason) {
	s.pool.mu.Lock()
	if s.sess != sess || s.replacing != endNone || s.pool.ctx == nil || s.pool.ctx.Err() != nil {
		// Already gone, already being replaced, or the forwarder is shutting down and terminates it.
		s.pool.mu.Unlock()
		return
	}
	s.replacing = why
	s.pool.mu.Unlock()
	s.pool.notify()
	if why != endBasicDone {
		s.log.Warn("Replacing the session", "port", s.port.String(), "slot", s.idx, "session", sess.ID(), "reason", why.String())
		// Its connections cannot be carried any more: reset them now rather than after the goodbye.
		s.abortAll(resetSessionLost)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), replaceTerminateTimeout)
		defer cancel()
		sess.Terminate(ctx)
	}()
}

// replaceTerminateTimeout bounds telling the service about a session the slot gave up on: the flag and
// the API call are a courtesy (the service ends it by its idle timeout otherwise), and the data path it
// serves is already broken.
const replaceTerminateTimeout = 5 * time.Second

// sessionMode selects multiplexed or basic mode from the handshake (§9.2). A session whose document does not
// offer port forwarding (AWS-StartSSHSession and the like: a stdin/stdout stream) is refused before any byte
// flows: carrying a TCP connection over it would mix protocols.
func sessionMode(hs datachannel.HandshakeResult) (mode, error) {
	if hs.Properties.Type != message.LocalPortForwarding {
		return 0, fmt.Errorf("%w: the agent offered a %q session, not port forwarding (type %q): use a port-forwarding document such as AWS-StartPortForwardingSession",
			session.ErrInvalidDocument, hs.SessionType, hs.Properties.Type)
	}
	if hs.AgentVersion.Compare(message.LastBasicAgentVersion) > 0 {
		return modeMux, nil
	}
	return modeBasic, nil
}

// install wires a ready session into the slot in the mode the handshake selected (§9.2).
func (s *slot) install(sess *session.Session, m mode) {
	hs := sess.Handshake()
	var mux *smux.Session
	var basic *basicMux
	var streams *streamTable
	if m == modeMux {
		cfg := smux.DefaultConfig()
		cfg.Version = 1
		// The receive bucket is local memory only (never announced in v1): larger than the peers' 4 MiB so
		// that one stalled stream does not stop the session before the watchdog resets it.
		cfg.MaxReceiveBuffer = s.f.cfg.SessionReceiveBuffer
		cfg.MaxFrameSize = smuxFrameSizeFor(sess.Channel().MaxPayloadSize())
		// §9.2: keepalive off only for agents above 3.1.1511.0, which turn theirs off for our ClientVersion too.
		cfg.KeepAliveDisabled = hs.AgentVersion.Compare(message.AgentKeepAliveOffAbove) > 0
		var err error
		streams = newStreamTable()
		mux, err = smux.Client(newChanConn(sess.Channel(), s.onFlag, streams), cfg)
		if err != nil { // only on an invalid config, which DefaultConfig is not
			panic(err)
		}
		go s.endStreamsWithSession(sess, mux, streams)
	} else {
		basic = newBasicMux(sess.Channel())
	}
	s.pool.mu.Lock()
	s.sess, s.mode, s.mux, s.streams, s.basic, s.stalled = sess, m, mux, streams, basic, false
	s.replacing, s.used, s.gapSince, s.pool.lastErr = endNone, false, time.Time{}, nil
	s.pool.mu.Unlock()
	s.smu.Lock()
	s.stallAcks, s.stallSince = 0, time.Time{}
	s.smu.Unlock()
	s.log.Info("Session ready", "port", s.port.String(), "slot", s.idx, "session", sess.ID(),
		"agentVersion", hs.AgentVersion.String(), "mode", map[mode]string{modeMux: "multiplexed", modeBasic: "basic"}[m])
	if hs.CustomerMessage != "" {
		fmt.Fprintln(s.f.cfg.Out, hs.CustomerMessage)
	}
	s.pool.notify()
}

// endStreamsWithSession waits until smux stops reading the session (read error, protocol error, close),
// ends every stream's copy and, unless the session is already being torn down, replaces it: a session
// whose multiplexer failed carries nothing any more. An idle connection has no goroutine reading its
// stream, so without this nothing would notice its stream fail. AcceptStream returns on exactly those
// events; the agent never opens streams (§9.4), so one it does open is closed.
func (s *slot) endStreamsWithSession(sess *session.Session, mux *smux.Session, streams *streamTable) {
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			streams.endAll()
			// A channel that ended (the service closed it, or we did) ends the session by itself, with its
			// own reason; only a multiplexer that failed on a live channel needs replacing here.
			if sess.Channel().Err() == nil {
				s.log.Warn("Multiplexer failed", "port", s.port.String(), "slot", s.idx, "session", sess.ID(), "err", err)
				s.replace(sess, endMuxFailed)
			}
			return
		}
		st.Close()
	}
}

// smuxFrameSizeFor is the largest smux data size whose frame (8-byte header included) fills whole data
// channel payloads, at most smux's default 32 KiB frame. With smux's default 32768-byte data, every frame
// would be 32776 bytes and the channel would send it as a full payload plus an 8-byte one: twice the
// frames, digests, acks and websocket writes for the same bytes with 32 KiB payloads.
func smuxFrameSizeFor(maxPayload int) int {
	const smuxDefaultFrame = 32 << 10
	if maxPayload <= 0 || maxPayload > smuxDefaultFrame {
		return smuxDefaultFrame - smuxHeaderSize
	}
	return smuxDefaultFrame/maxPayload*maxPayload - smuxHeaderSize
}

// uninstall detaches an ended session and says why it ended; its open streams end with it (reset).
func (s *slot) uninstall(sess *session.Session) endReason {
	s.pool.mu.Lock()
	mux, basic := s.mux, s.basic
	why := s.replacing
	if s.sess == sess {
		s.sess, s.mux, s.streams, s.basic = nil, nil, nil, nil
		s.replacing, s.used, s.stalled = endNone, false, false
	}
	if why == endNone {
		why = classifyEnd(sess.Err())
	}
	if why != endShutdown && why != endBasicDone {
		s.pool.lastErr = fmt.Errorf("session %s ended (%s): %w", sess.ID(), why, sess.Err())
	}
	s.pool.mu.Unlock()
	if mux != nil {
		mux.Close()
	}
	if basic != nil {
		basic.close()
	}
	st := sess.Channel().Stats()
	s.smu.Lock()
	s.base = addStats(s.base, st)
	s.baseResumes += sess.Resumes()
	s.downSince = time.Time{}
	s.smu.Unlock()
	s.pool.notify()
	return why
}

func addStats(a, b datachannel.Stats) datachannel.Stats {
	a.FramesSent += b.FramesSent
	a.Retransmits += b.Retransmits
	a.BytesSent += b.BytesSent
	a.FramesReceived += b.FramesReceived
	a.BytesReceived += b.BytesReceived
	a.DroppedFull += b.DroppedFull
	a.DroppedBeyondHorizon += b.DroppedBeyondHorizon
	return a
}

// handle carries one accepted connection on a session of this slot (already reserved by acquire). If the
// connection cannot be opened on this session, it releases the reservation and returns the error, and the
// caller may try another session. Otherwise it returns nil and the connection is served to its end, on
// this goroutine or, after it was parked while idle, on another; end runs then.
func (s *slot) handle(local net.Conn, sess *session.Session, end func()) error {
	s.pool.mu.Lock()
	m, mux, streams, basic := s.mode, s.mux, s.streams, s.basic
	cur := s.sess
	s.pool.mu.Unlock()
	if cur != sess {
		s.pool.release(s)
		return errors.New("session replaced before the connection could be opened")
	}
	s.streamsTotal.Add(1)
	if m == modeBasic {
		err := basic.serve(local, &s.pool.resets)
		if errors.Is(err, errBasicBusy) {
			s.pool.release(s)
			return err
		}
		s.pool.release(s)
		end()
		return nil
	}
	st, err := mux.OpenStream()
	if err != nil {
		s.pool.release(s)
		return fmt.Errorf("failed to open a stream: %w", err)
	}
	c := streams.claim(st.ID())
	c.end = func() {
		s.cmu.Lock()
		delete(s.conns, c)
		s.cmu.Unlock()
		streams.remove(st.ID())
		s.pool.release(s)
		end()
	}
	c.attach(s, sess, local, st)
	s.cmu.Lock()
	if s.conns == nil {
		s.conns = map[*fwdConn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.cmu.Unlock()
	// Registered before this check, so a replacement either resets it in abortAll or is seen here.
	if s.sessionEnding(sess) {
		c.abort(resetSessionLost)
	}
	c.start()
	s.serveMux(c)
	return nil
}

// sessionEnding reports whether sess is no longer the slot's session, or is being replaced.
func (s *slot) sessionEnding(sess *session.Session) bool {
	s.pool.mu.Lock()
	defer s.pool.mu.Unlock()
	return s.sess != sess || s.replacing != endNone
}

// abortAll resets every connection of the slot.
func (s *slot) abortAll(why resetReason) {
	s.cmu.Lock()
	for c := range s.conns {
		c.abort(why)
	}
	s.cmu.Unlock()
	s.pool.mu.Lock()
	basic := s.basic
	s.pool.mu.Unlock()
	if basic != nil {
		basic.abort()
	}
}

// checkStall watches the slot's session data path. A session whose sent frames get no acknowledgement, or
// whose publication the service keeps paused, for StallTimeout is stalled: it takes no new connections and
// is replaced. One that has been resuming for PartitionTimeout is replaced too, so its connections are
// reset and client pools reconnect instead of hanging on a partition.
func (s *slot) checkStall(now time.Time) {
	s.pool.mu.Lock()
	sess := s.sess
	s.pool.mu.Unlock()
	if sess == nil {
		return
	}
	st := sess.Channel().Stats()
	s.smu.Lock()
	var stalled bool
	switch {
	case s.stallSince.IsZero() || st.InFlightFrames == 0 || st.AcksReceived != s.stallAcks:
		s.stallAcks, s.stallSince = st.AcksReceived, now
	case now.Sub(s.stallSince) >= s.f.cfg.StallTimeout:
		stalled = true
	}
	if !st.PausedSince.IsZero() && now.Sub(st.PausedSince) >= s.f.cfg.StallTimeout {
		stalled = true
	}
	resuming := sess.State() == session.StateResuming
	switch {
	case !resuming:
		s.downSince = time.Time{}
	case s.downSince.IsZero():
		s.downSince = now
	}
	partitioned := resuming && now.Sub(s.downSince) >= s.f.cfg.PartitionTimeout
	s.smu.Unlock()
	s.pool.mu.Lock()
	changed := s.stalled != stalled
	s.stalled = stalled
	s.pool.mu.Unlock()
	if changed {
		s.log.Warn("Session data path", "port", s.port.String(), "slot", s.idx, "stalled", stalled)
		s.pool.notify()
	}
	switch {
	case partitioned:
		s.replace(sess, endPartition)
	case stalled && !resuming:
		s.replace(sess, endStalled)
	}
}
