package message

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecode feeds arbitrary bytes to Decode: it must never panic, and whatever it accepts must survive a
// re-encode unchanged (Decode ∘ Encode is the identity on decoded messages).
func FuzzDecode(f *testing.F) {
	f.Add(mustHex(f, workedExample))
	for _, mt := range knownMessageTypes {
		m := Message{Type: mt, SchemaVersion: 1, CreatedDate: 1, SequenceNumber: 3, MessageID: NewID(),
			PayloadType: PayloadOutput, Payload: []byte("payload")}
		b, _ := m.MarshalBinary()
		f.Add(b)
		big := bytes.Clone(b)
		binary.BigEndian.PutUint32(big[offPayloadLength:], 1<<30)
		f.Add(big)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, err := Decode(frame)
		if err != nil {
			return
		}
		if len(m.Payload) != len(frame)-HeaderSize {
			t.Fatalf("payload %d bytes from a %d-byte frame", len(m.Payload), len(frame))
		}
		again, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode of an accepted frame failed: %v", err)
		}
		m2, err := Decode(again)
		if err != nil {
			t.Fatalf("decode of re-encoded frame failed: %v", err)
		}
		if diff := cmp.Diff(m, m2); diff != "" {
			t.Fatalf("re-encode changed the message (-first +second):\n%s", diff)
		}
	})
}

// FuzzRoundTrip encodes messages built from arbitrary field values and checks they decode to themselves.
func FuzzRoundTrip(f *testing.F) {
	f.Add("input_stream_data", uint32(1), uint64(1700000000000), int64(5), uint64(0), []byte{0, 0, 0, 2}, uint32(10), []byte("0123456789abcdef"))
	f.Add("acknowledge", uint32(1), uint64(1), int64(0), uint64(3), []byte(`{"a":1}`), uint32(0), make([]byte, 16))
	f.Fuzz(func(t *testing.T, typ string, schema uint32, created uint64, seq int64, flags uint64, payload []byte, pt uint32, id []byte) {
		m := Message{Type: MessageType(typ), SchemaVersion: schema, CreatedDate: created, SequenceNumber: seq,
			Flags: flags, PayloadType: PayloadType(pt), Payload: payload}
		copy(m.MessageID[:], id)
		b, err := m.MarshalBinary()
		if err != nil {
			return // type empty or longer than 32 bytes
		}
		if len(b) != m.Size() {
			t.Fatalf("encoded %d bytes, Size says %d", len(b), m.Size())
		}
		got, err := Decode(b)
		if err != nil {
			// Encoding is total; only types the decoder cannot represent, or the zero date, are refused.
			if created != 0 && isPlainType(typ) {
				t.Fatalf("Decode(Encode(m)) failed for a valid message: %v", err)
			}
			return
		}
		if !isPlainType(typ) {
			return
		}
		if got.Payload == nil && len(m.Payload) == 0 {
			got.Payload = m.Payload
		}
		if diff := cmp.Diff(m, got); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}

// isPlainType reports whether typ survives padding removal: printable ASCII without surrounding blanks.
func isPlainType(typ string) bool {
	if typ == "" || len(typ) > 32 {
		return false
	}
	for i := 0; i < len(typ); i++ {
		if typ[i] < 0x21 || typ[i] > 0x7e {
			return false
		}
	}
	return true
}

// FuzzDecodeAck checks the ack decoder never panics and that what it accepts re-encodes to the same ack.
func FuzzDecodeAck(f *testing.F) {
	data := Message{Type: OutputStreamData, SequenceNumber: 42, MessageID: NewID()}
	f.Add(AppendAckPayload(nil, &data))
	f.Add([]byte(`{"AcknowledgedMessageSequenceNumber":1e400}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		a, err := DecodeAck(payload)
		if err != nil {
			return
		}
		if a.AcknowledgedMessageSequenceNumber < 0 {
			t.Fatalf("accepted negative sequence number %d", a.AcknowledgedMessageSequenceNumber)
		}
	})
}
