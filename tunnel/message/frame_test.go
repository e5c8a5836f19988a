package message

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// workedExample is the 124-byte frame of §5: client input_stream_data, seq 5, Flag TerminateSession.
const workedExample = `
00 00 00 74 69 6e 70 75 74 5f 73 74 72 65 61 6d
5f 64 61 74 61 20 20 20 20 20 20 20 20 20 20 20
20 20 20 20 00 00 00 01 00 00 01 8b cf e5 68 00
00 00 00 00 00 00 00 05 00 00 00 00 00 00 00 00
88 99 aa bb cc dd ee ff 00 11 22 33 44 55 66 77
43 3e bf 5b c0 3d ff a3 85 36 67 32 07 a2 12 81
61 2c ef 5f aa 9b c7 a4 d5 b9 be 2f db 12 cf 1a
00 00 00 0a 00 00 00 04 00 00 00 02`

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func workedExampleMessage(t testing.TB) Message {
	id, err := ParseID("00112233-4455-6677-8899-aabbccddeeff")
	if err != nil {
		t.Fatal(err)
	}
	return Message{
		Type:           InputStreamData,
		SchemaVersion:  1,
		CreatedDate:    1700000000000,
		SequenceNumber: 5,
		MessageID:      id,
		PayloadType:    PayloadFlag,
		Payload:        FlagTerminateSession.Payload(),
	}
}

func TestWorkedExampleGolden(t *testing.T) {
	want := mustHex(t, workedExample)
	if len(want) != 124 {
		t.Fatalf("worked example is %d bytes, want 124", len(want))
	}
	m := workedExampleMessage(t)
	got, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encode mismatch\n got %x\nwant %x", got, want)
	}
	dec, err := Decode(want)
	if err != nil {
		t.Fatalf("Decode(worked example): %v", err)
	}
	if diff := cmp.Diff(m, dec); diff != "" {
		t.Fatalf("decoded worked example differs (-want +got):\n%s", diff)
	}
	if f, err := DecodeFlag(dec.Payload); err != nil || f != FlagTerminateSession {
		t.Fatalf("DecodeFlag = %v, %v; want TerminateSession", f, err)
	}
}

func TestIDWireOrder(t *testing.T) {
	id, err := ParseID("00112233-4455-6677-8899-aabbccddeeff")
	if err != nil {
		t.Fatal(err)
	}
	var wire [16]byte
	id.putWire(wire[:])
	if got, want := hex.EncodeToString(wire[:]), "8899aabbccddeeff0011223344556677"; got != want {
		t.Fatalf("wire = %s, want %s", got, want)
	}
	if back := idFromWire(wire[:]); back != id {
		t.Fatalf("idFromWire = %s, want %s", back, id)
	}
	if got := id.String(); got != "00112233-4455-6677-8899-aabbccddeeff" {
		t.Fatalf("String = %s", got)
	}
	for _, bad := range []string{"", "00112233445566778899aabbccddeeff", "0011223-34455-6677-8899-aabbccddeeff", "zz112233-4455-6677-8899-aabbccddeeff"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded, want error", bad)
		}
	}
	n := NewID()
	if n[6]>>4 != 4 || n[8]>>6 != 2 {
		t.Fatalf("NewID %s is not a version-4 variant-1 UUID", n)
	}
}

func TestRoundTripAllTypes(t *testing.T) {
	types := append(knownMessageTypes[:], "some_future_type")
	for _, mt := range types {
		for pt := PayloadType(0); pt <= PayloadExitCode; pt++ {
			m := Message{Type: mt, SchemaVersion: 1, CreatedDate: 1, SequenceNumber: int64(pt) * 7,
				Flags: FlagSYN, MessageID: NewID(), PayloadType: pt, Payload: []byte(mt)}
			b, err := m.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatalf("%s/%s: %v", mt, pt, err)
			}
			if diff := cmp.Diff(m, got); diff != "" {
				t.Fatalf("%s/%s round trip (-want +got):\n%s", mt, pt, diff)
			}
		}
	}
}

func TestEmptyPayloadDigestIsSHA256OfNothing(t *testing.T) {
	m := Message{Type: OutputStreamData, SchemaVersion: 1, CreatedDate: 9}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	empty := sha256.Sum256(nil)
	if !bytes.Equal(b[offPayloadDigest:offPayloadDigest+32], empty[:]) {
		t.Fatalf("digest of empty payload = %x, want %x", b[offPayloadDigest:offPayloadDigest+32], empty)
	}
	if _, err := Decode(b); err != nil {
		t.Fatalf("Decode(empty payload): %v", err)
	}
}

func TestMessageTypePaddingTolerated(t *testing.T) {
	m := Message{Type: Acknowledge, SchemaVersion: 1, CreatedDate: 3, Payload: []byte("{}")}
	b, _ := m.MarshalBinary()
	// Some writers pad with NULs instead of spaces; readers strip both (§5).
	for i := offMessageType + len(Acknowledge); i < offMessageType+messageTypeLen; i++ {
		b[i] = 0
	}
	got, err := Decode(b)
	if err != nil || got.Type != Acknowledge {
		t.Fatalf("Decode(NUL padded) = %q, %v", got.Type, err)
	}
}

// hostile builds a valid frame and lets mutate corrupt it.
func hostile(t *testing.T, mutate func(b []byte) []byte) []byte {
	m := Message{Type: OutputStreamData, SchemaVersion: 1, CreatedDate: 1700000000000, SequenceNumber: 1,
		MessageID: NewID(), PayloadType: PayloadOutput, Payload: []byte("hello")}
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return mutate(b)
}

func TestDecodeRejectsHostileFrames(t *testing.T) {
	cases := []struct {
		name   string
		mutate func([]byte) []byte
		want   error
		text   string
	}{
		{"empty", func(b []byte) []byte { return nil }, ErrShortFrame, "got 0 bytes"},
		{"truncated header", func(b []byte) []byte { return b[:119] }, ErrShortFrame, "got 119 bytes"},
		{"header length zero", func(b []byte) []byte { binary.BigEndian.PutUint32(b, 0); return b }, ErrHeaderLength, "got 0"},
		{"header length past frame", func(b []byte) []byte { binary.BigEndian.PutUint32(b, 4000); return b }, ErrHeaderLength, "got 4000"},
		{"payload length past frame", func(b []byte) []byte { binary.BigEndian.PutUint32(b[offPayloadLength:], 6); return b }, ErrPayloadLength, "says 6 bytes, frame carries 5"},
		{"1 GiB claimed", func(b []byte) []byte { binary.BigEndian.PutUint32(b[offPayloadLength:], 1<<30); return b }, ErrPayloadLength, "says 1073741824 bytes"},
		{"payload length short", func(b []byte) []byte { binary.BigEndian.PutUint32(b[offPayloadLength:], 2); return b }, ErrPayloadLength, "carries 5"},
		{"digest mismatch", func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }, ErrDigest, "output_stream_data seq 1"},
		{"zero created date", func(b []byte) []byte { binary.BigEndian.PutUint64(b[offCreatedDate:], 0); return b }, ErrCreatedDate, "seq 1"},
		{"blank type", func(b []byte) []byte { copy(b[offMessageType:], strings.Repeat(" ", 32)); return b }, ErrMessageType, "empty"},
		{"binary type", func(b []byte) []byte { b[offMessageType+3] = 0x01; return b }, ErrMessageType, "0x01"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(hostile(t, tc.mutate))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode error = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("error %q does not say %q", err, tc.text)
			}
		})
	}
}

func TestPublicationFramesExemptFromValidation(t *testing.T) {
	// The relay's start/pause_publication may carry no date and no digest; the client accepts them (§5).
	m := Message{Type: StartPublication, Payload: []byte("x")}
	b, _ := m.MarshalBinary()
	for i := offPayloadDigest; i < offPayloadDigest+32; i++ {
		b[i] = 0
	}
	if got, err := Decode(b); err != nil || got.Type != StartPublication {
		t.Fatalf("Decode(start_publication) = %v, %v", got.Type, err)
	}
}

func TestDecodeAllocatesNothingForKnownTypes(t *testing.T) {
	m := workedExampleMessage(t)
	b, _ := m.MarshalBinary()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Decode(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Decode allocated %.0f times per frame, want 0", allocs)
	}
	huge := hostile(t, func(b []byte) []byte { binary.BigEndian.PutUint32(b[offPayloadLength:], 1<<30); return b })
	// Only the small error value may be allocated, never anything sized by the claimed length.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := Decode(huge); err == nil {
			t.Fatal("Decode accepted a frame claiming 1 GiB")
		}
	}
	runtime.ReadMemStats(&after)
	if perCall := (after.TotalAlloc - before.TotalAlloc) / 100; perCall > 512 {
		t.Fatalf("Decode of a 1 GiB claim allocated %d bytes per call", perCall)
	}
}

func TestAppendBinaryRejectsBadType(t *testing.T) {
	for _, mt := range []MessageType{"", MessageType(strings.Repeat("x", 33))} {
		m := Message{Type: mt}
		if _, err := m.MarshalBinary(); !errors.Is(err, ErrEncode) {
			t.Errorf("MarshalBinary(type %q) error = %v, want ErrEncode", mt, err)
		}
	}
}

func TestAck(t *testing.T) {
	data := workedExampleMessage(t)
	ack := NewAck(&data, 1700000000001)
	b, err := ack.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Type != Acknowledge || got.Flags != FlagSYN|FlagFIN || got.SequenceNumber != 0 || got.PayloadType != 0 {
		t.Fatalf("ack header = %+v", got)
	}
	wantJSON := `{"AcknowledgedMessageType":"input_stream_data","AcknowledgedMessageId":"00112233-4455-6677-8899-aabbccddeeff","AcknowledgedMessageSequenceNumber":5,"IsSequentialMessage":true}`
	if string(got.Payload) != wantJSON {
		t.Fatalf("ack payload\n got %s\nwant %s", got.Payload, wantJSON)
	}
	a, err := DecodeAck(got.Payload)
	if err != nil {
		t.Fatal(err)
	}
	want := Ack{AcknowledgedMessageType: InputStreamData, AcknowledgedMessageID: "00112233-4455-6677-8899-aabbccddeeff",
		AcknowledgedMessageSequenceNumber: 5, IsSequentialMessage: true}
	if diff := cmp.Diff(want, a); diff != "" {
		t.Fatalf("DecodeAck (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "{", `{"AcknowledgedMessageSequenceNumber":-1}`, `{"AcknowledgedMessageSequenceNumber":"x"}`} {
		if _, err := DecodeAck([]byte(bad)); err == nil {
			t.Errorf("DecodeAck(%q) succeeded", bad)
		}
	}
}

func TestFlagPayload(t *testing.T) {
	for _, bad := range [][]byte{nil, {0, 0, 2}, {0, 0, 0, 0, 2}} {
		if _, err := DecodeFlag(bad); err == nil {
			t.Errorf("DecodeFlag(%x) succeeded", bad)
		}
	}
	if got := FlagConnectToPortError.Payload(); !bytes.Equal(got, []byte{0, 0, 0, 3}) {
		t.Fatalf("ConnectToPortError payload = %x", got)
	}
}
