package datachannel

import (
	"encoding/json"
	"testing"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// FuzzChannelInput feeds arbitrary frames into a channel's receive path: it never panics, never delivers
// out of order, and keeps its buffers within their bounds.
func FuzzChannelInput(f *testing.F) {
	seed := func(typ message.MessageType, seq int64, pt message.PayloadType, p []byte) {
		m := message.Message{Type: typ, SchemaVersion: 1, CreatedDate: 1, SequenceNumber: seq, MessageID: message.NewID(), PayloadType: pt, Payload: p}
		b, _ := m.MarshalBinary()
		f.Add(b)
	}
	seed(message.OutputStreamData, 0, message.PayloadOutput, []byte("hello"))
	seed(message.OutputStreamData, 7, message.PayloadOutput, []byte("ahead"))
	seed(message.OutputStreamData, -1, message.PayloadOutput, []byte("negative"))
	data := message.Message{Type: message.InputStreamData, SequenceNumber: 3, MessageID: message.NewID()}
	ack := message.NewAck(&data, 1)
	b, _ := ack.MarshalBinary()
	f.Add(b)
	cc, _ := json.Marshal(message.ChannelClosedPayload{Output: "bye"})
	seed(message.ChannelClosed, 0, 0, cc)
	seed(message.PausePublication, 0, 0, nil)
	seed(message.StartPublication, 0, 0, nil)
	seed("agent_session_state", 0, 0, []byte(`{"SessionState":"Connected"}`))
	for _, h := range hostileFrames(f) {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		c, err := New(Config{Role: RoleClient, ReceiveBufferBytes: 4096, OutOfOrderBytes: 4096})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Each frame twice: the second is a duplicate or a repeated control frame.
		c.handleFrame(frame)
		c.handleFrame(frame)
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.oooBytes > 4096 || c.recvBytes > 4096+message.HeaderSize+len(frame) || len(c.ackQ) > maxAckQueue {
			t.Fatalf("buffers out of bounds: ooo %d recv %d acks %d", c.oooBytes, c.recvBytes, len(c.ackQ))
		}
		if len(c.recvQ) > 1 || (len(c.recvQ) == 1 && c.expected != 1) {
			t.Fatalf("delivered %d frames, expected now %d", len(c.recvQ), c.expected)
		}
	})
}

// FuzzAnswerHandshake: the client's HandshakeRequest decoder never panics; a request it accepts is a Port
// session from a four-part agent version, and every requested action is answered with a real status.
func FuzzAnswerHandshake(f *testing.F) {
	f.Add([]byte(`{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"SessionType":"Port","Properties":{"localPortNumber":"9000","portNumber":"80","type":"LocalPortForwarding"}}}]}`))
	f.Add([]byte(`{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"k","Challenge":"c"}}]}`))
	f.Add([]byte(`{"AgentVersion":"3.3","RequestedClientActions":[]}`))
	f.Add([]byte(`{"AgentVersion":"3.3.987.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":"x"}]}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		resp, res, err := answerHandshake(p, ClientVersion)
		if resp.ClientVersion == "" {
			if err == nil {
				t.Fatal("unusable request without an error")
			}
			return
		}
		for _, a := range resp.ProcessedClientActions {
			if a.ActionStatus < message.ActionSuccess || a.ActionStatus > message.ActionUnsupported {
				t.Fatalf("action %q answered with status %d", a.ActionType, a.ActionStatus)
			}
		}
		if err == nil && res.SessionType != message.SessionTypePort {
			t.Fatalf("accepted session type %q", res.SessionType)
		}
	})
}
