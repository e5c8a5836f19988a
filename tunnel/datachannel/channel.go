package datachannel

import (
	"context"
	"errors"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

var errNotImplemented = errors.New("datachannel: not implemented")

// Channel is one end of a reliable, ordered data channel (§7). See the package doc for its life cycle.
type Channel struct {
	cfg Config
	die chan struct{}
	tf  chan error
}

// New returns a Channel with no transport: Send queues up to the window until Attach.
func New(cfg Config) (*Channel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Channel{cfg: cfg.withDefaults(), die: make(chan struct{}), tf: make(chan error, 1)}, nil
}

// Attach starts the channel on t, replacing (and closing) any current transport. Sequence numbers continue
// and every unacknowledged frame is retransmitted on t (§7.1, §10.3 step 4).
func (c *Channel) Attach(t Transport) {}

// TransportFailed delivers the error of each transport that dies under the channel (read or write error,
// dead link). The owner then resumes the session and Attaches a new transport. A transport replaced by
// Attach or closed by Close is not reported.
func (c *Channel) TransportFailed() <-chan error { return c.tf }

// Send sends p as sequenced data frames of payload type pt. Output payloads are split into frames of at most
// MaxPayloadSize bytes; other payload types (handshake JSON, flags) always travel as one frame. Send blocks
// while the in-flight window is full, the rate limiter has no tokens or the service paused publication
// (§10.1), and returns when every frame is queued for the transport (not when it is acknowledged). p may be
// reused after Send returns.
func (c *Channel) Send(ctx context.Context, pt message.PayloadType, p []byte) error {
	return errNotImplemented
}

// Receive returns the next in-order data payload and its payload type. The payload is owned by the caller.
func (c *Channel) Receive(ctx context.Context) (message.PayloadType, []byte, error) {
	return 0, nil, errNotImplemented
}

// Flush blocks until every frame sent so far has been acknowledged, the channel ends, or ctx is done.
func (c *Channel) Flush(ctx context.Context) error { return errNotImplemented }

// Done is closed when the channel ends: Close, or channel_closed from the service.
func (c *Channel) Done() <-chan struct{} { return c.die }

// Err is nil while the channel is open; afterwards ErrClosed, or a *ChannelClosedError carrying the
// service's message (§10.2).
func (c *Channel) Err() error { return nil }

// Close ends the channel and closes its transport. Pending Send and Receive calls return ErrClosed.
func (c *Channel) Close() error { return nil }

// Stats returns a snapshot of the counters.
func (c *Channel) Stats() Stats { return Stats{} }

// Role returns the role the channel was created with.
func (c *Channel) Role() Role { return c.cfg.Role }
