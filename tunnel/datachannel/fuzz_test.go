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

// FuzzAckSequenceNumber: the fast ack scanner never panics or returns a negative number on arbitrary
// payloads, and reads back exactly what AppendAckPayload wrote for any sequence number and message type.
func FuzzAckSequenceNumber(f *testing.F) {
	m := message.Message{Type: message.OutputStreamData, SequenceNumber: 42, MessageID: message.NewID()}
	f.Add(message.AppendAckPayload(nil, &m), int64(42), true)
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber" : 7 }`), int64(0), false)
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber":-1}`), int64(1<<62), true)
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber":99999999999999999999}`), int64(-5), false)
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber":1.5}`), int64(7), true)
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber":"3"}`), int64(3), false)
	f.Fuzz(func(t *testing.T, p []byte, seq int64, input bool) {
		if got, err := ackSequenceNumber(p); err == nil && got < 0 {
			t.Fatalf("negative sequence number %d accepted from %q", got, p)
		}
		if seq < 0 {
			seq = -(seq + 1)
		}
		typ := message.OutputStreamData
		if input {
			typ = message.InputStreamData
		}
		m := message.Message{Type: typ, SequenceNumber: seq, MessageID: message.NewID()}
		got, err := ackSequenceNumber(message.AppendAckPayload(nil, &m))
		if err != nil || got != seq {
			t.Fatalf("ack of seq %d read back as %d (%v)", seq, got, err)
		}
	})
}
