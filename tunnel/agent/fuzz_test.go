package agent

import (
	"net/netip"
	"testing"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// FuzzHandshakeResponse: the agent's decoder of the client's HandshakeResponse never panics, and accepts
// only responses whose actions all succeeded.
func FuzzHandshakeResponse(f *testing.F) {
	f.Add([]byte(`{"ClientVersion":"1.2.0.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}`))
	f.Add([]byte(`{"ClientVersion":"1.2.764.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1},{"ActionType":"X","ActionStatus":0,"ActionResult":3}]}`))
	f.Add([]byte(`{"ClientVersion":"","ProcessedClientActions":[]}`))
	f.Add([]byte(`{"ClientVersion":"1.1.70"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, p []byte) {
		v, err := checkHandshakeResponse(p)
		if err != nil {
			return
		}
		var resp message.HandshakeResponse
		if message.DecodeJSON(message.PayloadHandshakeResponse, p, &resp) != nil {
			t.Fatal("accepted a response that does not decode")
		}
		for _, a := range resp.ProcessedClientActions {
			if a.ActionStatus != message.ActionSuccess {
				t.Fatalf("accepted action %q with status %d", a.ActionType, a.ActionStatus)
			}
		}
		if v != lenientVersion(resp.ClientVersion) {
			t.Fatalf("version %v", v)
		}
	})
}

// FuzzLenientVersion: never panics; a four-part numeric version parses as ParseVersion does.
func FuzzLenientVersion(f *testing.F) {
	for _, s := range []string{"", "1.2.0.0", "1.1.70", "x", "1..2", "99999999999999999999.1", "1.2.3.4.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v := lenientVersion(s)
		if strict, err := message.ParseVersion(s); err == nil && strict != v {
			t.Fatalf("lenient %v, strict %v", v, strict)
		}
	})
}

// FuzzParseHostAddr: never panics; whatever netip reads as an address, parseHostAddr reads the same, and
// an inet_aton form it accepts is an IPv4 address.
func FuzzParseHostAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "[::1]", "::ffff:127.0.0.1", "db.internal", "1.2.3.4.5", "0x", "08", "4294967296", "1.16777216"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := parseHostAddr(s)
		if direct, err := netip.ParseAddr(s); err == nil && (!ok || a != direct) {
			t.Fatalf("parseHostAddr(%q) = %v, %v; netip reads %v", s, a, ok, direct)
		}
		if ok && !a.IsValid() {
			t.Fatalf("parseHostAddr(%q) accepted an invalid address", s)
		}
	})
}
