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
// local socket has refused data (refusingFor) for StreamStallTimeout while bytes wait for it, and the stream
// that holds most of the session's buffer sooner (a tenth of it) once that buffer is half full
// (stallLimit). Until then the larger client-side bucket
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
		c.finReceived.Store(true)
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

// refusingFor returns how long c's local socket has refused data: its agent → local copy has been inside
// one and the same write to the local connection at every watchdog check since the first that saw it, and
// the kernel says the socket's send buffer is full. "No bytes delivered for a while" is not enough: on a
// loaded machine a healthy connection's copy can wait hundreds of milliseconds to be scheduled, or not be
// started yet, while bytes wait for it. Such a copy is not in a write, or its socket can take data, so it
// never counts. The time runs from the first check that saw the refusal rather than from the write's
// start, so a write that is slow only because its goroutine was not running needs a second sighting. Only
// the watchdog goroutine calls it.
func (c *fwdConn) refusingFor(now time.Time) time.Duration {
	write := c.localWrites.Load()
	if write%2 == 0 || !localRefuses(c.local) {
		c.refusedWrite, c.refusingSince = 0, time.Time{}
		return 0
	}
	if write != c.refusedWrite {
		c.refusedWrite, c.refusingSince = write, now
		return 0
	}
	return now.Sub(c.refusingSince)
}

// stallLimit is how long a connection holding held bytes may refuse data while the session's connections
// hold buffered bytes in all. Once the session's buffer is half full the whole session is about to stop,
// so the connection that holds most of it (at least half of what is buffered: one connection, or two equal
// ones) gets a tenth of the timeout. Every other connection keeps the full timeout: it is not what fills
// the buffer, and a healthy reader that is merely slow to be scheduled on a busy machine must not lose its
// connection for a pressure it did not cause.
func stallLimit(cfg Config, held, buffered int64) time.Duration {
	pressure := buffered >= int64(cfg.SessionReceiveBuffer/2)
	if pressure && 2*held >= buffered {
		return cfg.StreamStallTimeout / 10
	}
	return cfg.StreamStallTimeout
}

// resetStalledStreams resets the slot's streams whose local socket has refused data for the applicable
// limit while bytes wait for them, and logs why.
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
	for c := range s.conns {
		held := c.held()
		d := c.refusingFor(now)
		if held > 0 && d >= stallLimit(s.f.cfg, held, buffered) {
			victims = append(victims, victim{c, held, d})
		}
	}
	s.cmu.Unlock()
	for _, v := range victims {
		s.stalledResets.Add(1)
		s.log.Warn("Resetting a connection whose local reader stopped: smux v1 has no per-stream flow control, so the bytes held for it would stop every connection of the session",
			"port", s.port.String(), "slot", s.idx, "remote", v.c.local.RemoteAddr().String(),
			"heldBytes", v.held, "refusingFor", v.since.Round(time.Millisecond),
			"sessionBufferedBytes", buffered, "sessionReceiveBuffer", s.f.cfg.SessionReceiveBuffer)
		v.c.abort(resetStalledStream)
	}
}
