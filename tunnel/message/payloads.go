package message

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// OpenDataChannelInput is the JSON of the first websocket text frame a client sends after every connect
// (§4.1), keys in the official order. The agent sends ClientInstanceId instead of ClientVersion (§4.2).
type OpenDataChannelInput struct {
	MessageSchemaVersion string `json:"MessageSchemaVersion"`
	RequestID            string `json:"RequestId"`
	TokenValue           string `json:"TokenValue"`
	ClientID             string `json:"ClientId"`
	ClientVersion        string `json:"ClientVersion,omitempty"`
	ClientInstanceID     string `json:"ClientInstanceId,omitempty"`
}

// ActionType names a client action requested in the handshake (§8.2).
type ActionType string

// Action types. Port sessions request only SessionType; KMSEncryption is never used for Port (§8.1).
const (
	ActionSessionType   ActionType = "SessionType"
	ActionKMSEncryption ActionType = "KMSEncryption"
)

// ActionStatus is the outcome the client reports per action (§8.3).
type ActionStatus int

// Action statuses. The agent treats anything but Success as failure and cancels the session.
const (
	ActionSuccess     ActionStatus = 1
	ActionFailed      ActionStatus = 2
	ActionUnsupported ActionStatus = 3
)

// SessionTypePort is the SessionType of port-forwarding documents.
const SessionTypePort = "Port"

// HandshakeRequest is the agent's first data frame, PayloadType 5 (§8.2).
type HandshakeRequest struct {
	AgentVersion           string                  `json:"AgentVersion"`
	RequestedClientActions []RequestedClientAction `json:"RequestedClientActions"`
}

// RequestedClientAction is one action of a HandshakeRequest.
type RequestedClientAction struct {
	ActionType       ActionType      `json:"ActionType"`
	ActionParameters json.RawMessage `json:"ActionParameters"`
}

// SessionTypeRequest is the ActionParameters of a SessionType action. Properties are the resolved document
// properties, passed through unchanged (§8.2).
type SessionTypeRequest struct {
	SessionType string         `json:"SessionType"`
	Properties  PortParameters `json:"Properties"`
}

// PortParameters are the document properties of a port session as both ends read them (§9.1). Values are
// strings in the documents.
type PortParameters struct {
	PortNumber          string `json:"portNumber"`
	LocalPortNumber     string `json:"localPortNumber,omitempty"`
	Host                string `json:"host,omitempty"`
	Type                string `json:"type,omitempty"`
	LocalUnixSocket     string `json:"localUnixSocket,omitempty"`
	LocalConnectionType string `json:"localConnectionType,omitempty"`
}

// LocalPortForwarding is the PortParameters.Type of the AWS port-forwarding documents. Without it a port
// session is a stdin/stdout stream (AWS-StartSSHSession) and mux mode is never chosen (§9.2).
const LocalPortForwarding = "LocalPortForwarding"

// HandshakeResponse is the client's answer, PayloadType 6 (§8.3). The agent reads the client version from it.
type HandshakeResponse struct {
	ClientVersion          string                  `json:"ClientVersion"`
	ProcessedClientActions []ProcessedClientAction `json:"ProcessedClientActions"`
	Errors                 []string                `json:"Errors"`
}

// ProcessedClientAction reports the outcome of one requested action.
type ProcessedClientAction struct {
	ActionType   ActionType      `json:"ActionType"`
	ActionStatus ActionStatus    `json:"ActionStatus"`
	ActionResult json.RawMessage `json:"ActionResult"`
	Error        string          `json:"Error"`
}

// HandshakeComplete ends the handshake, PayloadType 7 (§8.4). HandshakeTimeToComplete is nanoseconds.
type HandshakeComplete struct {
	HandshakeTimeToComplete time.Duration `json:"HandshakeTimeToComplete"`
	CustomerMessage         string        `json:"CustomerMessage"`
}

// ChannelClosedPayload is the JSON of a channel_closed frame (§10.2). Output carries the service's reason.
type ChannelClosedPayload struct {
	MessageID     string `json:"MessageId"`
	CreatedDate   string `json:"CreatedDate"`
	DestinationID string `json:"DestinationId"`
	SessionID     string `json:"SessionId"`
	MessageType   string `json:"MessageType"`
	SchemaVersion int    `json:"SchemaVersion"`
	Output        string `json:"Output"`
}

// AgentSessionStatePayload is the JSON of agent_session_state, which a relay swallows (§6.1).
type AgentSessionStatePayload struct {
	SchemaVersion int    `json:"SchemaVersion"`
	SessionState  string `json:"SessionState"`
	SessionID     string `json:"SessionId"`
}

// DecodeJSON unmarshals a JSON payload into v, naming the payload type in the error so a bad peer is easy
// to diagnose.
func DecodeJSON(pt PayloadType, payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%s payload is not valid JSON: %w", pt, err)
	}
	return nil
}

// SessionType returns the session type and port parameters requested by a handshake, or an error when the
// request has no SessionType action.
func (r *HandshakeRequest) SessionType() (SessionTypeRequest, error) {
	for _, a := range r.RequestedClientActions {
		if a.ActionType != ActionSessionType {
			continue
		}
		var st SessionTypeRequest
		if err := json.Unmarshal(a.ActionParameters, &st); err != nil {
			return SessionTypeRequest{}, fmt.Errorf("SessionType action parameters: %w", err)
		}
		return st, nil
	}
	return SessionTypeRequest{}, fmt.Errorf("handshake request has no %s action", ActionSessionType)
}

// Version is a four-part numeric agent or client version such as 3.3.987.0 (§8.2).
type Version [4]uint64

// ParseVersion reads a four-part version. The official client treats any other shape as "not supported"
// and silently falls back to basic mode; here it is an explicit error.
func ParseVersion(s string) (Version, error) {
	var v Version
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return v, fmt.Errorf("version %q must have four numeric parts, like 3.3.987.0", s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return Version{}, fmt.Errorf("version %q: part %d is not a number", s, i+1)
		}
		v[i] = n
	}
	return v, nil
}

// MustParseVersion is ParseVersion for constants.
func MustParseVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than w.
func (v Version) Compare(w Version) int {
	for i := range v {
		switch {
		case v[i] < w[i]:
			return -1
		case v[i] > w[i]:
			return 1
		}
	}
	return 0
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d.%d", v[0], v[1], v[2], v[3])
}

// Version thresholds of mode selection (§9.2).
var (
	// LastBasicAgentVersion is the newest agent without multiplexing: agents above it speak smux.
	LastBasicAgentVersion = MustParseVersion("3.0.196.0")
	// AgentKeepAliveOffAbove: a client disables smux keepalive only for agents above this version.
	AgentKeepAliveOffAbove = MustParseVersion("3.1.1511.0")
	// ClientKeepAliveOffAbove: the agent disables smux keepalive only for clients above this version.
	ClientKeepAliveOffAbove = MustParseVersion("1.2.331.0")
	// MinMuxClientVersion: the agent multiplexes only for clients at or above this version.
	MinMuxClientVersion = MustParseVersion("1.1.70.0")
	// FlagTerminateAgentVersion: a basic client may end the session with FlagTerminateSession only for agents
	// above this version; older ones need the TerminateSession API.
	FlagTerminateAgentVersion = MustParseVersion("2.3.722.0")
)
