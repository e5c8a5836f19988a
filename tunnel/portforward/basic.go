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
// TCP connection at a time. The slot gives it one connection at a time (a busy basic session is not
// available to the pool), the local EOF becomes Flag DisconnectToPort, and bytes are passed through
// unchanged — no "\n" → "\r" rewrite, unlike the official client.
//
// Output that arrives while no local connection is attached belongs to a connection already ended with
// DisconnectToPort (the agent closes that destination and redials on our next Output), so it is discarded
// rather than delivered to the next connection.
type basicMux struct {
	ch     *datachannel.Channel
	ctx    context.Context
	cancel context.CancelFunc

	mu  sync.Mutex
	cur net.Conn
}

func newBasicMux(ch *datachannel.Channel) *basicMux {
	ctx, cancel := context.WithCancel(context.Background())
	b := &basicMux{ch: ch, ctx: ctx, cancel: cancel}
	go b.readLoop()
	return b
}

func (b *basicMux) readLoop() {
	for {
		pt, p, err := b.ch.Receive(b.ctx)
		if err != nil {
			b.mu.Lock()
			if b.cur != nil {
				b.cur.Close()
			}
			b.mu.Unlock()
			return
		}
		if pt != message.PayloadOutput {
			continue
		}
		b.mu.Lock()
		c := b.cur
		b.mu.Unlock()
		if c == nil {
			continue
		}
		if _, err := c.Write(p); err != nil {
			c.Close() // the local side is gone; its reader ends and sends DisconnectToPort
		}
	}
}

// chanWriter sends raw bytes as Output.
type chanWriter struct{ b *basicMux }

func (w chanWriter) Write(p []byte) (int, error) {
	if err := w.b.ch.Send(w.b.ctx, message.PayloadOutput, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// serve carries c until it ends, then tells the agent to drop its destination connection.
func (b *basicMux) serve(c net.Conn) error {
	b.mu.Lock()
	if b.cur != nil {
		b.mu.Unlock()
		return errors.New("basic mode carries one connection at a time")
	}
	b.cur = c
	b.mu.Unlock()
	small := make([]byte, smallBufSize)
	_, err := pumpTo(chanWriter{b}, c, small)
	b.mu.Lock()
	b.cur = nil
	b.mu.Unlock()
	c.Close()
	if serr := b.ch.Send(b.ctx, message.PayloadFlag, message.FlagDisconnectToPort.Payload()); serr != nil && err == nil {
		err = serr
	}
	return err
}

func (b *basicMux) close() { b.cancel() }
