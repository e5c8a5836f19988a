package portforward

import (
	"errors"
	"testing"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// The handshake decides the mode (§9.2); a session that does not offer port forwarding is refused.
func TestSessionMode(t *testing.T) {
	for _, tc := range []struct {
		name    string
		typ     string
		agent   string
		want    mode
		refused bool
	}{
		{name: "modern agent", typ: message.LocalPortForwarding, agent: "3.3.4851.0", want: modeMux},
		{name: "first mux agent", typ: message.LocalPortForwarding, agent: "3.0.222.0", want: modeMux},
		{name: "old agent", typ: message.LocalPortForwarding, agent: "3.0.196.0", want: modeBasic},
		{name: "ssh document, modern agent", typ: "", agent: "3.3.4851.0", refused: true},
		{name: "ssh document, old agent", typ: "", agent: "2.3.0.0", refused: true},
		{name: "unknown type", typ: "Standard_Stream", agent: "3.3.4851.0", refused: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := datachannel.HandshakeResult{AgentVersion: message.MustParseVersion(tc.agent), SessionType: "Port",
				Properties: message.PortParameters{Type: tc.typ, PortNumber: "22"}}
			got, err := sessionMode(hs)
			if tc.refused {
				if !errors.Is(err, session.ErrInvalidDocument) {
					t.Fatalf("sessionMode = %v, %v; want ErrInvalidDocument", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("sessionMode = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
