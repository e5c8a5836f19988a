package datachannel

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// Role says which end of the session a Channel plays. It decides the MessageType of the frames it sends and
// accepts (§1): a client sends input_stream_data and receives output_stream_data, an agent the reverse.
type Role int

const (
	// RoleClient is the port-forwarding client (the plugin's role).
	RoleClient Role = iota + 1
	// RoleAgent is the SSM Agent side, used by the emulator.
	RoleAgent
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleAgent:
		return "agent"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// sendType is the MessageType of the data frames this role sends.
func (r Role) sendType() message.MessageType {
	if r == RoleAgent {
		return message.OutputStreamData
	}
	return message.InputStreamData
}

// recvType is the MessageType of the data frames this role receives.
func (r Role) recvType() message.MessageType {
	if r == RoleAgent {
		return message.InputStreamData
	}
	return message.OutputStreamData
}

// Defaults and limits.
const (
	// DefaultMaxPayloadSize is the payload size the real service and agent use (1 KiB, §9.6). It is the only
	// size known to be accepted by the real message gateway; raise it only against the emulator or after
	// testing (§11.3 suggests staying ≤ 32 KiB).
	DefaultMaxPayloadSize = 1024
	// MaxPayloadSizeLimit is the largest MaxPayloadSize accepted, and with the header and headroom it sets the
	// default websocket read limit.
	MaxPayloadSizeLimit = 256 << 10
	// DefaultRate is the per-direction rate the real agent achieves with its 1 KiB + 1 ms pump (≈1 MB/s, §9.6).
	// Config.Rate zero means unlimited; callers that want the service's pace set DefaultRate explicitly.
	DefaultRate = 1_000_000
	// DefaultMaxInFlightBytes bounds unacknowledged frames (encoded size, headers included, so many small
	// frames are bounded too). 1 MiB covers 1 MB/s at a 1 s RTT and ~1 GB/s at 1 ms.
	DefaultMaxInFlightBytes = 1 << 20
	// DefaultReceiveBufferBytes bounds delivered-but-unread payload bytes. When full, in-order data frames are
	// dropped without an ack and the peer retransmits them (§7.2): the reader never blocks, so acks of our own
	// frames keep flowing even when the local consumer is slow (unlike the plugin's head-of-line stall, §9.4).
	DefaultReceiveBufferBytes = 1 << 20
	// DefaultOutOfOrderBytes bounds frames held ahead of the expected sequence number (encoded size, headers
	// included). 12 MiB holds DefaultMaxOutOfOrderFrames of the service's 1 KiB frames, 10,001 × (1,024 +
	// 120) B = 11.4 MB (the expected frame itself may wait here too while the receive queue is full), so at
	// the agent's frame size the frame limit, not the byte bound, is the horizon: a peer that resends its
	// whole window at once in any order after a reconnect (§14) is recovered in one round. It is a bound,
	// not an allocation: the store is empty unless frames arrive out of order.
	DefaultOutOfOrderBytes = 12 << 20
	// DefaultMaxOutOfOrderFrames is the official plugin's IncomingMessageBufferCapacity (§7.3): the farthest
	// ahead of the expected sequence number a frame may be and still be held.
	DefaultMaxOutOfOrderFrames = 10_000
)

// ResendOrder is the order in which a Channel resends its unacknowledged frames after a reconnect: on
// Attach, and when a pause of publication ends (the relay's peer came back, §10.1).
type ResendOrder int

const (
	// ResendInOrder resends oldest first, in sequence order, like the real agent (§14); after a pause, frames
	// are resent as their retransmission timeouts expire. The default.
	ResendInOrder ResendOrder = iota
	// ResendRandom resends the whole unacknowledged window at once, in random order, after every Attach
	// and every pause, as another correct implementation may (§14). It exists so that the emulator can
	// play such a peer; a receiver must recover from it within seconds.
	ResendRandom
)

func (o ResendOrder) String() string {
	switch o {
	case ResendInOrder:
		return "in-order"
	case ResendRandom:
		return "random"
	}
	return fmt.Sprintf("ResendOrder(%d)", int(o))
}

// Clock is the time source of a Channel, injectable so tests of the RTO estimator and the rate limiter run
// on virtual time instead of the wall clock.
type Clock interface {
	Now() time.Time
	// NewTimer returns a started timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Channel uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration)
}

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTimer wraps time.NewTimer.
func (SystemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time   { return t.t.C }
func (t sysTimer) Stop() bool            { return t.t.Stop() }
func (t sysTimer) Reset(d time.Duration) { t.t.Reset(d) }

// DefaultBurstWindow is how much of Rate the default token bucket holds for a sender that was idle: a
// burst stays bounded (100 KB at the agent's 1 MB/s, §9.6). A backlogged sender whose timers fire late,
// or whose process is stopped, is credited the lost time separately, up to MaxCatchUp (see tokenBucket).
const DefaultBurstWindow = 100 * time.Millisecond

// BurstFor is the default Burst for rate and a payload size: DefaultBurstWindow of rate, and at least one
// payload; 0 for an unlimited rate.
func BurstFor(rate int64, maxPayloadSize int) int64 {
	if rate <= 0 {
		return 0
	}
	return max(int64(maxPayloadSize), int64(float64(rate)*DefaultBurstWindow.Seconds()))
}

// Config configures a Channel. The zero value plus a Role is valid: withDefaults fills the rest.
type Config struct {
	// Role is required: RoleClient or RoleAgent.
	Role Role
	// MaxPayloadSize splits Output payloads into frames of at most this many bytes. Default 1024 (§9.6).
	MaxPayloadSize int
	// Rate is a token bucket on sent payload bytes per second for this channel (new data, not retransmits).
	// 0 means unlimited. DefaultRate reproduces the real agent's pace.
	Rate int64
	// Burst is what an idle sender may send at once, in bytes. Default: the larger of one payload and 100 ms
	// of Rate (DefaultBurstWindow). It must hold at least one payload, or a full-size frame could never be
	// sent.
	Burst int64
	// MaxInFlightBytes bounds the encoded size of unacknowledged frames: Send blocks while the window is full.
	// Default 1 MiB.
	MaxInFlightBytes int
	// ReceiveBufferBytes bounds in-order payload bytes waiting for Receive. Default 1 MiB.
	ReceiveBufferBytes int
	// OutOfOrderBytes bounds the encoded size of frames held ahead of the expected sequence number.
	// Default 12 MiB (DefaultOutOfOrderBytes).
	OutOfOrderBytes int
	// MaxOutOfOrderFrames is the horizon: a frame further than this ahead of the expected sequence number is
	// dropped without being held or acknowledged, and so is one further than the byte bound could hold at
	// the largest frame size received (see handleData). Default 10,000 (DefaultMaxOutOfOrderFrames).
	MaxOutOfOrderFrames int
	// ResendOrder is how unacknowledged frames are resent after a reconnect. Default ResendInOrder.
	ResendOrder ResendOrder
	// Logger receives debug logs of protocol oddities (unknown types, bad frames). Default: discard.
	Logger *slog.Logger
	// Clock is the time source. Default: the wall clock.
	Clock Clock
}

// Validate reports configuration errors with what to change.
func (c Config) Validate() error {
	if c.Role != RoleClient && c.Role != RoleAgent {
		return fmt.Errorf("%w: Role must be RoleClient or RoleAgent, got %v", ErrInvalidConfig, c.Role)
	}
	if c.MaxPayloadSize < 0 || c.MaxPayloadSize > MaxPayloadSizeLimit {
		return fmt.Errorf("%w: MaxPayloadSize %d must be between 1 and %d (0 for the default %d)",
			ErrInvalidConfig, c.MaxPayloadSize, MaxPayloadSizeLimit, DefaultMaxPayloadSize)
	}
	if c.Rate < 0 {
		return fmt.Errorf("%w: Rate %d must not be negative (0 means unlimited)", ErrInvalidConfig, c.Rate)
	}
	if c.Burst < 0 {
		return fmt.Errorf("%w: Burst %d must not be negative", ErrInvalidConfig, c.Burst)
	}
	d := c.withDefaults()
	if d.Rate > 0 && d.Burst < int64(d.MaxPayloadSize) {
		return fmt.Errorf("%w: Burst %d must hold at least one payload (MaxPayloadSize %d)",
			ErrInvalidConfig, d.Burst, d.MaxPayloadSize)
	}
	if c.MaxInFlightBytes < 0 || c.ReceiveBufferBytes < 0 || c.OutOfOrderBytes < 0 || c.MaxOutOfOrderFrames < 0 {
		return fmt.Errorf("%w: buffer sizes must not be negative", ErrInvalidConfig)
	}
	if c.ResendOrder != ResendInOrder && c.ResendOrder != ResendRandom {
		return fmt.Errorf("%w: ResendOrder %v must be ResendInOrder or ResendRandom", ErrInvalidConfig, c.ResendOrder)
	}
	if d.MaxInFlightBytes < message.HeaderSize+d.MaxPayloadSize {
		return fmt.Errorf("%w: MaxInFlightBytes %d must hold at least one full frame (%d bytes)",
			ErrInvalidConfig, d.MaxInFlightBytes, message.HeaderSize+d.MaxPayloadSize)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.MaxPayloadSize == 0 {
		c.MaxPayloadSize = DefaultMaxPayloadSize
	}
	if c.Burst == 0 && c.Rate > 0 {
		c.Burst = BurstFor(c.Rate, c.MaxPayloadSize)
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if c.ReceiveBufferBytes == 0 {
		c.ReceiveBufferBytes = DefaultReceiveBufferBytes
	}
	if c.OutOfOrderBytes == 0 {
		c.OutOfOrderBytes = DefaultOutOfOrderBytes
	}
	if c.MaxOutOfOrderFrames == 0 {
		c.MaxOutOfOrderFrames = DefaultMaxOutOfOrderFrames
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	return c
}
