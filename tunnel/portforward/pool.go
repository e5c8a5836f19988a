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
// none, and a basic-mode session takes one at a time.
type pool struct {
	f     *Forwarder
	port  PortPair
	slots []*slot

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change that may make a slot available
}

func (p *pool) notify() {
	p.mu.Lock()
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// acquire reserves a stream on the best available slot, waiting for one until ctx ends or the forwarder
// drains.
func (p *pool) acquire(ctx context.Context) (*slot, *session.Session, error) {
	for {
		p.mu.Lock()
		var best *slot
		for _, s := range p.slots {
			if s.availableLocked() && (best == nil || s.open < best.open) {
				best = s
			}
		}
		if best != nil {
			best.open++
			sess := best.sess
			p.mu.Unlock()
			return best, sess, nil
		}
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
	p.mu.Unlock()
	p.notify()
}

var errDraining = errors.New("shutting down")

// slot is one place in a pool: it owns one session at a time and replaces it when it ends unresumable.
type slot struct {
	f    *Forwarder
	pool *pool
	idx  int
	port PortPair
	log  *slog.Logger

	// guarded by pool.mu
	sess    *session.Session
	mux     *smux.Session
	streams *streamTable // of mux
	basic   *basicMux
	mode    mode
	open    int
	stalled bool

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
}

func (s *slot) availableLocked() bool {
	if s.sess == nil || s.stalled || s.sess.State() != session.StateReady {
		return false
	}
	if s.mode == modeBasic {
		return s.open == 0 && s.basic != nil
	}
	return s.mux != nil && !s.mux.IsClosed()
}

// run keeps a session in the slot until ctx ends. The first start's result is sent on first; later
// failures are retried with backoff while the listener stays up (§10.3: not resumable → fresh session).
func (s *slot) run(ctx context.Context, first chan<- error) {
	attempt := 0
	for {
		spec := s.f.spec(s.port)
		sess, err := s.f.starter.Start(ctx, spec, func(session.State) { s.pool.notify() })
		if err != nil {
			if first != nil {
				first <- err
				return
			}
			if ctx.Err() != nil {
				return
			}
			d := min(30*time.Second, 500*time.Millisecond<<min(attempt, 6))
			d = d/2 + rand.N(d/2+1)
			attempt++
			s.log.Warn("Failed to start a replacement session, retrying", "port", s.port.String(), "slot", s.idx, "in", d, "err", err)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		attempt = 0
		s.starts.Add(1)
		s.install(sess)
		if first != nil {
			first <- nil
			first = nil
		}
		select {
		case <-sess.Done():
		case <-ctx.Done():
			return // the forwarder drains and terminates
		}
		err = sess.Err()
		s.uninstall(sess)
		var cc *datachannel.ChannelClosedError
		switch {
		case errors.As(err, &cc):
			s.f.fail(fmt.Errorf("session %s on port %s: %w", sess.ID(), s.port, err))
			return
		case errors.Is(err, session.ErrClosed):
			return
		}
		s.log.Warn("Session ended, starting a new one; the listener stays up", "port", s.port.String(), "slot", s.idx, "session", sess.ID(), "err", err)
	}
}

// install wires a ready session into the slot in the mode the handshake selects (§9.2).
func (s *slot) install(sess *session.Session) {
	hs := sess.Handshake()
	m := modeBasic
	if hs.Properties.Type == message.LocalPortForwarding && hs.AgentVersion.Compare(message.LastBasicAgentVersion) > 0 {
		m = modeMux
	}
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
		go endStreamsWithSession(mux, streams)
	} else {
		basic = newBasicMux(sess.Channel())
	}
	s.pool.mu.Lock()
	s.sess, s.mode, s.mux, s.streams, s.basic, s.stalled = sess, m, mux, streams, basic, false
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

// endStreamsWithSession waits until smux stops reading the session (read error, protocol error, close) and
// then ends every stream's copy. An idle connection has no goroutine reading its stream, so without this
// nothing would notice its stream fail. AcceptStream returns on exactly those events; the agent never opens
// streams (§9.4), so one it does open is closed.
func endStreamsWithSession(mux *smux.Session, streams *streamTable) {
	for {
		st, err := mux.AcceptStream()
		if err != nil {
			streams.endAll()
			return
		}
		st.Close()
	}
}

// smuxFrameSizeFor is the largest smux data size whose frame (8-byte header included) fills whole data
// channel payloads, at most smux's default 32 KiB frame. With smux's default 32768-byte data, every frame
// was 32776 bytes and the channel sent it as a full payload plus an 8-byte one: twice the frames, digests,
// acks and websocket writes for the same bytes with 32 KiB payloads (issue 4, upload at pacing none).
func smuxFrameSizeFor(maxPayload int) int {
	const smuxDefaultFrame = 32 << 10
	if maxPayload <= 0 || maxPayload > smuxDefaultFrame {
		return smuxDefaultFrame - smuxHeaderSize
	}
	return smuxDefaultFrame/maxPayload*maxPayload - smuxHeaderSize
}

// uninstall detaches an ended session; its open streams end with it.
func (s *slot) uninstall(sess *session.Session) {
	s.pool.mu.Lock()
	mux, basic := s.mux, s.basic
	if s.sess == sess {
		s.sess, s.mux, s.streams, s.basic = nil, nil, nil, nil
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
	s.smu.Unlock()
	s.pool.notify()
}

func addStats(a, b datachannel.Stats) datachannel.Stats {
	a.FramesSent += b.FramesSent
	a.Retransmits += b.Retransmits
	a.BytesSent += b.BytesSent
	a.FramesReceived += b.FramesReceived
	a.BytesReceived += b.BytesReceived
	a.DroppedFull += b.DroppedFull
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
		err := basic.serve(local)
		s.pool.release(s)
		if err == nil {
			end()
		}
		return err
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
	c.attach(s, local, st)
	s.cmu.Lock()
	if s.conns == nil {
		s.conns = map[*fwdConn]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.cmu.Unlock()
	s.serveMux(c)
	return nil
}

// abortAll closes every connection of the slot (drain deadline).
func (s *slot) abortAll() {
	s.cmu.Lock()
	for c := range s.conns {
		c.abort()
	}
	s.cmu.Unlock()
	s.pool.mu.Lock()
	basic := s.basic
	s.pool.mu.Unlock()
	if basic != nil {
		basic.mu.Lock()
		if basic.cur != nil {
			basic.cur.Close()
		}
		basic.mu.Unlock()
	}
}

// checkStall marks the slot stalled when frames have been in flight without any ack for StallTimeout:
// the data path is broken even though the transport looks up (readiness and the pool both use it).
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
	s.smu.Unlock()
	s.pool.mu.Lock()
	changed := s.stalled != stalled
	s.stalled = stalled
	s.pool.mu.Unlock()
	if changed {
		s.log.Warn("Session data path", "port", s.port.String(), "slot", s.idx, "stalled", stalled)
		s.pool.notify()
	}
}
