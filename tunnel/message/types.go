package message

import (
	"encoding/binary"
	"fmt"
)

// MessageType is the 32-byte type field of a frame (§6.1).
type MessageType string

// Message types of a port session. Only the two stream-data types are sequenced and acknowledged (§7.1).
const (
	InputStreamData   MessageType = "input_stream_data"
	OutputStreamData  MessageType = "output_stream_data"
	Acknowledge       MessageType = "acknowledge"
	ChannelClosed     MessageType = "channel_closed"
	StartPublication  MessageType = "start_publication"
	PausePublication  MessageType = "pause_publication"
	AgentSessionState MessageType = "agent_session_state"
)

var knownMessageTypes = [...]MessageType{
	InputStreamData, OutputStreamData, Acknowledge, ChannelClosed,
	StartPublication, PausePublication, AgentSessionState,
}

// IsStreamData reports whether t carries a sequence number that the receiver must acknowledge.
func (t MessageType) IsStreamData() bool { return t == InputStreamData || t == OutputStreamData }

// PayloadType says how a frame's payload is to be read (§6.2).
type PayloadType uint32

// Payload types. Port sessions use Output, the three handshake types and Flag.
const (
	PayloadOutput               PayloadType = 1
	PayloadError                PayloadType = 2
	PayloadSize                 PayloadType = 3
	PayloadParameter            PayloadType = 4
	PayloadHandshakeRequest     PayloadType = 5
	PayloadHandshakeResponse    PayloadType = 6
	PayloadHandshakeComplete    PayloadType = 7
	PayloadEncChallengeRequest  PayloadType = 8
	PayloadEncChallengeResponse PayloadType = 9
	PayloadFlag                 PayloadType = 10
	PayloadStdErr               PayloadType = 11
	PayloadExitCode             PayloadType = 12
)

var payloadTypeNames = map[PayloadType]string{
	PayloadOutput: "Output", PayloadError: "Error", PayloadSize: "Size", PayloadParameter: "Parameter",
	PayloadHandshakeRequest: "HandshakeRequest", PayloadHandshakeResponse: "HandshakeResponse",
	PayloadHandshakeComplete: "HandshakeComplete", PayloadEncChallengeRequest: "EncChallengeRequest",
	PayloadEncChallengeResponse: "EncChallengeResponse", PayloadFlag: "Flag", PayloadStdErr: "StdErr",
	PayloadExitCode: "ExitCode",
}

func (p PayloadType) String() string {
	if name, ok := payloadTypeNames[p]; ok {
		return name
	}
	return fmt.Sprintf("PayloadType(%d)", uint32(p))
}

// Flag is the uint32 carried by a PayloadFlag frame (§6.3).
type Flag uint32

// Flag values of port sessions.
const (
	// FlagDisconnectToPort asks a basic-mode agent to close its destination connection.
	FlagDisconnectToPort Flag = 1
	// FlagTerminateSession asks the agent to end the session.
	FlagTerminateSession Flag = 2
	// FlagConnectToPortError tells a mux client that the agent could not dial the destination for a stream.
	FlagConnectToPortError Flag = 3
)

func (f Flag) String() string {
	switch f {
	case FlagDisconnectToPort:
		return "DisconnectToPort"
	case FlagTerminateSession:
		return "TerminateSession"
	case FlagConnectToPortError:
		return "ConnectToPortError"
	}
	return fmt.Sprintf("Flag(%d)", uint32(f))
}

// Payload encodes f as its 4-byte big-endian payload.
func (f Flag) Payload() []byte { return binary.BigEndian.AppendUint32(make([]byte, 0, 4), uint32(f)) }

// DecodeFlag reads a PayloadFlag payload.
func DecodeFlag(payload []byte) (Flag, error) {
	if len(payload) != 4 {
		return 0, fmt.Errorf("flag payload must be 4 bytes, got %d", len(payload))
	}
	return Flag(binary.BigEndian.Uint32(payload)), nil
}
