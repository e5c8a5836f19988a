package portforward

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// Metric descriptions, prefix ssmtunnel_. Per-session series are labelled with the port ("LOCAL:REMOTE")
// and the session's slot in the pool ("0".."N-1"), which stays stable when a session is replaced, so the
// cardinality is ports × --sessions. Counters are cumulative over the slot's successive sessions.
var (
	labels          = []string{"port", "session"}
	descReady       = prometheus.NewDesc("ssmtunnel_ready", "1 when every port has a ready session and the tunnel is not draining.", nil, nil)
	descSessionUp   = prometheus.NewDesc("ssmtunnel_session_state", "1 for the current state of each session slot (connecting, ready, resuming, closed, none).", append(labels, "state"), nil)
	descStalled     = prometheus.NewDesc("ssmtunnel_session_stalled", "1 when the session's sent frames have gone unacknowledged for the stall timeout.", labels, nil)
	descStarts      = prometheus.NewDesc("ssmtunnel_session_starts_total", "Sessions started in the slot (StartSession calls that led to a ready session).", labels, nil)
	descResumes     = prometheus.NewDesc("ssmtunnel_resumes_total", "Successful ResumeSession reconnects.", labels, nil)
	descStreamsOpen = prometheus.NewDesc("ssmtunnel_streams_open", "Connections (smux streams) open now.", labels, nil)
	descStreamsTot  = prometheus.NewDesc("ssmtunnel_streams_total", "Connections carried so far.", labels, nil)
	descBytes       = prometheus.NewDesc("ssmtunnel_bytes_total", "Payload bytes carried by the data channel; direction is sent (to the agent) or received.", append(labels, "direction"), nil)
	descFramesSent  = prometheus.NewDesc("ssmtunnel_frames_sent_total", "Data frames sent to the agent for the first time (retransmits not included).", labels, nil)
	descRetransmits = prometheus.NewDesc("ssmtunnel_retransmits_total", "Data frames sent again for want of an ack.", labels, nil)
	descDropped     = prometheus.NewDesc("ssmtunnel_frames_dropped_total", "Data frames from the agent dropped unacknowledged, because the receive buffer was full or they were further ahead than the out-of-order store holds; the agent resends them after its timeout.", labels, nil)
	descRTT         = prometheus.NewDesc("ssmtunnel_rtt_seconds", "Smoothed round-trip time of data-channel acks (§7.3).", labels, nil)
	descHeld        = prometheus.NewDesc("ssmtunnel_stream_held_bytes", "Bytes received from the agent that local connections have not accepted yet (smux v1 session buffer in use).", labels, nil)
	descStallResets = prometheus.NewDesc("ssmtunnel_stalled_stream_resets_total", "Connections reset because their local reader stopped while bytes waited for them (smux v1 has no per-stream flow control).", labels, nil)
	descParked      = prometheus.NewDesc("ssmtunnel_connections_parked", "Local connections idle for 1 s or longer, waiting in the shared poller without a goroutine of their own (Linux).", nil, nil)
	descConnErrors  = prometheus.NewDesc("ssmtunnel_connect_errors_total", "ConnectToPortError flags: the agent could not reach the destination.", labels, nil)
	descSessionEnds = prometheus.NewDesc("ssmtunnel_session_closed_total", "Sessions that ended and were replaced, by reason (idle_timeout, max_duration, terminated, not_resumable, mux_failed, stalled, partition, basic_done, failed).", []string{"port", "reason"}, nil)
	descResets      = prometheus.NewDesc("ssmtunnel_connections_reset_total", "Local connections ended with a TCP reset instead of a FIN, by reason (session_lost, local_gone, destination_refused, stalled_stream, drain_deadline, connection_limit, no_session).", []string{"port", "reason"}, nil)
	descConnsOpen   = prometheus.NewDesc("ssmtunnel_connections_open", "Local connections accepted and not ended, per port.", []string{"port"}, nil)
	descDestination = prometheus.NewDesc("ssmtunnel_destination_state", "1 for what the port's streams last saw of the destination: reachable, unreachable (ConnectToPortError) or unknown (no answered stream yet).", []string{"port", "state"}, nil)
	descLastError   = prometheus.NewDesc("ssmtunnel_port_last_error", "1 for the reason of the port's last session error while it has no ready session (TargetNotConnected, AccessDenied, Throttled, ...).", []string{"port", "reason"}, nil)
)

func newConnectHistogram() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ssmtunnel_connect_duration_seconds",
		Help: "Time from accepting a local connection to a session taking it: near zero while a session is ready, the session's start or resume otherwise.",
		// From a ready session (well under 1 ms) to a lazy start or a resume (seconds), up to ConnectTimeout.
		Buckets: []float64{0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"port"})
}

// Describe implements prometheus.Collector, so the CLI registers the Forwarder itself.
func (f *Forwarder) Describe(ch chan<- *prometheus.Desc) {
	f.connectSeconds.Describe(ch)
	ch <- descDestination
	for _, d := range []*prometheus.Desc{descReady, descParked, descSessionUp, descStalled, descStarts, descResumes,
		descStreamsOpen, descStreamsTot, descBytes, descFramesSent, descRetransmits, descDropped, descRTT, descConnErrors, descHeld, descStallResets,
		descSessionEnds, descResets, descConnsOpen, descLastError} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from live session state and channel statistics.
func (f *Forwarder) Collect(ch chan<- prometheus.Metric) {
	ready := 0.0
	if f.Ready() == nil {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
	ch <- prometheus.MustNewConstMetric(descParked, prometheus.GaugeValue, float64(f.ParkedConnections()))
	f.connectSeconds.Collect(ch)
	status := f.Status()
	for i, p := range f.pools {
		port := p.port.String()
		for r := endIdleTimeout; r < numEndReasons; r++ {
			ch <- prometheus.MustNewConstMetric(descSessionEnds, prometheus.CounterValue, float64(p.ends[r].Load()), port, r.String())
		}
		for r := range numResetReasons {
			ch <- prometheus.MustNewConstMetric(descResets, prometheus.CounterValue, float64(p.resets[r].Load()), port, r.String())
		}
		ch <- prometheus.MustNewConstMetric(descConnsOpen, prometheus.GaugeValue, float64(p.conns.Load()), port)
		ps := status.Ports[i]
		if !ps.Ready && ps.Reason != "" {
			ch <- prometheus.MustNewConstMetric(descLastError, prometheus.GaugeValue, 1, port, ps.Reason)
		}
		for _, d := range []string{DestinationReachable, DestinationUnreachable, DestinationUnknown} {
			v := 0.0
			if ps.Destination == d {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(descDestination, prometheus.GaugeValue, v, port, d)
		}
		for _, s := range p.slotList() {
			p.mu.Lock()
			sess, open, stalled, port := s.sess, s.open, s.stalled, s.port.String()
			p.mu.Unlock()
			lv := []string{port, strconv.Itoa(s.idx)}
			state := "none"
			s.smu.Lock()
			st, resumes := s.base, s.baseResumes
			s.smu.Unlock()
			var srtt float64
			if sess != nil {
				state = sess.State().String()
				cur := sess.Channel().Stats()
				st = addStats(st, cur)
				resumes += sess.Resumes()
				srtt = cur.SRTT.Seconds()
			}
			for _, name := range []string{"none", session.StateConnecting.String(), session.StateReady.String(),
				session.StateResuming.String(), session.StateClosed.String()} {
				v := 0.0
				if name == state {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(descSessionUp, prometheus.GaugeValue, v, append(lv, name)...)
			}
			b2f := map[bool]float64{false: 0, true: 1}
			ch <- prometheus.MustNewConstMetric(descStalled, prometheus.GaugeValue, b2f[stalled], lv...)
			ch <- prometheus.MustNewConstMetric(descStarts, prometheus.CounterValue, float64(s.starts.Load()), lv...)
			ch <- prometheus.MustNewConstMetric(descResumes, prometheus.CounterValue, float64(resumes), lv...)
			ch <- prometheus.MustNewConstMetric(descStreamsOpen, prometheus.GaugeValue, float64(open), lv...)
			ch <- prometheus.MustNewConstMetric(descStreamsTot, prometheus.CounterValue, float64(s.streamsTotal.Load()), lv...)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesSent), append(lv, "sent")...)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.BytesReceived), append(lv, "received")...)
			ch <- prometheus.MustNewConstMetric(descFramesSent, prometheus.CounterValue, float64(st.FramesSent), lv...)
			ch <- prometheus.MustNewConstMetric(descRetransmits, prometheus.CounterValue, float64(st.Retransmits), lv...)
			ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(st.DroppedFull+st.DroppedBeyondHorizon), lv...)
			ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, srtt, lv...)
			ch <- prometheus.MustNewConstMetric(descConnErrors, prometheus.CounterValue, float64(s.connectErrors.Load()), lv...)
			ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(s.heldBytes()), lv...)
			ch <- prometheus.MustNewConstMetric(descStallResets, prometheus.CounterValue, float64(s.stalledResets.Load()), lv...)
		}
	}
}

// SessionStats is a per-slot snapshot for tests and the CLI: which session serves the slot and how many
// connections it has open.
type SessionStats struct {
	Port        PortPair
	Slot        int
	SessionID   string
	State       session.State
	OpenStreams int
	Streams     uint64
	Resumes     uint64
	// HeldBytes are bytes from the agent that the slot's local connections have not accepted yet.
	HeldBytes int64
	// StalledResets counts connections reset by the stalled-stream watchdog.
	StalledResets uint64
	// ToLocalCopies is the number of agent → local copy goroutines running now: connections whose stream
	// has bytes or an end to deliver. Idle connections have none.
	ToLocalCopies int64
	// Starts counts the sessions the slot has started.
	Starts uint64
}

// PortStats counts, per port, how sessions ended and why connections were reset.
type PortStats struct {
	Port PortPair
	// SessionEnds maps an end reason (idle_timeout, stalled, ...) to the sessions that ended so.
	SessionEnds map[string]uint64
	// Resets maps a reset reason (session_lost, connection_limit, ...) to the connections reset so.
	Resets map[string]uint64
	// OpenConnections are local connections accepted and not ended.
	OpenConnections int64
}

// Ports returns a snapshot of every port's counters.
func (f *Forwarder) Ports() []PortStats {
	var out []PortStats
	for _, p := range f.pools {
		ps := PortStats{Port: p.port, SessionEnds: map[string]uint64{}, Resets: map[string]uint64{}, OpenConnections: p.conns.Load()}
		for r := endIdleTimeout; r < numEndReasons; r++ {
			if n := p.ends[r].Load(); n > 0 {
				ps.SessionEnds[r.String()] = n
			}
		}
		for r := range numResetReasons {
			if n := p.resets[r].Load(); n > 0 {
				ps.Resets[r.String()] = n
			}
		}
		out = append(out, ps)
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

// Sessions returns a snapshot of every slot of every port.
func (f *Forwarder) Sessions() []SessionStats {
	var out []SessionStats
	for _, p := range f.pools {
		for _, s := range p.slotList() {
			p.mu.Lock()
			ss := SessionStats{Port: s.port, Slot: s.idx, OpenStreams: s.open, Streams: s.streamsTotal.Load(), State: session.StateClosed}
			if s.sess != nil {
				ss.SessionID, ss.State, ss.Resumes = s.sess.ID(), s.sess.State(), s.sess.Resumes()
			}
			p.mu.Unlock()
			ss.HeldBytes, ss.StalledResets, ss.ToLocalCopies = s.heldBytes(), s.stalledResets.Load(), s.toLocalCopies.Load()
			ss.Starts = s.starts.Load()
			out = append(out, ss)
		}
	}
	return out
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
