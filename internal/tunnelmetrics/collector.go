// Package tunnelmetrics exports a tunnel's portforward.Stats as the ssmtunnel_ Prometheus metrics that
// ssmtunnel serves on --metrics-addr. The names, labels, help texts and types are a public contract: the
// chart's dashboard and alerts query them (test/integration's TestMetricNames ties the two together).
package tunnelmetrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
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
	descConnectSecs = prometheus.NewDesc("ssmtunnel_connect_duration_seconds", "Time from accepting a local connection to a session taking it: near zero while a session is ready, the session's start or resume otherwise.", []string{"port"}, nil)
)

// slotStates are the values of ssmtunnel_session_state's state label: "none" for a slot without a session,
// otherwise the session's state.
var slotStates = []string{"none", session.StateConnecting.String(), session.StateReady.String(),
	session.StateResuming.String(), session.StateClosed.String()}

// Source is what the collector reads at every scrape; *portforward.Forwarder is one.
type Source interface {
	Stats() portforward.Stats
}

// Collector is a prometheus.Collector of a tunnel's metrics, read from its Source at scrape time.
type Collector struct{ src Source }

// NewCollector returns the collector of src's metrics.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReady, descParked, descConnectSecs, descDestination, descSessionUp, descStalled,
		descStarts, descResumes, descStreamsOpen, descStreamsTot, descBytes, descFramesSent, descRetransmits, descDropped,
		descRTT, descConnErrors, descHeld, descStallResets, descSessionEnds, descResets, descConnsOpen, descLastError} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from one Stats snapshot.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	gauge(descReady, b2f(st.Ready))
	gauge(descParked, float64(st.ParkedConnections))
	for _, p := range st.Ports {
		port := p.Port.String()
		ch <- constHistogram(descConnectSecs, p.ConnectSeconds, port)
		for _, r := range portforward.SessionEndReasons() {
			counter(descSessionEnds, p.SessionEnds[r], port, r)
		}
		for _, r := range portforward.ResetReasons() {
			counter(descResets, p.Resets[r], port, r)
		}
		gauge(descConnsOpen, float64(p.OpenConnections), port)
		if p.LastErrorReason != "" {
			gauge(descLastError, 1, port, p.LastErrorReason)
		}
		for _, d := range []string{portforward.DestinationReachable, portforward.DestinationUnreachable, portforward.DestinationUnknown} {
			gauge(descDestination, b2f(p.Destination == d), port, d)
		}
		for _, s := range p.Sessions {
			lv := []string{s.Port.String(), strconv.Itoa(s.Slot)}
			state := "none"
			if s.HasSession {
				state = s.State.String()
			}
			for _, name := range slotStates {
				gauge(descSessionUp, b2f(name == state), append(lv, name)...)
			}
			ds := s.Channel
			gauge(descStalled, b2f(s.Stalled), lv...)
			counter(descStarts, s.Starts, lv...)
			counter(descResumes, s.TotalResumes, lv...)
			gauge(descStreamsOpen, float64(s.OpenStreams), lv...)
			counter(descStreamsTot, s.Streams, lv...)
			counter(descBytes, ds.BytesSent, append(lv, "sent")...)
			counter(descBytes, ds.BytesReceived, append(lv, "received")...)
			counter(descFramesSent, ds.FramesSent, lv...)
			counter(descRetransmits, ds.Retransmits, lv...)
			counter(descDropped, ds.DroppedFull+ds.DroppedBeyondHorizon, lv...)
			gauge(descRTT, ds.SRTT.Seconds(), lv...)
			counter(descConnErrors, s.ConnectErrors, lv...)
			gauge(descHeld, float64(s.HeldBytes), lv...)
			counter(descStallResets, s.StalledResets, lv...)
		}
	}
}

// constHistogram is h as a Prometheus histogram, whose buckets are cumulative and whose +Inf bucket is the
// count.
func constHistogram(d *prometheus.Desc, h portforward.Histogram, lv ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var n uint64
	for i, le := range h.Bounds {
		n += h.Counts[i]
		buckets[le] = n
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets, lv...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
