package portforward

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// basicMux is basic mode (§9.3), for agents at or below 3.0.196.0: the channel carries the raw bytes of one
// TCP connection, the one the agent dialled at session start. A basic session carries exactly one local
// connection in its life (the pool replaces it afterwards), because the agent never says where one
// destination connection's output ends: output still in flight when a local connection ends would reach
// the next one. Nothing is read from the channel before the connection attaches, so what the destination
// says first (MySQL, SSH and SMTP greetings) waits in the channel for it. The local EOF becomes Flag
// DisconnectToPort, and bytes are passed through unchanged — no "\n" → "\r" rewrite, unlike the official
// client.
type basicMux struct {
	ch     *datachannel.Channel
	ctx    context.Context
	cancel context.CancelFunc

	mu  sync.Mutex
	cur net.Conn
}

func newBasicMux(ch *datachannel.Channel) *basicMux {
	ctx, cancel := context.WithCancel(context.Background())
	return &basicMux{ch: ch, ctx: ctx, cancel: cancel}
}

// chanWriter sends raw bytes as Output.
type chanWriter struct{ b *basicMux }

func (w chanWriter) Write(p []byte) (int, error) {
	if err := w.b.ch.Send(w.b.ctx, message.PayloadOutput, p); err != nil {
		return 0, streamWriteError{err}
	}
	return len(p), nil
}

// errBasicBusy: a basic session is given a second connection (a pool bug, never expected).
var errBasicBusy = errors.New("basic mode carries one connection per session")

// serve carries c until either side ends it and reports how it ended: nil when the local app ended it (its
// EOF becomes DisconnectToPort), otherwise why c was reset. The agent never tells that the destination
// closed (§9.3), so only the local side ends a basic connection cleanly.
func (b *basicMux) serve(c net.Conn, resets *resetCounts) error {
	b.mu.Lock()
	if b.cur != nil {
		b.mu.Unlock()
		return errBasicBusy
	}
	b.cur = c
	b.mu.Unlock()

	var once sync.Once
	reset := func(why resetReason) {
		once.Do(func() {
			resets[why].Add(1)
			resetConn(c)
		})
	}
	readCtx, stopRead := context.WithCancel(b.ctx)
	readDone := make(chan error, 1)
	go func() {
		err := b.toLocal(readCtx, c)
		switch {
		case errors.Is(err, context.Canceled):
		case isLocalWriteError(err):
			reset(resetLocalGone)
		default:
			// The session failed while the connection was open: bytes may be missing.
			reset(resetSessionLost)
		}
		readDone <- err
	}()

	_, err := pumpTo(chanWriter{b}, c, make([]byte, smallBufSize))
	var sw streamWriteError
	switch {
	case err == nil:
		// Local EOF: the app is done; the agent drops its destination connection.
		if serr := b.ch.Send(b.ctx, message.PayloadFlag, message.FlagDisconnectToPort.Payload()); serr != nil {
			err = serr
			reset(resetSessionLost)
		}
	case errors.As(err, &sw):
		reset(resetSessionLost)
	default:
		reset(resetLocalGone) // the local read failed: the app reset its end (or toLocal reset it)
	}
	stopRead()
	<-readDone
	c.Close()
	return err
}

// toLocal writes the agent's Output to c until ctx ends or the channel fails.
func (b *basicMux) toLocal(ctx context.Context, c net.Conn) error {
	for {
		pt, p, err := b.ch.Receive(ctx)
		if err != nil {
			return err
		}
		if pt != message.PayloadOutput {
			continue
		}
		if _, err := c.Write(p); err != nil {
			return localWriteError{err}
		}
	}
}

// abort resets the connection being carried, if any.
func (b *basicMux) abort() {
	b.mu.Lock()
	c := b.cur
	b.mu.Unlock()
	if c != nil {
		resetConn(c)
	}
}

func (b *basicMux) close() { b.cancel() }
