package portforward

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// fwdConn is one accepted local connection carried by one smux stream.
//
// Memory at rest (10,000 idle connections must fit in 100 MB): the local → agent copy runs on the
// handler goroutine and holds no buffer while it waits (copyFromLocal); after IdleParkAfter without data the
// handler goroutine ends and the connection is parked in the forwarder's idle poller, which starts a new one
// when the local side sends again (serveMux). The agent → local copy runs on a goroutine of its own
// only while the stream has something for the local connection: smuxTap sees every payload byte and FIN just
// before smux buffers it and wakes the copy (wakeToLocal), which writes straight from smux's buffers
// (smux.Stream's WriteTo) and exits once the local connection has taken every byte that arrived. An idle
// connection therefore costs no goroutine at all.
type fwdConn struct {
	slot     *slot
	sess     *session.Session // the session its stream belongs to
	local    net.Conn
	stream   *smux.Stream
	opened   time.Time
	received atomic.Int64 // bytes from the agent so far; 0 = still awaiting first data
	arrived  atomic.Int64 // bytes smux read for this stream (smuxTap); arrived - received are held
	aborted  atomic.Bool
	reset    atomic.Bool // the local connection was (or is being) reset
	// finReceived: the agent's FIN for this stream reached smux (smuxTap). Only a stream that ends after it
	// ended cleanly; any other end (session lost, protocol error, reset here) may have lost bytes.
	finReceived atomic.Bool

	// parked is the idle poller's token while the local → agent copy is parked, else 0 (closeLocal wakes it).
	parked atomic.Uint64
	// end releases what handle reserved for the connection; it runs once, when both directions are done.
	end func()

	// agent → local copy
	toLocal     atomic.Int32 // copyOpening, copyIdle, copyRunning or copyDone
	drainToEnd  atomic.Bool  // FIN, session end or local side done: copy until the stream ends
	toLocalDone chan struct{}

	// localWrites counts the starts and ends of the agent → local copy's writes to the local connection:
	// odd while a write is in progress, and a new value for every write, so the watchdog can tell that the
	// copy sits in one and the same write (the local socket refuses data) from a copy that has not been
	// scheduled or started yet (nothing refuses anything).
	localWrites atomic.Uint64

	// watchdog state, only touched by the watchdog goroutine
	refusedWrite  uint64    // the localWrites value the watchdog last saw refused
	refusingSince time.Time // when the watchdog first saw that write refused
}

// States of a connection's agent → local copy. Whoever moves it from copyIdle to copyRunning runs the copy;
// so one copy at most runs, and bytes that arrive while it is stopping start it again (see pumpToLocal).
const (
	copyOpening int32 = iota // registered at SYN, not yet attached: arrivals only count
	copyIdle
	copyRunning
	copyDone
)

// attach completes the connection registered for the stream (streamTable.opened).
func (c *fwdConn) attach(s *slot, sess *session.Session, local net.Conn, st *smux.Stream) {
	c.slot, c.sess, c.local, c.stream, c.opened = s, sess, local, st, time.Now()
	c.toLocalDone = make(chan struct{})
	c.toLocal.Store(copyIdle)
}

// start begins the agent → local copy if the agent already sent something; the connection is attached
// and registered with its slot.
func (c *fwdConn) start() {
	if c.wantsToLocal() {
		c.wakeToLocal()
	}
}

// wantsToLocal: smux holds (or is about to hold) bytes for the local connection, or the stream is ending.
func (c *fwdConn) wantsToLocal() bool { return c.held() > 0 || c.drainToEnd.Load() }

// wakeToLocal starts the agent → local copy on a goroutine of its own unless it is running, done, or the
// connection is not attached yet.
func (c *fwdConn) wakeToLocal() {
	if c.toLocal.CompareAndSwap(copyIdle, copyRunning) {
		go c.slot.runToLocal(c)
	}
}

// abort resets the local connection and closes the stream at once (drain deadline, stalled stream,
// partition, session replaced), counted under why.
func (c *fwdConn) abort(why resetReason) {
	// Reset before marking aborted: the copy that sees aborted closes the local side without a reset of
	// its own, so the reset must already have been decided by then.
	c.resetLocal(why)
	c.aborted.Store(true)
	c.stream.Close()
}

// resetLocal ends the local connection with a TCP reset, counted under why: the app must never read the
// end of a stream that may have lost bytes as a complete response.
func (c *fwdConn) resetLocal(why resetReason) {
	// Linger first, by every caller: a second caller must not return, and let its caller close the
	// connection, before the first one's reset is armed.
	setLingerZero(c.local)
	if !c.reset.Swap(true) {
		c.slot.pool.countReset(why)
	}
	c.closeLocal()
}

// closeLocal closes the local connection. A parked connection has no reader to notice the close (closing a
// socket takes it out of the epoll set without an event), so it is woken to finish.
func (c *fwdConn) closeLocal() {
	c.local.Close()
	if p := c.slot.f.idle.Load(); p != nil {
		p.wake(&c.parked)
	}
}

// errCaughtUp stops smux's WriteTo once the local connection has every byte that arrived; nothing is lost
// (the buffer it was given was written whole).
var errCaughtUp = errors.New("portforward: local connection caught up")

// toLocalWriter writes to the local connection, counts what it accepted, and stops the copy when it caught
// up and the stream is not ending.
type toLocalWriter struct{ c *fwdConn }

func (w toLocalWriter) Write(p []byte) (int, error) {
	w.c.localWrites.Add(1)
	n, err := w.c.local.Write(p)
	w.c.localWrites.Add(1)
	if w.c.received.Add(int64(n)) == int64(n) && n > 0 {
		w.c.slot.pool.dest.reachedNow() // the first bytes from the destination
	}
	if err != nil {
		return n, localWriteError{err}
	}
	if !w.c.drainToEnd.Load() && w.c.held() == 0 {
		return n, errCaughtUp
	}
	return n, nil
}

type closeWriter interface{ CloseWrite() error }

// serveMux copies both ways between the local connection and its stream until both directions are done,
// then calls c.end. The local → agent direction runs on the calling goroutine: the handler's, or the one the
// idle poller starts to resume a parked connection, which calls serveMux again (the parked call returned
// early). Once that direction is done, the same goroutine carries the agent → local direction to its end, so
// a half-closed connection needs one goroutine.
//
// Half-close (§9.4): the official client tears the stream down when either direction ends, discarding
// response bytes still in flight. Here a local EOF sends FIN (smux CloseWrite) and the stream keeps
// delivering until the agent's FIN, which becomes a TCP half-close (CloseWrite) toward the local app. An
// agent that closes fully on FIN, as the real one does, still ends both directions; nothing is lost that the
// agent sent.
func (s *slot) serveMux(c *fwdConn) {
	if s.copyToAgent(c) {
		s.finishMux(c)
	}
}

// finishMux carries the agent → local direction to its end once local → agent is done, then ends the
// connection.
func (s *slot) finishMux(c *fwdConn) {
	c.drainToEnd.Store(true)
	if c.toLocal.CompareAndSwap(copyIdle, copyRunning) {
		s.pumpToLocal(c)
	}
	<-c.toLocalDone
	c.stream.Close()
	c.closeLocal()
	c.end()
}

// runToLocal is the agent → local copy goroutine, counted for SessionStats.ToLocalCopies.
func (s *slot) runToLocal(c *fwdConn) {
	s.toLocalCopies.Add(1)
	defer s.toLocalCopies.Add(-1)
	s.pumpToLocal(c)
}

// pumpToLocal copies agent → local while smux holds bytes for the connection (or to the stream's end once
// drainToEnd is set). The caller has moved the copy to copyRunning. When it stops with nothing held, it goes
// back to copyIdle and looks again: bytes that arrived in between either are seen here or find copyIdle and
// start a new copy, never neither.
func (s *slot) pumpToLocal(c *fwdConn) {
	for {
		_, err := c.stream.WriteTo(toLocalWriter{c})
		if err != errCaughtUp {
			s.endToLocal(c, err)
			c.toLocal.Store(copyDone)
			close(c.toLocalDone)
			return
		}
		c.toLocal.Store(copyIdle)
		if !c.wantsToLocal() || !c.toLocal.CompareAndSwap(copyIdle, copyRunning) {
			return
		}
	}
}

// endToLocal ends the local side the way the stream ended: abort or error, refusal (ConnectToPortError) or
// half-close.
func (s *slot) endToLocal(c *fwdConn, err error) {
	switch {
	case c.aborted.Load():
		c.stream.Close()
	case err != nil && isLocalWriteError(err):
		// The local app is gone or refuses data: nothing more can reach it.
		c.resetLocal(resetLocalGone)
		c.stream.Close()
	case err != nil || !c.finReceived.Load() || s.sessionEnding(c.sess):
		// The stream ended without the agent's FIN, or its FIN came from a session that is being torn down
		// (an agent told to end closes every stream with a FIN): bytes may be missing, so the app must see
		// a reset, not an end of stream.
		c.resetLocal(resetSessionLost)
		c.stream.Close()
	case c.received.Load() == 0 && s.claimConnectError():
		// The agent could not dial the destination for this stream (Flag 3, then FIN): the connection never
		// reached it, so the app sees a reset, as from a refused connection.
		s.log.Warn("Connection to destination failed, check the SSM Agent logs", "port", s.port.String(), "remote", c.local.RemoteAddr().String())
		c.resetLocal(resetDestinationRefused)
	default:
		// The agent's clean end of a stream that was not refused: its dial reached the destination.
		s.pool.dest.reachedNow()
		if cw, ok := c.local.(closeWriter); ok {
			cw.CloseWrite()
		} else {
			c.closeLocal()
		}
	}
}

// copyToAgent copies local → agent and reports true when that direction is done: a local EOF becomes the
// stream's FIN (half-close), an error closes both. It reports false when the connection went idle and was
// parked: the idle poller then runs serveMux again on a new goroutine.
func (s *slot) copyToAgent(c *fwdConn) bool {
	var park func() bool
	if p := s.f.idle.Load(); p != nil {
		park = func() bool { return p.park(c.local, &c.parked, func() { s.serveMux(c) }) }
	}
	_, err := copyFromLocal(streamWriter{c.stream}, c.local, s.f.cfg.IdleParkAfter, park)
	var sw streamWriteError
	switch {
	case err == errParked:
		return false
	case errors.As(err, &sw):
		// The stream refused the bytes: its session is gone, the rest cannot be carried.
		c.stream.Close()
		c.resetLocal(resetSessionLost)
	case err != nil:
		// The local read failed: the app reset its end.
		c.stream.Close()
		c.resetLocal(resetLocalGone)
	default:
		if err := c.stream.CloseWrite(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			c.stream.Close()
		}
	}
	return true
}

// ConnectToPortError correlation.
//
// Flag 3 (§6.3) carries no stream id. The agent sends it on the data channel and then FINs the stream whose
// dial failed (§9.4 step 5), in that order on the one ordered channel. So the flag is recorded as pending,
// and the next stream that ends having received no byte at all claims it and is closed as refused. A stream
// that ends with no data and no pending flag is an ordinary empty response and is half-closed normally. If an
// agent sent the flag without a FIN, after connectErrorGrace the newest stream still awaiting its first byte
// that was opened before the flag is closed instead: the most recent open is the most likely to have been
// dialled last. Either way only one connection is affected per flag.
const connectErrorGrace = 5 * time.Second

func (s *slot) onFlag(f message.Flag) {
	if f != message.FlagConnectToPortError {
		return
	}
	s.connectErrors.Add(1)
	s.pool.dest.refusedNow()
	at := time.Now()
	s.fmu.Lock()
	s.pendingRefusals = append(s.pendingRefusals, at)
	s.fmu.Unlock()
	time.AfterFunc(connectErrorGrace, func() { s.expireRefusal(at) })
}

// claimConnectError consumes one pending refusal, if any.
func (s *slot) claimConnectError() bool {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if len(s.pendingRefusals) == 0 {
		return false
	}
	s.pendingRefusals = s.pendingRefusals[1:]
	return true
}

func (s *slot) expireRefusal(at time.Time) {
	s.fmu.Lock()
	found := false
	for i, t := range s.pendingRefusals {
		if t.Equal(at) {
			s.pendingRefusals = append(s.pendingRefusals[:i], s.pendingRefusals[i+1:]...)
			found = true
			break
		}
	}
	s.fmu.Unlock()
	if !found {
		return
	}
	var newest *fwdConn
	s.cmu.Lock()
	for c := range s.conns {
		if c.received.Load() == 0 && c.opened.Before(at) && (newest == nil || c.opened.After(newest.opened)) {
			newest = c
		}
	}
	s.cmu.Unlock()
	if newest != nil {
		s.log.Warn("Connection to destination failed (no stream end followed the agent's error); closing the newest waiting connection",
			"port", s.port.String())
		newest.abort(resetDestinationRefused)
	}
}
