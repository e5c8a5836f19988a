package portforward

import (
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// fwdConn is one accepted local connection carried by one smux stream.
type fwdConn struct {
	local    net.Conn
	stream   *smux.Stream
	opened   time.Time
	received atomic.Int64 // bytes from the agent so far; 0 = still awaiting first data
	arrived  atomic.Int64 // bytes smux read for this stream (smuxTap); arrived - received are held
	aborted  atomic.Bool

	// watchdog state, only touched by the watchdog goroutine
	lastDelivered int64
	stallSince    time.Time
}

// abort closes both ends at once (destination refused, drain deadline).
func (c *fwdConn) abort() {
	c.aborted.Store(true)
	c.local.Close()
	c.stream.Close()
}

// countingWriter marks the connection as having received data and counts it.
type countingWriter struct {
	w io.Writer
	c *fwdConn
}

func (cw countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.c.received.Add(int64(n))
	return n, err
}

type closeWriter interface{ CloseWrite() error }

// serveMux copies both ways between the local connection and its stream until both directions are done.
// The local → agent direction runs on the calling (handler) goroutine and the agent → local direction on one
// more, so an idle connection costs two parked goroutines and no copy buffer (issue 4 scale target).
//
// Half-close (§9.4): the official client tears the stream down when either direction ends, discarding
// response bytes still in flight. Here a local EOF sends FIN (smux CloseWrite) and the stream keeps
// delivering until the agent's FIN, which becomes a TCP half-close (CloseWrite) toward the local app. An
// agent that closes fully on FIN, as the real one does, still ends both directions; nothing is lost that the
// agent sent.
func (s *slot) serveMux(c *fwdConn) {
	toLocalDone := make(chan struct{})
	go func() {
		defer close(toLocalDone)
		s.copyToLocal(c)
	}()
	copyToAgent(c)
	<-toLocalDone
	c.stream.Close()
	c.local.Close()
}

// copyToLocal copies agent → local (no buffer: smux.Stream implements io.WriterTo) and ends the local side
// the way the stream ended: abort, refusal (ConnectToPortError) or half-close.
func (s *slot) copyToLocal(c *fwdConn) {
	_, err := io.Copy(countingWriter{c.local, c}, c.stream)
	switch {
	case err != nil || c.aborted.Load():
		c.local.Close()
		c.stream.Close()
	case c.received.Load() == 0 && s.claimConnectError():
		// The agent could not dial the destination for this stream (Flag 3, then FIN): close the local
		// connection at once instead of leaving it half-open.
		s.log.Warn("Connection to destination failed, check the SSM Agent logs", "port", s.port.String(), "remote", c.local.RemoteAddr().String())
		c.local.Close()
	default:
		if cw, ok := c.local.(closeWriter); ok {
			cw.CloseWrite()
		} else {
			c.local.Close()
		}
	}
}

// copyToAgent copies local → agent; a local EOF becomes the stream's FIN (half-close), an error closes both.
func copyToAgent(c *fwdConn) {
	if _, err := copyFromLocal(c.stream, c.local); err != nil {
		c.stream.Close()
		c.local.Close()
		return
	}
	if err := c.stream.CloseWrite(); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		c.stream.Close()
	}
}

// ConnectToPortError correlation.
//
// Flag 3 (§6.3) carries no stream id. The agent sends it on the data channel and then FINs the stream whose
// dial failed (§9.4 step 5), in that order on the one ordered channel. So the flag is recorded as pending,
// and the next stream that ends having received no byte at all claims it and is closed as refused. A stream
// that ends with no data and no pending flag is an ordinary empty response and is half-closed normally. If an
// agent sent the flag without a FIN, after connectErrorGrace the newest stream still awaiting its first byte
// that was opened before the flag is closed instead: the most recent open is the most likely to have been
// dialled last. Either way only one connection is affected per flag.
const connectErrorGrace = 5 * time.Second

func (s *slot) onFlag(f message.Flag) {
	if f != message.FlagConnectToPortError {
		return
	}
	s.connectErrors.Add(1)
	at := time.Now()
	s.fmu.Lock()
	s.pendingRefusals = append(s.pendingRefusals, at)
	s.fmu.Unlock()
	time.AfterFunc(connectErrorGrace, func() { s.expireRefusal(at) })
}

// claimConnectError consumes one pending refusal, if any.
func (s *slot) claimConnectError() bool {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if len(s.pendingRefusals) == 0 {
		return false
	}
	s.pendingRefusals = s.pendingRefusals[1:]
	return true
}

func (s *slot) expireRefusal(at time.Time) {
	s.fmu.Lock()
	found := false
	for i, t := range s.pendingRefusals {
		if t.Equal(at) {
			s.pendingRefusals = append(s.pendingRefusals[:i], s.pendingRefusals[i+1:]...)
			found = true
			break
		}
	}
	s.fmu.Unlock()
	if !found {
		return
	}
	var newest *fwdConn
	s.cmu.Lock()
	for c := range s.conns {
		if c.received.Load() == 0 && c.opened.Before(at) && (newest == nil || c.opened.After(newest.opened)) {
			newest = c
		}
	}
	s.cmu.Unlock()
	if newest != nil {
		s.log.Warn("Connection to destination failed (no stream end followed the agent's error); closing the newest waiting connection",
			"port", s.port.String())
		newest.abort()
	}
}
