package datachannel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Websocket keepalive defaults. The plugin pings every 5 min with no read deadline and hangs on a dead link
// (aws/session-manager-plugin#47); the agent pings every 54 s with a 60 s deadline (§4). We ping every 5 s
// and fail the transport when nothing (a message, a ping or a pong) arrived for 15 s: a dead link is noticed
// within seconds, three lost pongs in a row are tolerated, and the cost is one 15-byte control frame per 5 s.
// Pings are websocket control frames, not stream data, so they do not defeat the service's idle timeout
// (§10.4), which is why smux NOPs are disabled instead.
const (
	DefaultPingInterval = 5 * time.Second
	DefaultPongTimeout  = 15 * time.Second
	// DefaultReadLimit is the largest websocket message accepted: the biggest frame a peer may send
	// (header + MaxPayloadSizeLimit) plus headroom. A larger message fails the transport with ErrFrameTooLarge
	// before it is read into memory.
	DefaultReadLimit = 120 + MaxPayloadSizeLimit + 4096
	// writeTimeout bounds one frame write, so a peer that stops reading cannot block the writer forever.
	writeTimeout = 30 * time.Second
)

// pingPayload is what the plugin sends in its pings (§4.1).
var pingPayload = []byte("keepalive")

// WebsocketOptions tunes a websocket Transport.
type WebsocketOptions struct {
	// PingInterval between websocket pings (default 5 s). Negative disables pings (the peer's pings are still
	// answered).
	PingInterval time.Duration
	// PongTimeout: the transport fails when nothing (message, ping or pong) arrived for this long. Default
	// 15 s. Negative disables the read deadline.
	PongTimeout time.Duration
	// ReadLimit is the largest message accepted, in bytes. Default DefaultReadLimit.
	ReadLimit int64
	// Logger for debug logs. Default: discard.
	Logger *slog.Logger
}

func (o WebsocketOptions) withDefaults() WebsocketOptions {
	if o.PingInterval == 0 {
		o.PingInterval = DefaultPingInterval
	}
	if o.PongTimeout == 0 {
		o.PongTimeout = DefaultPongTimeout
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = DefaultReadLimit
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// NewWebsocketTransport wraps an open websocket (client or server side) as a Transport. Binary messages are
// frames; text messages are logged and ignored (the OpenDataChannel text frame is exchanged before
// wrapping, §4.1). Pings go out through WriteControl from a pinger goroutine; ReadFrame must be called from
// one goroutine (the Channel's reader) and WriteFrame is serialised, so gorilla's one-reader/one-writer rule
// holds.
func NewWebsocketTransport(conn *websocket.Conn, opts WebsocketOptions) Transport {
	opts = opts.withDefaults()
	w := &wsTransport{conn: conn, opts: opts, die: make(chan struct{}), readFailed: make(chan struct{})}
	conn.SetReadLimit(opts.ReadLimit)
	w.extendDeadline()
	conn.SetPongHandler(func(string) error {
		w.extendDeadline()
		return nil
	})
	conn.SetPingHandler(func(data string) error {
		w.extendDeadline()
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			return err
		}
		return nil
	})
	if opts.PingInterval > 0 {
		go w.pinger()
	}
	return w
}

type wsTransport struct {
	conn *websocket.Conn
	opts WebsocketOptions
	rbuf bytes.Buffer
	wmu  sync.Mutex
	die  chan struct{}
	once sync.Once
	// readFailed is closed, and rerr set, when ReadFrame fails: a write that meets the close frame the reader
	// sent for a protocol error reports the reader's error, the cause.
	readFailed chan struct{}
	rerr       error
	rfOnce     sync.Once
}

func (w *wsTransport) extendDeadline() {
	if w.opts.PongTimeout > 0 {
		_ = w.conn.SetReadDeadline(time.Now().Add(w.opts.PongTimeout))
	}
}

func (w *wsTransport) pinger() {
	t := time.NewTicker(w.opts.PingInterval)
	defer t.Stop()
	for {
		if err := w.conn.WriteControl(websocket.PingMessage, pingPayload, time.Now().Add(w.opts.PingInterval)); err != nil {
			w.opts.Logger.Debug("Websocket ping failed", "err", err)
			return
		}
		select {
		case <-t.C:
		case <-w.die:
			return
		}
	}
}

// ReadFrame returns the next binary message. The slice is reused by the next call.
func (w *wsTransport) ReadFrame() ([]byte, error) {
	for {
		mt, r, err := w.conn.NextReader()
		if err != nil {
			return nil, w.readErr(err)
		}
		w.extendDeadline()
		if mt != websocket.BinaryMessage {
			n, err := io.Copy(io.Discard, r)
			if err != nil {
				return nil, w.readErr(err)
			}
			w.opts.Logger.Debug("Ignoring websocket text message", "bytes", n)
			continue
		}
		w.rbuf.Reset()
		if _, err := w.rbuf.ReadFrom(r); err != nil {
			return nil, w.readErr(err)
		}
		return w.rbuf.Bytes(), nil
	}
}

func (w *wsTransport) readErr(err error) error {
	err = w.classifyReadErr(err)
	w.rfOnce.Do(func() {
		w.rerr = err
		close(w.readFailed)
	})
	return err
}

func (w *wsTransport) classifyReadErr(err error) error {
	select {
	case <-w.die:
		return ErrTransportClosed
	default:
	}
	if errors.Is(err, websocket.ErrReadLimit) {
		return fmt.Errorf("%w (%d bytes): %v", ErrFrameTooLarge, w.opts.ReadLimit, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("websocket link dead: nothing received for %s (aws/session-manager-plugin#47): %w", w.opts.PongTimeout, err)
	}
	return err
}

// WriteFrame writes one binary message.
func (w *wsTransport) WriteFrame(frame []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	select {
	case <-w.die:
		return ErrTransportClosed
	default:
	}
	_ = w.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := w.conn.WriteMessage(websocket.BinaryMessage, frame); err != nil {
		if errors.Is(err, websocket.ErrCloseSent) {
			// Only Close or the reader (answering a protocol error or the peer's close) sends a close
			// frame; report why it did rather than that it did.
			select {
			case <-w.readFailed:
				return w.rerr
			case <-w.die:
				return ErrTransportClosed
			}
		}
		select {
		case <-w.die:
			return ErrTransportClosed
		default:
			return err
		}
	}
	return nil
}

// Close sends a normal-closure close frame (best effort, bounded by a short deadline) and closes the
// connection, unblocking ReadFrame and WriteFrame.
func (w *wsTransport) Close() error {
	w.once.Do(func() {
		close(w.die)
		_ = w.conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(100*time.Millisecond))
		_ = w.conn.Close()
	})
	return nil
}
