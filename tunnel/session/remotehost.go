package session

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrDeniedRemoteHost is wrapped by CheckRemoteHost for a host no session may forward to.
var ErrDeniedRemoteHost = errors.New("remote host is denied")

// The remote hosts no port forwarding may reach, whatever a policy allows: through the instance they would
// reach the instance's own credentials (the EC2 metadata service, the ECS and EKS Pod Identity credential
// endpoints) or services bound to its loopback on purpose. The PortForward API refuses the same hosts with
// CEL rules (api/v1alpha1), and a test feeds every notation below through both.
var deniedPrefixes = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	// 169.254.169.254 metadata, 169.254.170.2 ECS credentials, 169.254.170.23 EKS Pod Identity.
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (instance metadata and credentials)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	// fd00:ec2::254 metadata, fd00:ec2::23 EKS Pod Identity.
	{netip.MustParsePrefix("fd00:ec2::/32"), "the instance's IPv6 metadata and credentials range"},
	// IPv6 spellings of IPv4 addresses: mapped, compatible, NAT64 and 6to4. Refused whole, so no IPv4
	// address can be written past the rules above; give the IPv4 address itself.
	{netip.MustParsePrefix("::ffff:0:0/96"), "an IPv4-mapped address"},
	{netip.MustParsePrefix("::/96"), "an IPv4-compatible address"},
	{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64 address"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "a NAT64 address"},
	{netip.MustParsePrefix("2002::/16"), "a 6to4 address"},
}

// CheckRemoteHost reports why host may not be a remote host, nil when it may. Host names are compared
// without case and trailing dot; IP addresses in every notation a resolver accepts are checked as the
// address they mean, and numeric notations other than dotted decimal are refused outright, since some
// resolvers read "2852039166" or "0xA9FEA9FE" as 169.254.169.254 and others as a name.
func CheckRemoteHost(host string) error {
	h := strings.TrimSuffix(strings.ToLower(host), ".")
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return fmt.Errorf("%w: %q has a zone: give an address without %%zone", ErrDeniedRemoteHost, host)
		}
		return checkAddr(host, a)
	}
	if v4, ok := parseLooseIPv4(h); ok {
		return fmt.Errorf("%w: %q is the IPv4 address %s in a numeric notation resolvers disagree on: write it as %s",
			ErrDeniedRemoteHost, host, v4, v4)
	}
	first, _, _ := strings.Cut(h, ".")
	switch {
	case h == "localhost" || strings.HasSuffix(h, ".localhost") || h == "ip6-localhost" || h == "ip6-loopback":
		return fmt.Errorf("%w: %q is the instance's loopback", ErrDeniedRemoteHost, host)
	case first == "instance-data":
		return fmt.Errorf("%w: %q is the EC2 instance metadata service", ErrDeniedRemoteHost, host)
	}
	return nil
}

func checkAddr(host string, a netip.Addr) error {
	for _, p := range deniedPrefixes {
		if p.prefix.Contains(a) {
			return fmt.Errorf("%w: %s is %s (in %s): the instance's credentials and its own services are never forwarded",
				ErrDeniedRemoteHost, host, p.why, p.prefix)
		}
	}
	return nil
}

// parseLooseIPv4 parses the numeric forms inet_aton accepts — one to four parts separated by dots, each
// decimal, octal (leading 0) or hexadecimal (0x) — except canonical dotted decimal, which netip parses.
func parseLooseIPv4(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 || s == "" {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base := 10
		switch {
		case strings.HasPrefix(p, "0x"):
			base, p = 16, p[2:]
			if p == "" {
				p = "0" // "0x" alone is 0 to inet_aton
			}
		case len(p) > 1 && p[0] == '0':
			base, p = 8, p[1:]
		}
		v, err := strconv.ParseUint(p, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	// The last part fills the remaining bytes: a.b.c.d, a.b.(16 bits), a.(24 bits), (32 bits).
	var out uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 255 {
			return netip.Addr{}, false
		}
		out |= v << (24 - 8*i)
	}
	last := vals[len(vals)-1]
	if last >= 1<<(32-8*(len(vals)-1)) {
		return netip.Addr{}, false
	}
	out |= last
	return netip.AddrFrom4([4]byte{byte(out >> 24), byte(out >> 16), byte(out >> 8), byte(out)}), true
}
