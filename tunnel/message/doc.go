// Package message is the codec of the Session Manager data-channel frame (ssm-protocol.md §5–§7): the fixed
// 120-byte header with its quirks (space-padded MessageType, swapped-halves MessageId, SHA-256 payload digest),
// the MessageType and PayloadType constants, acknowledgements, and the JSON payloads of the handshake and
// of channel_closed.
//
// The package does no I/O. Decode validates a frame before trusting any field and never allocates more than
// the frame it is given: the decoded Payload aliases the input, so a hostile length field cannot make the
// decoder reserve memory it claims.
package message
