package session

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil/hostsamples"
)

func TestCheckRemoteHost(t *testing.T) {
	for _, h := range hostsamples.Denied {
		err := CheckRemoteHost(h)
		if !errors.Is(err, ErrDeniedRemoteHost) {
			t.Errorf("CheckRemoteHost(%q) = %v, want ErrDeniedRemoteHost", h, err)
		}
	}
	for _, h := range hostsamples.Allowed {
		if err := CheckRemoteHost(h); err != nil {
			t.Errorf("CheckRemoteHost(%q) = %v, want nil", h, err)
		}
	}
	// The message says what to write instead.
	if err := CheckRemoteHost("0x0a000001"); err == nil || !strings.Contains(err.Error(), "write it as 10.0.0.1") {
		t.Errorf("CheckRemoteHost(0x0a000001) = %v, want a message naming 10.0.0.1", err)
	}
}

func TestParseLooseIPv4(t *testing.T) {
	for in, want := range map[string]string{
		"2852039166": "169.254.169.254", "0xA9FEA9FE": "169.254.169.254", "0xa9fea9fe": "169.254.169.254", "0251.0376.0251.0376": "169.254.169.254",
		"169.254.43518": "169.254.169.254", "169.16689662": "169.254.169.254", "127.1": "127.0.0.1", "0": "0.0.0.0",
		"4294967296": "", "256.0.0.1": "", "1.2.3.4.5": "", "08.1.1.1": "", "0x": "0.0.0.0", "": "", "a.b": "",
	} {
		got, ok := parseLooseIPv4(in)
		if (want == "") == ok || ok && got.String() != want {
			t.Errorf("parseLooseIPv4(%q) = %s, %t; want %q", in, got, ok, want)
		}
	}
}

// FuzzCheckRemoteHost: never panics, and a denied IP address stays denied in its other spellings
// (bracketed, upper case, IPv4-mapped, with a trailing dot for names).
func FuzzCheckRemoteHost(f *testing.F) {
	for _, h := range append(append([]string{}, hostsamples.Denied...), hostsamples.Allowed...) {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		err := CheckRemoteHost(h)
		if err == nil {
			return
		}
		variants := []string{strings.ToUpper(h)}
		if a, perr := netip.ParseAddr(h); perr == nil && a.Zone() == "" {
			variants = append(variants, "["+h+"]")
			if a.Is4() {
				variants = append(variants, "::ffff:"+h, netip.AddrFrom16(a.As16()).String())
			}
		} else if !strings.HasSuffix(h, ".") && !strings.HasSuffix(h, "]") {
			variants = append(variants, h+".")
		}
		for _, v := range variants {
			if CheckRemoteHost(v) == nil {
				t.Errorf("%q is denied (%v) but its spelling %q is allowed", h, err, v)
			}
		}
	})
}
