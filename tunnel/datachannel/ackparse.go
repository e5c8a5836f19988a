package datachannel

import (
	"bytes"
	"strconv"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

var ackSeqKey = []byte(`"AcknowledgedMessageSequenceNumber"`)

// ackSequenceNumber extracts AcknowledgedMessageSequenceNumber from an acknowledge payload (§7.1), the only
// field receivers use. One ack arrives per data frame, and encoding/json was half of the channel's
// allocations, so the canonical layout is scanned directly; anything else (odd spacing aside) falls back
// to message.DecodeAck. The key cannot match inside a JSON string, where its quotes would be escaped.
func ackSequenceNumber(payload []byte) (int64, error) {
	if i := bytes.Index(payload, ackSeqKey); i >= 0 {
		rest := bytes.TrimLeft(payload[i+len(ackSeqKey):], " \t\r\n")
		if len(rest) > 0 && rest[0] == ':' {
			rest = bytes.TrimLeft(rest[1:], " \t\r\n")
			n := 0
			for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
				n++
			}
			if n > 0 && n < len(rest) && (rest[n] == ',' || rest[n] == '}' || rest[n] == ' ' || rest[n] == '\n' || rest[n] == '\r' || rest[n] == '\t') {
				if seq, err := strconv.ParseInt(string(rest[:n]), 10, 64); err == nil {
					return seq, nil
				}
			}
		}
	}
	a, err := message.DecodeAck(payload)
	if err != nil {
		return 0, err
	}
	return a.AcknowledgedMessageSequenceNumber, nil
}
