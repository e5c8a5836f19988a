package datachannel

import (
	"context"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// HandshakeResult is what the agent told the client in the handshake (§8).
type HandshakeResult struct {
	// AgentVersion drives mode selection (§9.2).
	AgentVersion message.Version
	// SessionType is "Port" for port sessions.
	SessionType string
	// Properties are the resolved document properties (§9.1): type, portNumber, localPortNumber, host.
	Properties message.PortParameters
	// CustomerMessage from HandshakeComplete, to be shown to the user when non-empty.
	CustomerMessage string
	// HandshakeTimeToComplete as the agent measured it.
	HandshakeTimeToComplete time.Duration
}

// ClientHandshake runs the client half of the handshake (§8) on ch (role Client): it waits for the
// HandshakeRequest, answers with a HandshakeResponse reporting clientVersion (default ClientVersion), and
// waits for HandshakeComplete. Data frames are acknowledged on receipt by the channel.
func ClientHandshake(ctx context.Context, ch *Channel, clientVersion string) (HandshakeResult, error) {
	return HandshakeResult{}, errNotImplemented
}
