package message

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Ack is the JSON payload of an acknowledge frame (§7.1). Receivers match acks by sequence number only.
type Ack struct {
	AcknowledgedMessageType           MessageType `json:"AcknowledgedMessageType"`
	AcknowledgedMessageID             string      `json:"AcknowledgedMessageId"`
	AcknowledgedMessageSequenceNumber int64       `json:"AcknowledgedMessageSequenceNumber"`
	IsSequentialMessage               bool        `json:"IsSequentialMessage"`
}

// AppendAckPayload appends the ack JSON for a received data frame, keys in the order the official peers
// write them. It is hand-written because one ack is sent per data frame (§7.1) and this is the hot path.
func AppendAckPayload(dst []byte, of *Message) []byte {
	dst = append(dst, `{"AcknowledgedMessageType":"`...)
	dst = append(dst, of.Type...)
	dst = append(dst, `","AcknowledgedMessageId":"`...)
	dst = of.MessageID.AppendText(dst)
	dst = append(dst, `","AcknowledgedMessageSequenceNumber":`...)
	dst = strconv.AppendInt(dst, of.SequenceNumber, 10)
	dst = append(dst, `,"IsSequentialMessage":true}`...)
	return dst
}

// NewAck builds the acknowledge frame for a received data frame: seq 0, flags SYN|FIN, a fresh MessageId,
// PayloadType 0 (§7.1).
func NewAck(of *Message, createdMillis uint64) Message {
	return Message{
		Type:          Acknowledge,
		SchemaVersion: 1,
		CreatedDate:   createdMillis,
		Flags:         FlagSYN | FlagFIN,
		MessageID:     NewID(),
		Payload:       AppendAckPayload(make([]byte, 0, 160), of),
	}
}

// DecodeAck reads an acknowledge payload.
func DecodeAck(payload []byte) (Ack, error) {
	var a Ack
	if err := json.Unmarshal(payload, &a); err != nil {
		return Ack{}, fmt.Errorf("acknowledge payload is not valid JSON: %w", err)
	}
	if a.AcknowledgedMessageSequenceNumber < 0 {
		return Ack{}, fmt.Errorf("acknowledge payload has negative sequence number %d", a.AcknowledgedMessageSequenceNumber)
	}
	return a, nil
}
