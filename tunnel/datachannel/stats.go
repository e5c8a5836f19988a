package datachannel

import "time"

// Stats is a snapshot of a Channel's counters, for metrics (the CLI exports them to Prometheus) and tests.
// Counters only grow over the channel's life, across transports.
type Stats struct {
	// FramesSent counts data frames sent for the first time; Retransmits counts resends.
	FramesSent, Retransmits uint64
	// BytesSent counts payload bytes of FramesSent.
	BytesSent uint64
	// FramesReceived counts in-order data frames accepted for delivery; BytesReceived their payload bytes.
	FramesReceived, BytesReceived uint64
	// AcksSent and AcksReceived count acknowledge frames.
	AcksSent, AcksReceived uint64
	// Duplicates counts data frames received below the expected sequence number (re-acknowledged, §11.3).
	Duplicates uint64
	// OutOfOrder counts frames buffered ahead of the expected sequence number.
	OutOfOrder uint64
	// DroppedFull counts data frames dropped without an ack because a receive buffer was full.
	DroppedFull uint64
	// DroppedBeyondHorizon counts data frames dropped without an ack because they were further ahead of the
	// expected sequence number than the out-of-order store holds (Config.MaxOutOfOrderFrames); the peer
	// resends them once the expected ones arrived.
	DroppedBeyondHorizon uint64
	// BadFrames counts frames that failed to decode (§5) or had invalid payloads; they are dropped.
	BadFrames uint64
	// UnknownFrames counts frames of message types this role ignores.
	UnknownFrames uint64
	// Transports counts Attach calls; TransportFailures transports that died under the channel.
	Transports, TransportFailures uint64
	// InFlightBytes is the encoded size of unacknowledged frames now; InFlightFrames their number.
	InFlightBytes, InFlightFrames int
	// SRTT and RTTVar are the current estimator state (§7.3). RTO is the retransmission timeout in use: the
	// estimate with its backoff, at most MaxTransmissionTimeout while acks make progress and growing up to
	// MaxRetransmitBackoff while they do not.
	SRTT, RTTVar, RTO time.Duration
	// Paused reports whether the service paused publication (§10.1): data frames are held, acks still flow.
	Paused bool
	// PausedSince is when the current pause began, zero while not paused. A pause that lasts means the peer
	// is gone while the transport looks up, so an owner can count a long one as a stall.
	PausedSince time.Time
}
