// Package agent is the SSM Agent side of a port-forwarding session (ssm-protocol.md §8–§9), run by the
// emulator on its own datachannel.Channel (role Agent). It reproduces the real agent's protocol behaviour —
// handshake, mode selection including the keepalive trap of aws/session-manager-plugin#93, smux server,
// ConnectToPortError, destination deny list — without its robustness bugs: a black-holed destination is
// dialled with a timeout outside the accept loop, so it never blocks other streams (§9.4 step 3).
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// Defaults.
const (
	// DefaultAgentVersion is a current agent: mux mode, keepalive decided by the client version (§9.2).
	DefaultAgentVersion = "3.3.987.0"
	// RemoteHostDenylistAgentVersion is the first agent that refuses loopback and the container credential
	// endpoints (RemoteHostDenied) as the host of AWS-StartPortForwardingSessionToRemoteHost (§14). Older
	// agents, DefaultAgentVersion among them, allow whatever AllowedDestinations allows.
	RemoteHostDenylistAgentVersion = "3.3.4851.0"
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
	// ErrNotMultiplexed is returned by Injector.Inject while the session carries no smux stream: before the
	// handshake completed, in basic mode, or after the session ended.
	ErrNotMultiplexed = errors.New("agent: the session is not running in multiplexed mode")
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
	// Resolver for properties.host, default net.DefaultResolver.
	Resolver Resolver
	// Dialer, default a *net.Dialer.
	Dialer Dialer
	// Injector, when set, lets the caller write raw bytes into the session's smux byte stream toward the
	// client while the session runs in mux mode (fault injection; see Injector).
	Injector *Injector
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

// RemoteHostDenied are the destinations an agent of RemoteHostDenylistAgentVersion or later refuses when they
// come from the document's host parameter (§14): the instance's own loopback, which
// AWS-StartPortForwardingSession reaches by design, and the ECS and EKS container credential endpoints.
// The real agent checks them after normalising IP notations, as resolveDestination does.
var RemoteHostDenied = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("169.254.170.2/32"),  // ECS task metadata and credentials
	netip.MustParsePrefix("169.254.170.23/32"), // EKS Pod Identity
	netip.MustParsePrefix("fd00:ec2::23/128"),  // EKS Pod Identity, IPv6
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

func (c Config) withDefaults() Config {
	if c.AgentVersion == "" {
		c.AgentVersion = DefaultAgentVersion
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.Dialer == nil {
		c.Dialer = &net.Dialer{}
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Resolver looks up destination host names; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Mode is how the session carries connections (§9.2).
type Mode int

const (
	// ModeBasic carries one destination connection at a time as raw bytes (§9.3).
	ModeBasic Mode = iota + 1
	// ModeMux carries an smux v1 session, one stream per client connection (§9.4).
	ModeMux
)

func (m Mode) String() string {
	switch m {
	case ModeBasic:
		return "basic"
	case ModeMux:
		return "mux"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// SelectMode applies the agent's rules of §9.2: mux iff the session type is LocalPortForwarding, the agent
// is newer than 3.0.196.0 (older agents predate smux) and the client is at least 1.1.70; smux keepalive is
// disabled iff the client is newer than 1.2.331.0. A plugin built from source reports 1.2.0.0 and so gets
// keepalive on while it disables its own — aws/session-manager-plugin#93, reproduced on purpose.
func SelectMode(props message.PortParameters, agentVersion, clientVersion message.Version) (mode Mode, keepAliveDisabled bool) {
	mode = ModeBasic
	if props.Type == message.LocalPortForwarding &&
		agentVersion.Compare(message.LastBasicAgentVersion) > 0 &&
		clientVersion.Compare(message.MinMuxClientVersion) >= 0 {
		mode = ModeMux
	}
	return mode, clientVersion.Compare(message.ClientKeepAliveOffAbove) > 0
}

// lenientVersion parses a client version the way the agent's versionutil compares it: numeric components,
// missing ones zero; anything unparsable (including empty) is the lowest version.
func lenientVersion(s string) message.Version {
	var v message.Version
	if s == "" {
		return v
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return message.Version{}
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return message.Version{}
		}
		v[i] = n
	}
	return v
}

// Policy decides which destination addresses a session may reach (§9.1, §14).
type policy struct {
	allowed []netip.Prefix
	// remoteHost says the agent applies RemoteHostDenied: the address comes from the host parameter and
	// the agent is RemoteHostDenylistAgentVersion or later.
	remoteHost bool
}

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

func newPolicy(allowed []netip.Prefix, remoteHost bool) policy {
	if len(allowed) == 0 {
		allowed = loopback
	}
	return policy{allowed: allowed, remoteHost: remoteHost}
}

// check returns nil if addr may be dialled.
func (p policy) check(addr netip.Addr) error {
	addr = addr.Unmap()
	for _, d := range DeniedDestinations {
		if addr == d {
			return fmt.Errorf("%w: forwarding to IP address %s is forbidden (link-local service address)", ErrDestinationForbidden, addr)
		}
	}
	if p.remoteHost {
		for _, pr := range RemoteHostDenied {
			if pr.Contains(addr) {
				return fmt.Errorf("%w: forwarding to IP address %s is forbidden as the host parameter by agents %s and later (loopback or a container credential endpoint); use %s for ports on the instance itself",
					ErrDestinationForbidden, addr, RemoteHostDenylistAgentVersion, "AWS-StartPortForwardingSession")
			}
		}
	}
	for _, pr := range p.allowed {
		if pr.Contains(addr) {
			return nil
		}
	}
	return fmt.Errorf("%w: forwarding to IP address %s is not allowed (allowed: %v)", ErrDestinationForbidden, addr, p.allowed)
}

// resolveDestination resolves host once at session start, like the agent, and checks every address: one
// denied address fails the session (§9.1). Without a host parameter the destination is the instance's
// localhost (AWS-StartPortForwardingSession); with one, an agent of RemoteHostDenylistAgentVersion or later
// also refuses RemoteHostDenied, the name localhost included (§14).
func resolveDestination(ctx context.Context, cfg Config) ([]string, error) {
	host := cfg.Properties.Host
	remoteHost := host != "" && message.MustParseVersion(cfg.AgentVersion).Compare(message.MustParseVersion(RemoteHostDenylistAgentVersion)) >= 0
	if host == "" {
		host = "localhost"
	}
	port, err := strconv.ParseUint(cfg.Properties.PortNumber, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("agent: portNumber %q is not a TCP port (1-65535)", cfg.Properties.PortNumber)
	}
	if remoteHost && isLocalhostName(host) {
		return nil, fmt.Errorf("%w: forwarding to %s is forbidden as the host parameter by agents %s and later; use %s for ports on the instance itself",
			ErrDestinationForbidden, host, RemoteHostDenylistAgentVersion, "AWS-StartPortForwardingSession")
	}
	var addrs []netip.Addr
	if a, ok := parseHostAddr(host); ok {
		addrs = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		addrs, err = cfg.Resolver.LookupNetIP(rctx, "ip", host)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("agent: resolve destination host %q: %w", host, err)
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("agent: destination host %q has no addresses", host)
	}
	pol := newPolicy(cfg.AllowedDestinations, remoteHost)
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if err := pol.check(a); err != nil {
			return nil, err
		}
		out = append(out, net.JoinHostPort(a.Unmap().String(), strconv.FormatUint(port, 10)))
	}
	return out, nil
}

// isLocalhostName reports whether host is the name localhost or a name under it, which resolve to loopback
// (RFC 6761 §6.3), whatever the case and with or without the root's trailing dot.
func isLocalhostName(host string) bool {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// parseHostAddr reads host as an IP address in any notation the system's resolver accepts, so that no
// spelling of a denied address slips past the policy: IPv6 with or without brackets (and IPv4-mapped forms,
// which check unmaps), and the inet_aton forms of IPv4 (decimal, octal with a leading 0, hex with 0x, in
// one to four parts: 127.1, 0x7f000001, 2130706433, 0177.0.0.1).
func parseHostAddr(host string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, true
	}
	// A bracketed IPv6 literal; only a matched pair is brackets ("::%]" is :: in zone "]").
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		if a, err := netip.ParseAddr(host[1 : len(host)-1]); err == nil {
			return a, true
		}
	}
	parts := strings.Split(host, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base := 10
		switch {
		case len(p) > 2 && (p[:2] == "0x" || p[:2] == "0X"):
			p, base = p[2:], 16
		case len(p) > 1 && p[0] == '0':
			p, base = p[1:], 8
		}
		v, err := strconv.ParseUint(p, base, 32)
		if err != nil || p == "" || p[0] == '+' {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	// All but the last part are one byte each; the last fills the remaining bytes.
	var ip uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		ip |= v << (24 - 8*i)
	}
	last, bits := vals[len(vals)-1], 32-8*(len(vals)-1)
	if last >= 1<<bits {
		return netip.Addr{}, false
	}
	ip |= last
	return netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}), true
}

// dial tries each resolved address in turn within one DialTimeout.
func dial(ctx context.Context, cfg Config, addrs []string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	var firstErr error
	for _, a := range addrs {
		conn, err := cfg.Dialer.DialContext(ctx, "tcp", a)
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, fmt.Errorf("agent: dial destination: %w", firstErr)
}

// Serve runs one port session on ch, which must have role Agent and an attached (or soon attached)
// transport. It returns nil when the client ends the session with FlagTerminateSession (or, in basic mode
// without LocalPortForwarding, when the destination closes), ctx.Err() when ctx is done, the channel's
// error when the channel ends, and a handshake or destination error otherwise. It does not close ch.
func Serve(ctx context.Context, ch *datachannel.Channel, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if ch.Role() != datachannel.RoleAgent {
		return fmt.Errorf("%w: the channel must have role agent, has %v", ErrInvalidConfig, ch.Role())
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	agentVersion := message.MustParseVersion(cfg.AgentVersion) // validated

	// §9.1: the destination is resolved and checked at session start; a forbidden one fails the session.
	addrs, err := resolveDestination(ctx, cfg)
	if err != nil {
		return err
	}

	var (
		mode          Mode
		keepAliveOff  bool
		local, remote net.Conn
	)
	clientVersion, took, err := handshake(ctx, ch, cfg, func(clientVersion message.Version) {
		mode, keepAliveOff = SelectMode(cfg.Properties, agentVersion, clientVersion)
		if mode == ModeMux {
			// The smux pipe exists before HandshakeComplete leaves, so that an Injector works as soon as the
			// client's handshake has returned.
			local, remote = net.Pipe()
			cfg.Injector.set(remote)
		}
	})
	if err != nil {
		if local != nil {
			_ = local.Close()
			_ = remote.Close()
			cfg.Injector.set(nil)
		}
		return err
	}
	log.Info("Port session started", "mode", mode.String(), "clientVersion", clientVersion.String(),
		"smuxKeepAliveDisabled", keepAliveOff, "handshake", took)

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &session{parent: parent, ctx: ctx, cancel: cancel, ch: ch, cfg: cfg, log: log, addrs: addrs}
	if mode == ModeMux {
		return s.serveMux(local, remote, keepAliveOff)
	}
	return s.serveBasic()
}

// handshake sends the HandshakeRequest, waits for the response (discarding data that arrives first, like
// the agent), calls accepted with the client's version and sends HandshakeComplete (§8).
func handshake(ctx context.Context, ch *datachannel.Channel, cfg Config, accepted func(message.Version)) (message.Version, time.Duration, error) {
	start := time.Now()
	params, err := json.Marshal(message.SessionTypeRequest{SessionType: message.SessionTypePort, Properties: cfg.Properties})
	if err != nil {
		return message.Version{}, 0, fmt.Errorf("agent: encode handshake: %w", err)
	}
	req, err := json.Marshal(message.HandshakeRequest{
		AgentVersion:           cfg.AgentVersion,
		RequestedClientActions: []message.RequestedClientAction{{ActionType: message.ActionSessionType, ActionParameters: params}},
	})
	if err != nil {
		return message.Version{}, 0, fmt.Errorf("agent: encode handshake: %w", err)
	}
	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	if err := ch.Send(hctx, message.PayloadHandshakeRequest, req); err != nil {
		return message.Version{}, 0, handshakeErr(ctx, hctx, err)
	}
	var clientVersion message.Version
	for {
		pt, p, err := ch.Receive(hctx)
		if err != nil {
			return message.Version{}, 0, handshakeErr(ctx, hctx, err)
		}
		if pt != message.PayloadHandshakeResponse {
			cfg.Logger.Debug("Discarding data received before the handshake completed", "payloadType", pt.String())
			continue
		}
		clientVersion, err = checkHandshakeResponse(p)
		if err != nil {
			return message.Version{}, 0, err
		}
		break
	}
	accepted(clientVersion)
	took := time.Since(start)
	done, err := json.Marshal(message.HandshakeComplete{HandshakeTimeToComplete: took, CustomerMessage: cfg.CustomerMessage})
	if err != nil {
		return message.Version{}, 0, fmt.Errorf("agent: encode handshake complete: %w", err)
	}
	if err := ch.Send(ctx, message.PayloadHandshakeComplete, done); err != nil {
		return message.Version{}, 0, err
	}
	return clientVersion, took, nil
}

func handshakeErr(ctx, hctx context.Context, err error) error {
	if ctx.Err() == nil && errors.Is(hctx.Err(), context.DeadlineExceeded) {
		return ErrHandshakeTimeout
	}
	return err
}

// checkHandshakeResponse decodes the client's HandshakeResponse (§8.3): every action must have succeeded
// (the agent treats any other status as failure), the SessionType action among them. It returns the client
// version, read leniently like the agent does.
func checkHandshakeResponse(p []byte) (message.Version, error) {
	var resp message.HandshakeResponse
	if err := message.DecodeJSON(message.PayloadHandshakeResponse, p, &resp); err != nil {
		return message.Version{}, fmt.Errorf("%w: %w", ErrHandshakeFailed, err)
	}
	sessionTypeOK := false
	for _, a := range resp.ProcessedClientActions {
		if a.ActionStatus != message.ActionSuccess {
			return message.Version{}, fmt.Errorf("%w: action %s has status %d: %s", ErrHandshakeFailed, a.ActionType, a.ActionStatus, a.Error)
		}
		if a.ActionType == message.ActionSessionType {
			sessionTypeOK = true
		}
	}
	if !sessionTypeOK {
		return message.Version{}, fmt.Errorf("%w: the client did not process the SessionType action", ErrHandshakeFailed)
	}
	return lenientVersion(resp.ClientVersion), nil
}
