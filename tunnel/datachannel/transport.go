package datachannel

import (
	"sync"
)

// Transport carries whole frames, one per websocket binary message (§4). A Channel runs exactly one
// goroutine calling ReadFrame and one calling WriteFrame on it, like gorilla/websocket requires.
//
// Contract: ReadFrame's result is valid until the next ReadFrame call; WriteFrame does not retain its
// argument after returning; Close may be called at any time from any goroutine, is idempotent, and unblocks
// pending ReadFrame and WriteFrame calls with an error.
type Transport interface {
	ReadFrame() ([]byte, error)
	WriteFrame(frame []byte) error
	Close() error
}

// DefaultPipeCapacity is the number of frames a Pipe direction buffers before WriteFrame blocks.
const DefaultPipeCapacity = 256

// Pipe returns two connected in-memory Transports: frames written to one are read from the other, in order,
// never dropped. Each direction buffers up to capacity frames (DefaultPipeCapacity if ≤ 0), after which
// WriteFrame blocks — a bounded pipe, so a slow reader pushes back on the writer as a TCP socket would.
// Closing either end closes both, like a dropped connection.
func Pipe(capacity int) (Transport, Transport) {
	if capacity <= 0 {
		capacity = DefaultPipeCapacity
	}
	shared := &pipeShared{die: make(chan struct{})}
	ab := make(chan []byte, capacity)
	ba := make(chan []byte, capacity)
	return &pipeEnd{shared: shared, in: ba, out: ab}, &pipeEnd{shared: shared, in: ab, out: ba}
}

type pipeShared struct {
	once sync.Once
	die  chan struct{}
}

type pipeEnd struct {
	shared *pipeShared
	in     <-chan []byte
	out    chan<- []byte
}

func (p *pipeEnd) ReadFrame() ([]byte, error) {
	// Prefer buffered frames only while open: after Close, the connection is gone, as with a socket.
	select {
	case <-p.shared.die:
		return nil, ErrTransportClosed
	default:
	}
	select {
	case f := <-p.in:
		return f, nil
	case <-p.shared.die:
		return nil, ErrTransportClosed
	}
}

func (p *pipeEnd) WriteFrame(frame []byte) error {
	select {
	case <-p.shared.die:
		return ErrTransportClosed
	default:
	}
	cp := make([]byte, len(frame))
	copy(cp, frame)
	select {
	case p.out <- cp:
		return nil
	case <-p.shared.die:
		return ErrTransportClosed
	}
}

func (p *pipeEnd) Close() error {
	p.shared.once.Do(func() { close(p.shared.die) })
	return nil
}
