// Package portforward is the data plane of a tunnel: local listeners, one smux stream per accepted TCP
// connection over a session's data channel (§9.4), the basic one-connection-at-a-time mode for old agents
// (§9.3), a pool of independent sessions per port, metrics, readiness and a graceful drain.
package portforward

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// PortPair is one LOCAL:REMOTE forwarding. Local 0 asks for an ephemeral port, reported once bound.
type PortPair struct {
	Local, Remote int
}

func (p PortPair) String() string { return fmt.Sprintf("%d:%d", p.Local, p.Remote) }

// ErrBadPortPair is wrapped by ParsePortPair errors.
var ErrBadPortPair = errors.New("port pair must be LOCAL:REMOTE or PORT, with LOCAL 0-65535 (0 = any free port) and REMOTE 1-65535")

// ParsePortPair reads "LOCAL:REMOTE", or "PORT" meaning PORT:PORT, like kubectl port-forward.
func ParsePortPair(s string) (PortPair, error) {
	local, remote, found := strings.Cut(s, ":")
	if !found {
		remote = local
	}
	l, err1 := strconv.Atoi(local)
	r, err2 := strconv.Atoi(remote)
	if local == "" && found {
		l, err1 = 0, nil // ":REMOTE" = ephemeral local port, as kubectl accepts
	}
	if err1 != nil || err2 != nil || l < 0 || l > 65535 || r < 1 || r > 65535 {
		return PortPair{}, fmt.Errorf("%w: got %q", ErrBadPortPair, s)
	}
	return PortPair{Local: l, Remote: r}, nil
}

// ParsePortPairs parses every pair and rejects a local port used twice (0 may repeat).
func ParsePortPairs(args []string) ([]PortPair, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: at least one is required", ErrBadPortPair)
	}
	seen := map[int]bool{}
	out := make([]PortPair, 0, len(args))
	for _, a := range args {
		p, err := ParsePortPair(a)
		if err != nil {
			return nil, err
		}
		if p.Local != 0 && seen[p.Local] {
			return nil, fmt.Errorf("local port %d is used twice: each LOCAL:REMOTE pair needs its own local port", p.Local)
		}
		seen[p.Local] = true
		out = append(out, p)
	}
	return out, nil
}

// Defaults.
const (
	DefaultAddress        = "127.0.0.1"
	DefaultDrainTimeout   = 20 * time.Second
	DefaultConnectTimeout = 30 * time.Second
	DefaultStallTimeout   = 15 * time.Second
	MaxSessionsPerPort    = 64
	// DefaultSessionReceiveBuffer is smux's session-wide receive bucket on the client (the official peers
	// use 4 MiB, §9.4). smux v1 has no per-stream window (§9.7), so a stream whose local reader stops keeps
	// its bytes in this bucket; a larger one lets it hold its share while the others keep flowing. It is
	// an upper bound on buffered bytes, not a preallocation: at most this much per session (times
	// --sessions, times ports) while local readers lag.
	DefaultSessionReceiveBuffer = 16 << 20
	// MinSessionReceiveBuffer holds two of the agent's largest smux frames (32 KiB, §9.4).
	MinSessionReceiveBuffer = 64 << 10
	// MaxSessionReceiveBuffer is smux's limit (an int32 bucket), rounded down.
	MaxSessionReceiveBuffer = 1 << 30
	// DefaultStreamStallTimeout: see Config.StreamStallTimeout.
	DefaultStreamStallTimeout = 10 * time.Second
	// DefaultIdleParkAfter: see Config.IdleParkAfter.
	DefaultIdleParkAfter = time.Second
	// DefaultPartitionTimeout: see Config.PartitionTimeout.
	DefaultPartitionTimeout = 60 * time.Second
	// DefaultReconnectJitter: see Config.ReconnectJitter.
	DefaultReconnectJitter = 2 * time.Second
	// DefaultMaxBasicSessions: see Config.MaxBasicSessions. Browsers open six connections per host.
	DefaultMaxBasicSessions = 8
	// MaxBasicSessionsLimit bounds Config.MaxBasicSessions.
	MaxBasicSessionsLimit = 256
)

// Reconnect says when a session the service ended (idle timeout, maximum duration, administrator) is
// replaced.
type Reconnect int

const (
	// ReconnectEager starts the new session at once (after up to ReconnectJitter), so the port stays ready:
	// what a tunnel pod behind a Service needs.
	ReconnectEager Reconnect = iota
	// ReconnectLazy starts it when the next connection arrives, so an idle laptop tunnel does not open a
	// session every idle timeout for nobody; that connection waits for the session's start.
	ReconnectLazy
)

// ParseReconnect reads "eager" or "lazy".
func ParseReconnect(s string) (Reconnect, error) {
	switch s {
	case "eager":
		return ReconnectEager, nil
	case "lazy":
		return ReconnectLazy, nil
	}
	return 0, fmt.Errorf("reconnect mode %q must be eager or lazy", s)
}

func (r Reconnect) String() string {
	if r == ReconnectLazy {
		return "lazy"
	}
	return "eager"
}

// Config configures a Forwarder.
type Config struct {
	// Target, RemoteHost, Document and Reason are passed to every StartSession (see session.Spec).
	Target, RemoteHost, Document, Reason string
	// Ports are the forwardings; each gets its own listener and its own session pool.
	Ports []PortPair
	// Address is the listen address (IP or host name). Default 127.0.0.1; 0.0.0.0 in a pod.
	Address string
	// Sessions is the number of independent sessions per port (the pool). Default 1.
	Sessions int
	// DrainTimeout bounds how long shutdown waits for open connections. Default 20s.
	DrainTimeout time.Duration
	// ConnectTimeout bounds how long an accepted connection waits for a ready session. Default 30s.
	ConnectTimeout time.Duration
	// StallTimeout: a session whose unacknowledged frames see no ack for this long counts as stalled: not
	// ready and given no new connections. Default 15s.
	StallTimeout time.Duration
	// SessionReceiveBuffer is the smux session-wide receive bucket in bytes on this side (default 16 MiB,
	// DefaultSessionReceiveBuffer): the most a session buffers for local readers that lag.
	SessionReceiveBuffer int
	// StreamStallTimeout resets a stream whose local socket has refused data for this long (its copy
	// blocked in one write while the kernel's send buffer stays full) while bytes from the agent wait for
	// it. smux v1 has no per-stream flow control (§9.4, §9.7): such a stream would otherwise fill the
	// session's buffer and stop every other stream of the session. A copy that is merely slow to be
	// scheduled never counts. When the session's buffer is half full, a tenth of this timeout applies to the
	// stream holding most of it, since the whole session is about to stop. Default 10s.
	StreamStallTimeout time.Duration
	// IdleParkAfter is how long a local connection may send nothing before its reading goroutine ends and
	// the connection waits in the forwarder's shared poller instead (Linux), so idle connections cost no
	// goroutine stack. A connection that sends after that wakes with one epoll event and a goroutine
	// start. Default 1s.
	IdleParkAfter time.Duration
	// Reconnect chooses when a session the service ended is replaced. Default ReconnectEager.
	Reconnect Reconnect
	// ReconnectJitter: under ReconnectEager a replacement starts after a random delay below this, so
	// replicas whose sessions ended together do not start and end in step. Default 2s; negative: none.
	ReconnectJitter time.Duration
	// RetryStart keeps the listeners up and retries (capped backoff, at most a minute apart) when the first
	// sessions cannot be started — target not connected, throttled, credentials refused — instead of Run
	// returning the error. Tunnel pods set it; on a laptop the error is reported at once.
	RetryStart bool
	// PartitionTimeout: a session that has been resuming this long is given up and replaced, and its
	// connections are reset, so client pools reconnect instead of hanging. Default 60s.
	PartitionTimeout time.Duration
	// MaxConnections bounds the local connections open at once per port; excess ones are reset at once.
	// 0 is unlimited.
	MaxConnections int
	// MaxBasicSessions bounds the sessions of a port in basic mode, where each concurrent connection needs
	// a session of its own (§9.3). Default 8.
	MaxBasicSessions int
	// ProbeInterval, when set, opens a probe connection through each ready port this often, so the port's
	// Destination is known without traffic: the agent dials the destination, the probe ends at once, and
	// the destination sees a connection open and close (a database may log it). 0 is off; at least 1s.
	ProbeInterval time.Duration
	// Out receives the "Forwarding from ..." lines (stdout in the CLI). Nil: discarded.
	Out io.Writer
	// Logger for connection and session events. Default: discard.
	Logger *slog.Logger
}

// Validate says what to fix.
func (c Config) Validate() error {
	spec := session.Spec{Target: c.Target, RemoteHost: c.RemoteHost, Document: c.Document, Reason: c.Reason, RemotePort: 1}
	if err := spec.Validate(); err != nil {
		return err
	}
	if len(c.Ports) == 0 {
		return fmt.Errorf("%w: at least one is required", ErrBadPortPair)
	}
	seen := map[int]bool{}
	for _, p := range c.Ports {
		if p.Local < 0 || p.Local > 65535 || p.Remote < 1 || p.Remote > 65535 {
			return fmt.Errorf("%w: got %s", ErrBadPortPair, p)
		}
		if p.Local != 0 && seen[p.Local] {
			return fmt.Errorf("local port %d is used twice", p.Local)
		}
		seen[p.Local] = true
	}
	if c.Address != "" {
		if strings.ContainsAny(c.Address, " /") || strings.Count(c.Address, ":") == 1 {
			return fmt.Errorf("--address %q must be an IP address or host name without a port", c.Address)
		}
	}
	if c.Sessions < 0 || c.Sessions > MaxSessionsPerPort {
		return fmt.Errorf("--sessions must be between 1 and %d, got %d", MaxSessionsPerPort, c.Sessions)
	}
	if c.DrainTimeout < 0 || c.ConnectTimeout < 0 || c.StallTimeout < 0 || c.StreamStallTimeout < 0 || c.IdleParkAfter < 0 || c.PartitionTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	if c.Reconnect != ReconnectEager && c.Reconnect != ReconnectLazy {
		return fmt.Errorf("Reconnect %d is neither ReconnectEager nor ReconnectLazy", c.Reconnect)
	}
	if c.ProbeInterval != 0 && c.ProbeInterval < time.Second {
		return fmt.Errorf("--probe-interval must be at least 1s (0 is off), got %s", c.ProbeInterval)
	}
	if c.MaxConnections < 0 {
		return fmt.Errorf("--max-connections must not be negative (0 is unlimited), got %d", c.MaxConnections)
	}
	if c.MaxBasicSessions < 0 || c.MaxBasicSessions > MaxBasicSessionsLimit {
		return fmt.Errorf("--max-basic-sessions must be between 1 and %d (0 for the default %d), got %d",
			MaxBasicSessionsLimit, DefaultMaxBasicSessions, c.MaxBasicSessions)
	}
	if b := c.SessionReceiveBuffer; b != 0 && (b < MinSessionReceiveBuffer || b > MaxSessionReceiveBuffer) {
		return fmt.Errorf("--session-receive-buffer must be between %d and %d bytes (0 for the default %d), got %d",
			MinSessionReceiveBuffer, MaxSessionReceiveBuffer, DefaultSessionReceiveBuffer, b)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Address == "" {
		c.Address = DefaultAddress
	}
	if c.Sessions == 0 {
		c.Sessions = 1
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.SessionReceiveBuffer == 0 {
		c.SessionReceiveBuffer = DefaultSessionReceiveBuffer
	}
	if c.StreamStallTimeout == 0 {
		c.StreamStallTimeout = DefaultStreamStallTimeout
	}
	if c.IdleParkAfter == 0 {
		c.IdleParkAfter = DefaultIdleParkAfter
	}
	if c.PartitionTimeout == 0 {
		c.PartitionTimeout = DefaultPartitionTimeout
	}
	if c.ReconnectJitter == 0 {
		c.ReconnectJitter = DefaultReconnectJitter
	}
	if c.MaxBasicSessions == 0 {
		c.MaxBasicSessions = DefaultMaxBasicSessions
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func listenAddr(address string, port int) string {
	return net.JoinHostPort(strings.Trim(address, "[]"), strconv.Itoa(port))
}
