// Package agent is the SSM Agent side of a port-forwarding session (ssm-protocol.md §8–§9), run by the
// emulator on its own datachannel.Channel (role Agent). It reproduces the real agent's protocol behaviour —
// handshake, mode selection including the keepalive trap of issue #93, smux server, ConnectToPortError,
// destination deny list — without its robustness bugs: a black-holed destination is dialled with a timeout
// outside the accept loop, so it never blocks other streams (§9.4 step 3).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// Defaults.
const (
	// DefaultAgentVersion is a current agent: mux mode, keepalive decided by the client version (§9.2).
	DefaultAgentVersion = "3.3.987.0"
	// DefaultHandshakeTimeout is the real agent's wait for the HandshakeResponse (§8.1).
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultDialTimeout bounds each destination dial.
	DefaultDialTimeout = 10 * time.Second
)

// Sentinel errors returned by Serve.
var (
	// ErrHandshakeTimeout: no HandshakeResponse within the handshake timeout (§8.1).
	ErrHandshakeTimeout = errors.New("agent: handshake timed out. Please ensure that you have the latest version of the session manager plugin")
	// ErrHandshakeFailed: the client reported a failed or unsupported action (§8.3).
	ErrHandshakeFailed = errors.New("agent: client rejected the handshake")
	// ErrDestinationForbidden: the destination is on the deny list or outside the allow list (§9.1).
	ErrDestinationForbidden = errors.New("agent: forwarding to this destination is forbidden")
	// ErrInvalidConfig wraps Config.Validate failures.
	ErrInvalidConfig = errors.New("agent: invalid config")
)

// Dialer opens destination connections; *net.Dialer satisfies it. Injectable for tests.
type Dialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}

// Config configures one port session.
type Config struct {
	// AgentVersion reported in the HandshakeRequest; four-part. Default DefaultAgentVersion.
	AgentVersion string
	// Properties are the resolved document properties sent in the handshake (§8.2); portNumber is required.
	Properties message.PortParameters
	// CustomerMessage is sent in HandshakeComplete.
	CustomerMessage string
	// HandshakeTimeout, default 15 s.
	HandshakeTimeout time.Duration
	// DialTimeout bounds each destination dial, default 10 s.
	DialTimeout time.Duration
	// AllowedDestinations restricts destination addresses. Empty means loopback only (127.0.0.0/8, ::1).
	// The link-local metadata addresses (DeniedDestinations) are refused whatever this says.
	AllowedDestinations []netip.Prefix
	// Dialer, default a *net.Dialer.
	Dialer Dialer
	// Logger, default discard.
	Logger *slog.Logger
}

// DeniedDestinations are the link-local service addresses of EC2 (IMDS, DNS, NTP, …) and their IPv6 forms,
// which the real agent refuses to forward to (§9.1). They are always denied.
var DeniedDestinations = []netip.Addr{
	netip.MustParseAddr("169.254.169.254"),
	netip.MustParseAddr("169.254.169.253"),
	netip.MustParseAddr("169.254.169.123"),
	netip.MustParseAddr("169.254.169.250"),
	netip.MustParseAddr("169.254.169.251"),
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("fd00:ec2::253"),
	netip.MustParseAddr("fd00:ec2::123"),
	netip.MustParseAddr("fd00:ec2::250"),
	netip.MustParseAddr("fd00:ec2::251"),
}

// Validate reports configuration errors.
func (c Config) Validate() error {
	if c.Properties.PortNumber == "" {
		return fmt.Errorf("%w: Properties.PortNumber is required", ErrInvalidConfig)
	}
	if c.AgentVersion != "" {
		if _, err := message.ParseVersion(c.AgentVersion); err != nil {
			return fmt.Errorf("%w: AgentVersion: %v", ErrInvalidConfig, err)
		}
	}
	return nil
}

// Serve runs one port session on ch, which must have role Agent and an attached (or soon attached)
// transport. It returns nil when the client ends the session with FlagTerminateSession (or, in basic
// non-LocalPortForwarding mode, when the destination closes), ctx.Err() when ctx is done, the channel's
// error when the channel ends, and a handshake error otherwise. It does not close ch.
func Serve(ctx context.Context, ch *datachannel.Channel, cfg Config) error {
	return errors.New("agent: not implemented")
}
