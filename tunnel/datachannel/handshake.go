package datachannel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
// waits for HandshakeComplete. The channel acknowledges each frame on receipt ("ack first", §7.2). A
// SessionType other than Port is answered Failed, and any other action Unsupported with ActionStatus set
// (the plugin leaves it 0, §8.3); both make the handshake fail here too. Bound it with ctx: the agent gives
// up after 15 s.
func ClientHandshake(ctx context.Context, ch *Channel, clientVersion string) (HandshakeResult, error) {
	if clientVersion == "" {
		clientVersion = ClientVersion
	}
	var res HandshakeResult
	pt, p, err := ch.Receive(ctx)
	if err != nil {
		return res, fmt.Errorf("%w: waiting for HandshakeRequest: %w", ErrHandshake, err)
	}
	if pt != message.PayloadHandshakeRequest {
		return res, fmt.Errorf("%w: expected HandshakeRequest from the agent, got %s", ErrHandshake, pt)
	}
	resp, res, failure := answerHandshake(p, clientVersion)
	if resp.ClientVersion == "" { // the request itself was unusable: nothing to answer
		return res, fmt.Errorf("%w: %w", ErrHandshake, failure)
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return res, fmt.Errorf("%w: encode HandshakeResponse: %w", ErrHandshake, err)
	}
	if err := ch.Send(ctx, message.PayloadHandshakeResponse, body); err != nil {
		return res, fmt.Errorf("%w: send HandshakeResponse: %w", ErrHandshake, err)
	}
	if failure != nil {
		return res, fmt.Errorf("%w: %w", ErrHandshake, failure)
	}

	pt, p, err = ch.Receive(ctx)
	if err != nil {
		return res, fmt.Errorf("%w: waiting for HandshakeComplete: %w", ErrHandshake, err)
	}
	if pt != message.PayloadHandshakeComplete {
		return res, fmt.Errorf("%w: expected HandshakeComplete from the agent, got %s", ErrHandshake, pt)
	}
	var done message.HandshakeComplete
	if err := message.DecodeJSON(pt, p, &done); err != nil {
		return res, fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	res.CustomerMessage, res.HandshakeTimeToComplete = done.CustomerMessage, done.HandshakeTimeToComplete
	return res, nil
}

// answerHandshake decodes a HandshakeRequest payload and builds the response (§8.2–§8.3). A non-nil failure
// with a response whose ClientVersion is set must still be sent, so the agent learns why; with an empty
// response the request was unusable (bad JSON, malformed AgentVersion).
func answerHandshake(p []byte, clientVersion string) (message.HandshakeResponse, HandshakeResult, error) {
	var res HandshakeResult
	var req message.HandshakeRequest
	if err := message.DecodeJSON(message.PayloadHandshakeRequest, p, &req); err != nil {
		return message.HandshakeResponse{}, res, err
	}
	v, err := message.ParseVersion(req.AgentVersion)
	if err != nil {
		return message.HandshakeResponse{}, res, fmt.Errorf("agent version: %w", err)
	}
	res.AgentVersion = v
	resp := message.HandshakeResponse{ClientVersion: clientVersion}
	var failure error
	sawSessionType := false
	for _, a := range req.RequestedClientActions {
		pa := message.ProcessedClientAction{ActionType: a.ActionType}
		switch a.ActionType {
		case message.ActionSessionType:
			var st message.SessionTypeRequest
			if err := json.Unmarshal(a.ActionParameters, &st); err != nil {
				pa.ActionStatus = message.ActionFailed
				pa.Error = fmt.Sprintf("invalid SessionType parameters: %v", err)
				failure = fmt.Errorf("SessionType action parameters: %w", err)
				break
			}
			res.SessionType, res.Properties = st.SessionType, st.Properties
			if st.SessionType != message.SessionTypePort {
				pa.ActionStatus = message.ActionFailed
				pa.Error = fmt.Sprintf("session type %q is not supported by this port-forwarding client", st.SessionType)
				failure = fmt.Errorf("agent requested session type %q; only %q is supported", st.SessionType, message.SessionTypePort)
				break
			}
			sawSessionType = true
			pa.ActionStatus = message.ActionSuccess
		default:
			// Unknown (or KMS, never used for Port, §8.1): Unsupported, with ActionStatus set — the plugin
			// writes 3 into ActionResult and leaves the status 0 (§8.3).
			pa.ActionStatus = message.ActionUnsupported
			pa.Error = fmt.Sprintf("action %q is not supported by this client", a.ActionType)
			failure = fmt.Errorf("agent requested unsupported action %q", a.ActionType)
		}
		resp.ProcessedClientActions = append(resp.ProcessedClientActions, pa)
	}
	if failure == nil && !sawSessionType {
		failure = errors.New("HandshakeRequest has no SessionType action")
	}
	if failure != nil {
		resp.Errors = append(resp.Errors, failure.Error())
	}
	return resp, res, failure
}
