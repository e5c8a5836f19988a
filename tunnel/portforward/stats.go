package portforward

import (
	"math"
	"sort"
	"sync/atomic"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// Stats is a snapshot of the forwarder's counters and gauges, taken by Forwarder.Stats: what an exporter
// (ssmtunnel's Prometheus collector) reads at scrape time. Counters are cumulative since New.
type Stats struct {
	// Ready is Ready() == nil: every port has a ready session and the forwarder is not draining.
	Ready bool
	// ParkedConnections is ParkedConnections().
	ParkedConnections int
	// Ports are in Config.Ports order.
	Ports []PortStats
}

// PortStats is one port of Stats.
type PortStats struct {
	Port PortPair
	// SessionEnds maps an end reason (one of SessionEndReasons) to the sessions that ended so; reasons
	// with none are absent.
	SessionEnds map[string]uint64
	// Resets maps a reset reason (one of ResetReasons) to the connections reset so; reasons with none are
	// absent.
	Resets map[string]uint64
	// OpenConnections are local connections accepted and not ended.
	OpenConnections int64
	// Destination is PortStatus.Destination: DestinationReachable, DestinationUnreachable or
	// DestinationUnknown.
	Destination string
	// LastErrorReason is PortStatus.Reason (session.Reason of the port's last session error) while the
	// port has no ready session, and empty while it has one.
	LastErrorReason string
	// ConnectSeconds is the time from accepting a local connection to a session taking it (its first
	// attempt), in seconds.
	ConnectSeconds Histogram
	// Sessions has one entry per slot, in slot order.
	Sessions []SessionStats
}

// SessionStats is one slot of a port: which session serves it and what it carried. Counters are cumulative
// over the slot's successive sessions unless they say otherwise.
type SessionStats struct {
	Port PortPair
	Slot int
	// HasSession is false while the slot holds no session (between sessions, or idle under
	// ReconnectLazy); State then reads StateClosed and SessionID is empty.
	HasSession bool
	SessionID  string
	State      session.State
	// Stalled is set while the session's sent frames have gone unacknowledged for Config.StallTimeout.
	Stalled bool
	// OpenStreams are the connections the slot carries now; Streams those it has carried.
	OpenStreams int
	Streams     uint64
	// Resumes counts the current session's resumes; TotalResumes those of every session of the slot.
	Resumes, TotalResumes uint64
	// HeldBytes are bytes from the agent that the slot's local connections have not accepted yet.
	HeldBytes int64
	// StalledResets counts connections reset by the stalled-stream watchdog.
	StalledResets uint64
	// ConnectErrors counts ConnectToPortError flags: the agent could not reach the destination.
	ConnectErrors uint64
	// ToLocalCopies is the number of agent → local copy goroutines running now: connections whose stream
	// has bytes or an end to deliver. Idle connections have none.
	ToLocalCopies int64
	// Starts counts the sessions the slot has started.
	Starts uint64
	// Channel holds the data channel's counters summed over the slot's sessions; its gauges (SRTT, RTTVar,
	// RTO, InFlightBytes, InFlightFrames, Paused, PausedSince) are the current session's, zero without one.
	Channel datachannel.Stats
}

// Histogram is a snapshot of observations counted in fixed buckets, as a Prometheus histogram counts them.
type Histogram struct {
	// Bounds are the buckets' upper bounds, ascending. Counts has one more entry than Bounds: Counts[i] is
	// the number of observations v with Bounds[i-1] < v ≤ Bounds[i], and the last one those above every
	// bound (not cumulative).
	Bounds []float64
	Counts []uint64
	// Count is the number of observations (the sum of Counts), Sum their sum.
	Count uint64
	Sum   float64
}

// SessionEndReasons are the keys PortStats.SessionEnds may have: why a session left its slot and was
// replaced.
func SessionEndReasons() []string {
	var out []string
	for r := endIdleTimeout; r < numEndReasons; r++ {
		out = append(out, r.String())
	}
	return out
}

// ResetReasons are the keys PortStats.Resets may have: why a local connection ended with a reset.
func ResetReasons() []string {
	var out []string
	for r := range numResetReasons {
		out = append(out, r.String())
	}
	return out
}

// connectBuckets are the upper bounds (seconds) of PortStats.ConnectSeconds: from a ready session (well
// under 1 ms) to a lazy start or a resume (seconds), up to ConnectTimeout.
var connectBuckets = []float64{0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30}

// histogram counts observations in fixed buckets without a lock.
type histogram struct {
	bounds  []float64
	counts  []atomic.Uint64 // len(bounds)+1; the last counts observations above every bound
	sumBits atomic.Uint64   // math.Float64bits of the sum
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	h.counts[sort.SearchFloat64s(h.bounds, v)].Add(1) // the first bucket whose bound is ≥ v
	for {
		old := h.sumBits.Load()
		if h.sumBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: append([]float64(nil), h.bounds...), Counts: make([]uint64, len(h.counts))}
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
		out.Count += out.Counts[i]
	}
	out.Sum = math.Float64frombits(h.sumBits.Load())
	return out
}

// Stats returns a snapshot of every port's and every slot's counters and gauges.
func (f *Forwarder) Stats() Stats {
	st := Stats{Ready: f.Ready() == nil, ParkedConnections: f.ParkedConnections()}
	status := f.Status()
	for i, p := range f.pools {
		ps := status.Ports[i]
		out := PortStats{Port: p.port, SessionEnds: map[string]uint64{}, Resets: map[string]uint64{},
			OpenConnections: p.conns.Load(), Destination: ps.Destination, ConnectSeconds: p.connectSeconds.snapshot()}
		if !ps.Ready {
			out.LastErrorReason = ps.Reason
		}
		for r := endIdleTimeout; r < numEndReasons; r++ {
			if n := p.ends[r].Load(); n > 0 {
				out.SessionEnds[r.String()] = n
			}
		}
		for r := range numResetReasons {
			if n := p.resets[r].Load(); n > 0 {
				out.Resets[r.String()] = n
			}
		}
		for _, s := range p.slotList() {
			out.Sessions = append(out.Sessions, s.stats())
		}
		st.Ports = append(st.Ports, out)
	}
	return st
}

// stats is the slot's SessionStats.
func (s *slot) stats() SessionStats {
	s.pool.mu.Lock()
	sess := s.sess
	ss := SessionStats{Port: s.port, Slot: s.idx, OpenStreams: s.open, Stalled: s.stalled, State: session.StateClosed}
	if sess != nil {
		ss.HasSession, ss.SessionID, ss.State, ss.Resumes = true, sess.ID(), sess.State(), sess.Resumes()
	}
	s.pool.mu.Unlock()
	s.smu.Lock()
	ss.Channel, ss.TotalResumes = s.base, s.baseResumes
	s.smu.Unlock()
	if sess != nil {
		// The current session's gauges, plus the counters of the slot's earlier sessions.
		ss.Channel = addStats(sess.Channel().Stats(), ss.Channel)
		ss.TotalResumes += ss.Resumes
	}
	ss.Streams, ss.Starts = s.streamsTotal.Load(), s.starts.Load()
	ss.ConnectErrors, ss.StalledResets = s.connectErrors.Load(), s.stalledResets.Load()
	ss.HeldBytes, ss.ToLocalCopies = s.heldBytes(), s.toLocalCopies.Load()
	return ss
}

// Ports returns a snapshot of every port's counters: Stats().Ports.
func (f *Forwarder) Ports() []PortStats { return f.Stats().Ports }

// Sessions returns a snapshot of every slot of every port, in port and slot order.
func (f *Forwarder) Sessions() []SessionStats {
	var out []SessionStats
	for _, p := range f.Ports() {
		out = append(out, p.Sessions...)
	}
	return out
}

// ParkedConnections is the number of local connections parked while idle (Config.IdleParkAfter): they
// have no goroutine until they send again or close.
func (f *Forwarder) ParkedConnections() int {
	if p := f.idle.Load(); p != nil {
		return p.parkedCount()
	}
	return 0
}

// heldBytes sums what smux holds for the slot's connections.
func (s *slot) heldBytes() int64 {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	var n int64
	for c := range s.conns {
		n += c.held()
	}
	return n
}
