// Package datachannel is the reliable, ordered data channel of a Session Manager session (ssm-protocol.md
// §4, §7, §8, §10), used by both ends: the client (role Client, sends input_stream_data) and the emulated
// agent (role Agent, sends output_stream_data).
//
// A Channel owns the sequence numbers of both directions and survives its transport: the owner attaches a
// Transport (a websocket from DialClient, or an in-memory Pipe), is told through TransportFailed when it
// dies, and attaches a new one after ResumeSession; sequence numbers continue and every unacknowledged frame
// is retransmitted (§7.1, §10.3).
//
// It fixes the official client's reliability bugs (§11.3):
//   - resends update the send time, and every overdue frame is resent, not only the oldest; one timer is
//     armed for the earliest deadline instead of a 100 ms polling loop;
//   - the RTO is the estimator of §7.3 with Karn's rule (no sample from a retransmitted frame, whose ack is
//     ambiguous) and RFC 6298 §5.5 backoff (each timeout doubles the RTO up to the 1 s cap until a clean
//     sample), so a sudden RTT increase cannot freeze the RTO too low; the RTO stays within §7.3's 1 s cap
//     while acks make progress, and each timeout without ack progress doubles that cap up to
//     MaxRetransmitBackoff, so a peer that stopped acknowledging is not sent the window every second;
//   - duplicates are re-acknowledged, and no unacknowledged frame is ever evicted: the in-flight window is
//     bounded instead, so Send pushes back on the writer rather than buffering without limit;
//   - the reader never blocks on the local consumer: a full receive buffer drops new data frames without an
//     ack, and the peer retransmits them. Blocking there would stall ack processing for our own frames too,
//     the plugin's head-of-line stall (§9.4);
//   - frames ahead of the expected one are held (and acknowledged, §7.2) only within a horizon the store
//     can always hold, the plugin's 10,000 frames at the service's frame size; frames beyond it are dropped
//     unacknowledged, so a peer that resends its window in random order after a reconnect (§14) cannot
//     fill the store with far-ahead frames and starve the next expected ones.
//
// Pacing is a token bucket on new payload bytes, waited on with timers and contexts, never a sleep.
// pause_publication holds data frames (acks still flow) until start_publication or inbound data or ack
// (§10.1); channel_closed ends the channel with a *ChannelClosedError carrying the service's Output (§10.2).
//
// Concurrency contract: Send may be called from several goroutines (frames of one Send call get consecutive
// sequence numbers); Receive from one goroutine at a time; everything else from any goroutine.
package datachannel
