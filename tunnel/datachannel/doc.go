// Package datachannel is the reliable, ordered data channel of a Session Manager session (ssm-protocol.md
// §4, §7, §8, §10), used by both ends: the client (role Client, sends input_stream_data) and the emulated
// agent (role Agent, sends output_stream_data).
//
// A Channel owns the sequence numbers of both directions and survives its transport: the owner attaches a
// Transport (a websocket from DialClient, or an in-memory Pipe), is told through TransportFailed when it
// dies, and attaches a new one after ResumeSession; sequence numbers continue and every unacknowledged frame
// is retransmitted (§7.1, §10.3).
//
// It fixes the official client's reliability bugs (§11.3): resends update the send time, every overdue frame
// is resent (not only the oldest), duplicates are re-acknowledged, no unacknowledged frame is ever evicted,
// and the in-flight window is bounded so Send pushes back on the writer instead of buffering without limit.
// Pacing is a token bucket driven by timers, never a sleep.
//
// Concurrency contract: Send may be called from several goroutines (frames of one Send call stay contiguous
// in sequence order); Receive from one goroutine at a time; everything else from any goroutine.
package datachannel
