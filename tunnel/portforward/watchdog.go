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

// streamTable maps the stream IDs of one smux session to their connections, so that the bytes smux reads
// (smuxTap) can be credited to a connection. Stream IDs restart with every session, hence one per session.
type streamTable struct {
	mu sync.Mutex
	m  map[uint32]*fwdConn
}

func newStreamTable() *streamTable { return &streamTable{m: map[uint32]*fwdConn{}} }

func (t *streamTable) add(sid uint32, c *fwdConn) {
	t.mu.Lock()
	t.m[sid] = c
	t.mu.Unlock()
}

func (t *streamTable) remove(sid uint32) {
	t.mu.Lock()
	delete(t.m, sid)
	t.mu.Unlock()
}

// credit records n payload bytes handed to smux for stream sid; bytes of unknown streams are ignored.
func (t *streamTable) credit(sid uint32, n int) {
	t.mu.Lock()
	c := t.m[sid]
	t.mu.Unlock()
	if c != nil {
		c.arrived.Add(int64(n))
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

// watchStreams runs the watchdog over every slot until stop is closed.
func (f *Forwarder) watchStreams(stop <-chan struct{}) {
	t := time.NewTicker(max(f.cfg.StreamStallTimeout/40, 20*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for _, p := range f.pools {
				for _, s := range p.slots {
					s.resetStalledStreams(now)
				}
			}
		}
	}
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
