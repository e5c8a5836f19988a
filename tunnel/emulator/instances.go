package emulator

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/ssmtunnel/ssmtunnel/tunnel/agent"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// Ping statuses of a managed instance, as DescribeInstanceInformation reports them. StartSession succeeds only
// for an Online instance; anything else is TargetNotConnected, like the real service.
const (
	PingOnline         = "Online"
	PingConnectionLost = "ConnectionLost"
	PingInactive       = "Inactive"
)

// DefaultAgentVersion is a current SSM Agent: multiplexed port forwarding with smux keepalive off (§9.2).
const DefaultAgentVersion = "3.3.987.0"

// BasicAgentVersion is the newest agent without multiplexing (§9.2); an instance reporting it forces the
// client into basic mode.
const BasicAgentVersion = "3.0.196.0"

// DenylistAgentVersion is the first agent that refuses loopback and the ECS/EKS container credential
// endpoints as the host of AWS-StartPortForwardingSessionToRemoteHost (§14): a session to such a host on an
// instance reporting it (SetAgentVersion) fails at start with channel_closed naming the address, as a
// forbidden destination does. AWS-StartPortForwardingSession still reaches the instance's localhost.
const DenylistAgentVersion = agent.RemoteHostDenylistAgentVersion

// AllowAny in AllowedDestinations lets the agent dial any address except the denied metadata addresses.
const AllowAny = "any"

// EC2 instance IDs have 8 (old) or 17 hex digits; hybrid managed instances have 17.
var (
	ec2IDPattern     = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	managedIDPattern = regexp.MustCompile(`^mi-[0-9a-f]{17}$`)
)

// Instance is one emulated managed node with its SSM Agent.
type Instance struct {
	// ID is an EC2 instance ID (i- and 8 or 17 lowercase hex digits) or a managed instance ID (mi- and 17).
	ID string `json:"id"`
	// Tags are matched by DescribeInstanceInformation filters "tag:<key>" and "tag-key".
	Tags map[string]string `json:"tags,omitempty"`
	// AgentVersion is the four-part agent version sent in the handshake (§8.2). Default DefaultAgentVersion;
	// BasicAgentVersion or older forces basic mode (§9.2).
	AgentVersion string `json:"agentVersion,omitempty"`
	// PingStatus is PingOnline (default), PingConnectionLost or PingInactive.
	PingStatus string `json:"pingStatus,omitempty"`
	// AllowedDestinations are CIDRs (or AllowAny) the agent may dial, replacing Config.AllowedDestinations for
	// this instance when set. Metadata link-local addresses are always denied (§9.1).
	AllowedDestinations []string `json:"allowedDestinations,omitempty"`
	// PlatformType is reported by DescribeInstanceInformation. Default "Linux".
	PlatformType string `json:"platformType,omitempty"`
}

// ResourceType is what DescribeInstanceInformation reports: EC2Instance for i-, ManagedInstance for mi-.
func (in Instance) ResourceType() string {
	if strings.HasPrefix(in.ID, "mi-") {
		return "ManagedInstance"
	}
	return "EC2Instance"
}

func (in Instance) withDefaults() Instance {
	if in.AgentVersion == "" {
		in.AgentVersion = DefaultAgentVersion
	}
	if in.PingStatus == "" {
		in.PingStatus = PingOnline
	}
	if in.PlatformType == "" {
		in.PlatformType = "Linux"
	}
	return in
}

// Validate reports what is wrong with the instance definition.
func (in Instance) Validate() error {
	if !ec2IDPattern.MatchString(in.ID) && !managedIDPattern.MatchString(in.ID) {
		return fmt.Errorf("%w: instance ID %q must be i- followed by 8 or 17 lowercase hex digits, or mi- followed by 17",
			ErrInvalidConfig, in.ID)
	}
	if in.AgentVersion != "" {
		if _, err := message.ParseVersion(in.AgentVersion); err != nil {
			return fmt.Errorf("%w: instance %s: agent version %q must have four numeric parts like %s",
				ErrInvalidConfig, in.ID, in.AgentVersion, DefaultAgentVersion)
		}
	}
	if err := validPingStatus(in.PingStatus); err != nil && in.PingStatus != "" {
		return fmt.Errorf("instance %s: %w", in.ID, err)
	}
	if _, err := ParseDestinations(in.AllowedDestinations); err != nil {
		return fmt.Errorf("instance %s: %w", in.ID, err)
	}
	for k := range in.Tags {
		if k == "" {
			return fmt.Errorf("%w: instance %s: tag keys must not be empty", ErrInvalidConfig, in.ID)
		}
	}
	return nil
}

func validPingStatus(s string) error {
	switch s {
	case PingOnline, PingConnectionLost, PingInactive:
		return nil
	}
	return fmt.Errorf("%w: ping status %q must be %s, %s or %s", ErrInvalidConfig, s, PingOnline, PingConnectionLost, PingInactive)
}

// Destinations says which addresses an emulated agent may dial.
type Destinations struct {
	// Any allows every address except the denied ones.
	Any bool
	// Prefixes are the allowed networks when Any is false.
	Prefixes []netip.Prefix
}

// ParseDestinations reads CIDRs, bare addresses or AllowAny. Nil or empty means the default, loopback only.
func ParseDestinations(list []string) (Destinations, error) {
	var d Destinations
	if len(list) == 0 {
		return DefaultDestinations(), nil
	}
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch {
		case s == AllowAny:
			d.Any = true
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return d, fmt.Errorf("%w: allowed destination %q is not a CIDR (like 10.0.0.0/8) or %q", ErrInvalidConfig, s, AllowAny)
			}
			d.Prefixes = append(d.Prefixes, p.Masked())
		default:
			a, err := netip.ParseAddr(s)
			if err != nil {
				return d, fmt.Errorf("%w: allowed destination %q is not a CIDR (like 10.0.0.0/8), an address or %q", ErrInvalidConfig, s, AllowAny)
			}
			d.Prefixes = append(d.Prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return d, nil
}

// DefaultDestinations is loopback only: the instance's own localhost, where port forwarding points by
// default.
func DefaultDestinations() Destinations {
	return Destinations{Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
}

// Allowed reports whether the agent may dial a.
func (d Destinations) Allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, x := range agent.DeniedDestinations { // §9.1
		if a == x {
			return false
		}
	}
	if d.Any {
		return true
	}
	for _, p := range d.Prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// String lists the allowed networks, for logs and errors.
func (d Destinations) String() string {
	if d.Any {
		return AllowAny
	}
	s := make([]string, len(d.Prefixes))
	for i, p := range d.Prefixes {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
