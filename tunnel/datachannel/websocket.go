package datachannel

import (
	"log/slog"
	"time"

	"github.com/gorilla/websocket"
)

// Websocket keepalive defaults. The plugin pings every 5 min with no deadline and hangs on a dead link
// (issue #47); the agent pings every 54 s with a 60 s deadline (§4). We ping every 5 s and give up after 15 s
// without any inbound message or pong: a dead link is noticed within seconds, while three missed pongs in a
// row tolerate a busy or briefly stalled path. Pings are websocket control frames, not stream data, so they
// do not keep the service's idle timeout alive (§10.4).
const (
	DefaultPingInterval = 5 * time.Second
	DefaultPongTimeout  = 15 * time.Second
	// DefaultReadLimit is the largest websocket message accepted: the biggest frame a peer may send
	// (header + MaxPayloadSizeLimit) plus headroom. A larger message fails the transport with ErrFrameTooLarge.
	DefaultReadLimit = 120 + MaxPayloadSizeLimit + 4096
)

// WebsocketOptions tunes a websocket Transport.
type WebsocketOptions struct {
	// PingInterval between websocket pings (default 5 s). Negative disables pings (a server side that only
	// answers the peer's pings).
	PingInterval time.Duration
	// PongTimeout: the transport fails when nothing (message or pong) arrived for this long. Default 15 s.
	// Negative disables the read deadline.
	PongTimeout time.Duration
	// ReadLimit is the largest message accepted, in bytes. Default DefaultReadLimit.
	ReadLimit int64
	// Logger for debug logs. Default: discard.
	Logger *slog.Logger
}

// NewWebsocketTransport wraps an open websocket (client or server side) as a Transport. Binary messages are
// frames; text messages are logged and ignored (the OpenDataChannel text frame is exchanged before
// wrapping). It starts one writer goroutine and the pinger; ReadFrame must be called from one goroutine.
func NewWebsocketTransport(conn *websocket.Conn, opts WebsocketOptions) Transport {
	return &wsTransport{conn: conn}
}

type wsTransport struct {
	conn *websocket.Conn
}

func (w *wsTransport) ReadFrame() ([]byte, error)    { return nil, errNotImplemented }
func (w *wsTransport) WriteFrame(frame []byte) error { return errNotImplemented }
func (w *wsTransport) Close() error                  { return w.conn.Close() }
