package datachannel

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrClosed is returned by operations on a Channel that was closed with Close.
	ErrClosed = errors.New("datachannel: channel closed")
	// ErrTransportClosed is returned by a Transport after its Close.
	ErrTransportClosed = errors.New("datachannel: transport closed")
	// ErrFrameTooLarge is returned when a peer sends a websocket message larger than the read limit. It fails
	// the transport (the owner may resume), never the process.
	ErrFrameTooLarge = errors.New("datachannel: frame exceeds the read limit")
	// ErrHandshake wraps every handshake failure (§8).
	ErrHandshake = errors.New("datachannel: handshake failed")
	// ErrInvalidConfig wraps Config.Validate failures.
	ErrInvalidConfig = errors.New("datachannel: invalid config")
)

// ChannelClosedError is the terminal error of a channel the service closed with channel_closed (§10.2):
// session terminated, idle timeout, maximum duration, or the agent's plugin ended. Output is the service's
// message, e.g. "Your session timed out due to inactivity and has been terminated.", meant for the user.
type ChannelClosedError struct {
	// SessionID is the session the service says it closed, when the payload names it.
	SessionID string
	// Output is the service's human-readable reason; may be empty.
	Output string
}

func (e *ChannelClosedError) Error() string {
	if e.Output == "" {
		return "datachannel: channel closed by the service"
	}
	return fmt.Sprintf("datachannel: channel closed by the service: %s", e.Output)
}

// maxServiceText bounds what of a service's message the tunnel keeps: it ends up in logs and /readyz.
const maxServiceText = 1024

// printable makes text from the service safe to print: control characters (escape sequences, newlines that
// would forge log lines) become spaces, invalid UTF-8 the replacement character, and it is cut to
// maxServiceText bytes.
func printable(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	if len(s) > maxServiceText {
		s = strings.ToValidUTF8(s[:maxServiceText], "")
	}
	return s
}
