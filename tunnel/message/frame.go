package message

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Frame layout (§5). All integers are big-endian; fixed fields sit at fixed offsets.
const (
	// HeaderLength is the value of the first field: the offset of PayloadLength. It is always 116.
	HeaderLength = 116
	// HeaderSize is where the payload starts: HeaderLength plus the 4-byte PayloadLength.
	HeaderSize = HeaderLength + 4

	offMessageType    = 4
	offSchemaVersion  = 36
	offCreatedDate    = 40
	offSequenceNumber = 48
	offFlags          = 56
	offMessageID      = 64
	offPayloadDigest  = 80
	offPayloadType    = 112
	offPayloadLength  = 116

	messageTypeLen = 32
)

// Header Flags bits (§6.4). No receiver inspects them, but senders set them as the official peers do.
const (
	FlagSYN uint64 = 1
	FlagFIN uint64 = 2
)

// Errors returned by Decode. They are wrapped with the offending values, so errors.Is works on them and the
// message still says what was wrong with the frame.
var (
	ErrShortFrame    = errors.New("frame shorter than the 120-byte header")
	ErrHeaderLength  = errors.New("header length field is not 116")
	ErrPayloadLength = errors.New("payload length field does not match the frame")
	ErrMessageType   = errors.New("invalid message type")
	ErrCreatedDate   = errors.New("created date is zero")
	ErrDigest        = errors.New("payload digest mismatch")
	ErrEncode        = errors.New("cannot encode message")
)

// Message is one decoded data-channel frame.
type Message struct {
	// Type is the MessageType with its padding removed.
	Type MessageType
	// SchemaVersion is always 1 in practice.
	SchemaVersion uint32
	// CreatedDate is Unix epoch milliseconds. Peers drop frames where it is zero (§5).
	CreatedDate uint64
	// SequenceNumber orders input_stream_data and output_stream_data per direction (§7.1); 0 elsewhere.
	SequenceNumber int64
	// Flags is the header bitfield (FlagSYN, FlagFIN).
	Flags uint64
	// MessageID identifies the frame; acks echo it in string form.
	MessageID ID
	// PayloadType says how to read Payload (§6.2).
	PayloadType PayloadType
	// Payload is the frame body. After Decode it aliases the decoded frame: copy it to keep it past the
	// frame buffer's lifetime.
	Payload []byte
}

// Size is the encoded length of m.
func (m *Message) Size() int { return HeaderSize + len(m.Payload) }

// AppendBinary appends the encoded frame to dst. It implements encoding.BinaryAppender, so a sender can
// encode into a pooled buffer without allocating per frame.
func (m *Message) AppendBinary(dst []byte) ([]byte, error) {
	if len(m.Type) == 0 || len(m.Type) > messageTypeLen {
		return dst, fmt.Errorf("%w: message type %q must be 1 to %d bytes", ErrEncode, m.Type, messageTypeLen)
	}
	if uint64(len(m.Payload)) > uint64(^uint32(0)) {
		return dst, fmt.Errorf("%w: payload of %d bytes exceeds the 32-bit length field", ErrEncode, len(m.Payload))
	}
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	h := dst[start : start+HeaderSize]
	binary.BigEndian.PutUint32(h[0:], HeaderLength)
	// §5: the type is right-padded with spaces, not NULs.
	n := copy(h[offMessageType:offMessageType+messageTypeLen], m.Type)
	for i := offMessageType + n; i < offMessageType+messageTypeLen; i++ {
		h[i] = ' '
	}
	binary.BigEndian.PutUint32(h[offSchemaVersion:], m.SchemaVersion)
	binary.BigEndian.PutUint64(h[offCreatedDate:], m.CreatedDate)
	binary.BigEndian.PutUint64(h[offSequenceNumber:], uint64(m.SequenceNumber))
	binary.BigEndian.PutUint64(h[offFlags:], m.Flags)
	m.MessageID.putWire(h[offMessageID : offMessageID+16])
	// §5: the digest is always written, SHA-256("") for an empty payload.
	digest := sha256.Sum256(m.Payload)
	copy(h[offPayloadDigest:offPayloadDigest+32], digest[:])
	binary.BigEndian.PutUint32(h[offPayloadType:], uint32(m.PayloadType))
	binary.BigEndian.PutUint32(h[offPayloadLength:], uint32(len(m.Payload)))
	return append(dst, m.Payload...), nil
}

// MarshalBinary encodes m into a new slice.
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, m.Size()))
}

// Decode parses and validates one frame. It is stricter than the official peers (§5 "Parsing rules"), which
// read fixed offsets whatever the length fields say: a frame whose HeaderLength is not 116 or whose
// PayloadLength disagrees with the frame's size is rejected rather than sliced, so a hostile peer can neither
// crash the reader nor make it allocate what the frame claims. The digest is checked when the payload is
// non-empty, and CreatedDate must be set, except on the relay's start_publication and pause_publication,
// which the official client exempts from validation.
//
// The returned Payload aliases frame.
func Decode(frame []byte) (Message, error) {
	if len(frame) < HeaderSize {
		return Message{}, fmt.Errorf("%w: got %d bytes", ErrShortFrame, len(frame))
	}
	if hl := binary.BigEndian.Uint32(frame[0:]); hl != HeaderLength {
		return Message{}, fmt.Errorf("%w: got %d", ErrHeaderLength, hl)
	}
	if pl, have := binary.BigEndian.Uint32(frame[offPayloadLength:]), len(frame)-HeaderSize; uint64(pl) != uint64(have) {
		return Message{}, fmt.Errorf("%w: field says %d bytes, frame carries %d", ErrPayloadLength, pl, have)
	}
	typ, err := parseMessageType(frame[offMessageType : offMessageType+messageTypeLen])
	if err != nil {
		return Message{}, err
	}
	m := Message{
		Type:           typ,
		SchemaVersion:  binary.BigEndian.Uint32(frame[offSchemaVersion:]),
		CreatedDate:    binary.BigEndian.Uint64(frame[offCreatedDate:]),
		SequenceNumber: int64(binary.BigEndian.Uint64(frame[offSequenceNumber:])),
		Flags:          binary.BigEndian.Uint64(frame[offFlags:]),
		MessageID:      idFromWire(frame[offMessageID : offMessageID+16]),
		PayloadType:    PayloadType(binary.BigEndian.Uint32(frame[offPayloadType:])),
		Payload:        frame[HeaderSize:len(frame):len(frame)],
	}
	if typ == StartPublication || typ == PausePublication {
		return m, nil
	}
	if m.CreatedDate == 0 {
		return Message{}, fmt.Errorf("%w: %s seq %d", ErrCreatedDate, typ, m.SequenceNumber)
	}
	if len(m.Payload) > 0 {
		digest := sha256.Sum256(m.Payload)
		if !bytes.Equal(digest[:], frame[offPayloadDigest:offPayloadDigest+32]) {
			return Message{}, fmt.Errorf("%w: %s seq %d, %d-byte payload", ErrDigest, typ, m.SequenceNumber, len(m.Payload))
		}
	}
	return m, nil
}

// parseMessageType strips NULs and surrounding whitespace (§5) and accepts printable ASCII only. Known types
// come back as their constants, so decoding the common frames does not allocate.
func parseMessageType(field []byte) (MessageType, error) {
	field = bytes.Trim(field, " \t\r\n\x00")
	if len(field) == 0 {
		return "", fmt.Errorf("%w: empty", ErrMessageType)
	}
	for _, c := range field {
		if c < 0x21 || c > 0x7e {
			return "", fmt.Errorf("%w: byte 0x%02x is not printable ASCII", ErrMessageType, c)
		}
	}
	for _, known := range knownMessageTypes {
		if string(field) == string(known) {
			return known, nil
		}
	}
	return MessageType(field), nil
}
