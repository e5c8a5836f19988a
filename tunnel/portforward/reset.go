package portforward

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
)

// resetReason says why a local connection was reset rather than ended with a FIN. A connection ends with a
// FIN only after the agent's FIN for its stream and every byte before it was delivered; every other end is
// a reset, so that no app reads a truncated response as complete.
type resetReason int

const (
	// resetSessionLost: the stream's session failed, was replaced or refused the bytes.
	resetSessionLost resetReason = iota
	// resetLocalGone: the local app reset or stopped taking data first.
	resetLocalGone
	// resetDestinationRefused: the agent could not dial the destination (ConnectToPortError).
	resetDestinationRefused
	// resetStalledStream: the local reader stopped while the stream's bytes filled the session buffer.
	resetStalledStream
	// resetDrainDeadline: the connection was still open when the shutdown drain ran out.
	resetDrainDeadline
	// resetConnectionLimit: the port already carried Config.MaxConnections connections.
	resetConnectionLimit
	// resetNoSession: no session became ready within ConnectTimeout, or the session was down longer than
	// Config.PartitionTimeout.
	resetNoSession
	numResetReasons
)

var resetReasonNames = [numResetReasons]string{
	resetSessionLost:        "session_lost",
	resetLocalGone:          "local_gone",
	resetDestinationRefused: "destination_refused",
	resetStalledStream:      "stalled_stream",
	resetDrainDeadline:      "drain_deadline",
	resetConnectionLimit:    "connection_limit",
	resetNoSession:          "no_session",
}

func (r resetReason) String() string { return resetReasonNames[r] }

// resetCounts counts resets per reason.
type resetCounts [numResetReasons]atomic.Uint64

// setLingerZero makes the next Close of c send a TCP reset instead of a FIN.
func setLingerZero(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// resetConn closes c with a TCP reset.
func resetConn(c net.Conn) {
	setLingerZero(c)
	c.Close()
}

// localWriteError marks a failed write to the local connection, so the end of the copy can tell "the app
// went away" from "the stream failed".
type localWriteError struct{ err error }

func (e localWriteError) Error() string { return "write to the local connection: " + e.err.Error() }
func (e localWriteError) Unwrap() error { return e.err }

func isLocalWriteError(err error) bool {
	var lw localWriteError
	return errors.As(err, &lw)
}

// streamWriteError marks a failed write to a stream (its session is gone).
type streamWriteError struct{ err error }

func (e streamWriteError) Error() string { return "write to the stream: " + e.err.Error() }
func (e streamWriteError) Unwrap() error { return e.err }

// streamWriter tags the stream's write errors.
type streamWriter struct{ w io.Writer }

func (s streamWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = streamWriteError{err}
	}
	return n, err
}
