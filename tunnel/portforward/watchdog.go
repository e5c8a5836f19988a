package portforward

import (
	"sync"
	"time"
)

// Stalled-stream watchdog.
//
// smux v1, the only version the agent speaks, has one session-wide receive bucket and no per-stream window
// (§9.4, §9.7). A stream whose local reader stops (an endless download nobody reads) keeps receiving until
// its bytes fill the bucket; then smux stops reading the data channel and every stream of the session
// stops with it. The client cannot slow one stream at the agent, so the watchdog resets a stream whose
// local connection has accepted nothing for StreamStallTimeout while bytes wait for it, and sooner (a tenth
// of it) once the session's buffer is half full. Until then the larger client-side bucket
// (SessionReceiveBuffer) lets the stalled stream hold its share while the others keep flowing.

// streamTable maps the stream IDs of one smux session to their connections, so that what smux reads for a
// stream (smuxTap) reaches its connection: payload bytes are credited to it (the watchdog's held bytes) and
// bytes or a FIN start its agent → local copy. Stream IDs restart with every session, hence one per session.
type streamTable struct {
	mu    sync.Mutex
	m     map[uint32]*fwdConn
	ended bool // smux stopped reading: every stream ends, including any opened from now on
}

func newStreamTable() *streamTable { return &streamTable{m: map[uint32]*fwdConn{}} }

// opened registers a connection, not yet attached, for the stream whose SYN smux is sending. It runs before
// the SYN leaves, so the agent's first bytes or FIN can never find the stream unknown and be missed, which
// would leave them in smux with no copy started.
func (t *streamTable) opened(sid uint32) {
	c := &fwdConn{}
	t.mu.Lock()
	if t.ended {
		c.drainToEnd.Store(true)
	}
	t.m[sid] = c
	t.mu.Unlock()
}

// claim returns the connection registered for sid by opened. If there is none (smux changed how it writes
// SYNs), the connection cannot rely on the tap and copies until its stream ends, as a connection always did
// before copies started on demand.
func (t *streamTable) claim(sid uint32) *fwdConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.m[sid]
	if c == nil {
		c = &fwdConn{}
		c.drainToEnd.Store(true)
		t.m[sid] = c
	}
	return c
}

func (t *streamTable) remove(sid uint32) {
	t.mu.Lock()
	delete(t.m, sid)
	t.mu.Unlock()
}

func (t *streamTable) lookup(sid uint32) *fwdConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[sid]
}

// arrived records n payload bytes handed to smux for stream sid and makes sure they are copied to the local
// connection; bytes of unknown (already closed) streams are ignored.
func (t *streamTable) arrived(sid uint32, n int) {
	if c := t.lookup(sid); c != nil {
		c.arrived.Add(int64(n))
		c.wakeToLocal()
	}
}

// finished: the agent's FIN for sid; its copy runs until the stream ends and then half-closes the local side.
func (t *streamTable) finished(sid uint32) {
	if c := t.lookup(sid); c != nil {
		c.drainToEnd.Store(true)
		c.wakeToLocal()
	}
}

// endAll ends every stream once smux has stopped reading (read or protocol error, session closed): their
// reads fail now, and each connection's copy must see that to close its local side.
func (t *streamTable) endAll() {
	t.mu.Lock()
	t.ended = true
	conns := make([]*fwdConn, 0, len(t.m))
	for _, c := range t.m {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.drainToEnd.Store(true)
		c.wakeToLocal()
	}
}

// held is the number of bytes smux holds for c: read from the data channel for its stream, not yet accepted
// by the local connection (a blocked local write counts as held).
func (c *fwdConn) held() int64 {
	return max(0, c.arrived.Load()-c.received.Load())
}

// stalledFor returns how long c has held bytes without its local connection accepting any. Only the
// watchdog goroutine calls it.
func (c *fwdConn) stalledFor(now time.Time) time.Duration {
	delivered := c.received.Load()
	if c.held() == 0 || delivered != c.lastDelivered || c.stallSince.IsZero() {
		c.lastDelivered, c.stallSince = delivered, now
		return 0
	}
	return now.Sub(c.stallSince)
}

// resetStalledStreams resets the slot's streams that hold bytes and made no local progress for the
// applicable timeout, and logs why.
func (s *slot) resetStalledStreams(now time.Time) {
	type victim struct {
		c     *fwdConn
		held  int64
		since time.Duration
	}
	var victims []victim
	s.cmu.Lock()
	var buffered int64
	for c := range s.conns {
		buffered += c.held()
	}
	limit := s.f.cfg.StreamStallTimeout
	pressure := buffered >= int64(s.f.cfg.SessionReceiveBuffer/2)
	if pressure {
		limit /= 10
	}
	for c := range s.conns {
		if d := c.stalledFor(now); d >= limit {
			victims = append(victims, victim{c, c.held(), d})
		}
	}
	s.cmu.Unlock()
	for _, v := range victims {
		s.stalledResets.Add(1)
		s.log.Warn("Resetting a connection whose local reader stopped: smux v1 has no per-stream flow control, so the bytes held for it would stop every connection of the session",
			"port", s.port.String(), "slot", s.idx, "remote", v.c.local.RemoteAddr().String(),
			"heldBytes", v.held, "noProgressFor", v.since.Round(time.Millisecond),
			"sessionBufferedBytes", buffered, "sessionReceiveBuffer", s.f.cfg.SessionReceiveBuffer)
		v.c.abort()
	}
}
