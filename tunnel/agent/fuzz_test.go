package agent

import (
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
