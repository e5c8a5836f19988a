package portforward

import (
	"context"
	"sync"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// chanConn is the byte stream smux runs over: Output payloads of the data channel in both directions
// (§9.4). It replaces the plugin's in-process unix socketpair and its 1 ms sleep pump: Write hands smux
// frames to Channel.Send, which splits them at MaxPayloadSize and paces them with the channel's token
// bucket; Read drains Receive. Flag payloads are passed to onFlag and never reach smux.
type chanConn struct {
	ch     *datachannel.Channel
	ctx    context.Context
	cancel context.CancelFunc
	onFlag func(message.Flag)

	rmu     sync.Mutex // one reader (smux's recvLoop), but Close may race with it
	pending []byte
	tap     smuxTap
}

// newChanConn returns smux's connection over ch. events is told of each stream's SYN as smux sends it and
// of its payload bytes and FIN as smux reads them (see smuxTap).
func newChanConn(ch *datachannel.Channel, onFlag func(message.Flag), events streamEvents) *chanConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &chanConn{ch: ch, ctx: ctx, cancel: cancel, onFlag: onFlag, tap: smuxTap{events: events}}
}

func (c *chanConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.pending) == 0 {
		pt, payload, err := c.ch.Receive(c.ctx)
		if err != nil {
			return 0, err
		}
		switch pt {
		case message.PayloadOutput:
			c.pending = payload
		case message.PayloadFlag:
			if f, err := message.DecodeFlag(payload); err == nil && c.onFlag != nil {
				c.onFlag(f)
			}
		}
		// Other payload types (a late handshake retransmit, §9.4 startup race) are ignored, not fatal.
	}
	n := copy(p, c.pending)
	c.tap.observe(p[:n])
	c.pending = c.pending[n:]
	if len(c.pending) == 0 {
		c.pending = nil
	}
	return n, nil
}

func (c *chanConn) Write(p []byte) (int, error) {
	// Before the send: the agent's answer to a SYN must find the stream registered (see streamTable.opened).
	observeSent(p, c.tap.events)
	if err := c.ch.Send(c.ctx, message.PayloadOutput, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close stops smux's use of the channel; the channel itself belongs to the session.
func (c *chanConn) Close() error {
	c.cancel()
	return nil
}
