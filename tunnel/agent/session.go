package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/xtaci/smux"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// smux settings of both official peers (§9.4): smux.DefaultConfig with only KeepAliveDisabled overridden.
const (
	smuxMaxFrameSize     = 32768
	smuxMaxReceiveBuffer = 4 << 20
	// readChunk is the read size of the pumps; the channel splits it into MaxPayloadSize frames.
	readChunk = 32 << 10
)

// smuxHeaderSize is the smux v1 frame header: version, command, length, stream ID.
const smuxHeaderSize = 8

// smuxFrameSize is the official agent's 32768-byte smux frame, except on a channel whose payloads hold a
// whole such frame (the emulator's unpaced mode): there the frame shrinks by its header, so that each smux
// frame travels as one data frame instead of a full payload plus an 8-byte one (twice the frames, digests
// and acks; the client sizes its frames the same way, portforward's smuxFrameSizeFor). With the service's
// 1 KiB payloads nothing changes.
func smuxFrameSize(maxPayload int) int {
	if maxPayload >= smuxMaxFrameSize {
		return smuxMaxFrameSize - smuxHeaderSize
	}
	return smuxMaxFrameSize
}

// Injector writes raw bytes into a running session's smux byte stream toward the client, as if the smux
// server had written them: the emulator's CorruptMux sends a frame with a bad version byte this way. Each
// Inject lands between two of the server's frames, never inside one, because the server writes every frame
// with one Write to the in-process pipe, and the pipe serialises Writes. The zero value is ready to use; one
// Injector serves one session at a time.
type Injector struct {
	mu sync.Mutex
	w  io.Writer // the smux server's end of the pipe while the session runs in mux mode
}

// Inject writes p into the smux byte stream toward the client and returns once the pump took it (it then
// travels in sequence like the server's own bytes). It returns ErrNotMultiplexed while the session carries
// no smux stream, and the pipe's error if the session ends meanwhile.
func (in *Injector) Inject(p []byte) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.w == nil {
		return ErrNotMultiplexed
	}
	if _, err := in.w.Write(p); err != nil {
		return fmt.Errorf("agent: inject into the smux stream: %w", err)
	}
	return nil
}

// set installs (or with nil, removes) the smux server's end of the pipe; a nil Injector ignores it.
func (in *Injector) set(w io.Writer) {
	if in == nil {
		return
	}
	in.mu.Lock()
	in.w = w
	in.mu.Unlock()
}

// errTerminated marks a session ended by FlagTerminateSession; Serve maps it to nil.
var errTerminated = errors.New("agent: session terminated by the client")

type session struct {
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
	ch     *datachannel.Channel
	cfg    Config
	log    *slog.Logger
	addrs  []string
}

// finish maps the first error that ended the session to Serve's result.
func (s *session) finish(err error) error {
	if errors.Is(err, errTerminated) {
		return nil
	}
	if perr := s.parent.Err(); perr != nil {
		return perr
	}
	return err
}

// report delivers the first result without ever blocking a goroutine that finishes later.
func report(result chan<- error, err error) {
	select {
	case result <- err:
	default:
	}
}

// serveMux runs the smux v1 server on remote, the end of an in-process pipe whose other end, local, is
// pumped to and from the channel (§9.4). Each accepted stream is handled on its own goroutine, so a slow or
// black-holed destination dial blocks only its own stream (unlike the real agent, which dials inside the
// accept loop).
func (s *session) serveMux(local, remote net.Conn, keepAliveDisabled bool) error {
	conf := smux.DefaultConfig()
	conf.Version = 1
	conf.MaxFrameSize = smuxFrameSize(s.ch.MaxPayloadSize())
	conf.MaxReceiveBuffer = smuxMaxReceiveBuffer
	conf.KeepAliveDisabled = keepAliveDisabled
	sess, err := smux.Server(remote, conf)
	if err != nil {
		_ = local.Close()
		_ = remote.Close()
		s.cfg.Injector.set(nil)
		return fmt.Errorf("agent: start smux server: %w", err)
	}

	result := make(chan error, 1)
	var streams sync.WaitGroup
	// smux → channel.
	go func() {
		sendErr, readErr := s.sendFrom(local)
		if sendErr != nil {
			report(result, sendErr)
			return
		}
		report(result, fmt.Errorf("agent: smux pipe closed: %w", readErr))
	}()
	// channel → smux, and flags.
	go func() {
		for {
			pt, p, err := s.ch.Receive(s.ctx)
			if err != nil {
				report(result, err)
				return
			}
			switch pt {
			case message.PayloadOutput:
				if _, err := local.Write(p); err != nil {
					report(result, fmt.Errorf("agent: smux pipe closed: %w", err))
					return
				}
			case message.PayloadFlag:
				f, err := message.DecodeFlag(p)
				if err != nil {
					s.log.Debug("Ignoring bad flag", "err", err)
					continue
				}
				if f == message.FlagTerminateSession {
					report(result, errTerminated)
					return
				}
				s.log.Debug("Ignoring flag in mux mode", "flag", f.String()) // DisconnectToPort is basic-only (§6.3)
			default:
				s.log.Debug("Ignoring payload", "payloadType", pt.String())
			}
		}
	}()
	// Accept loop.
	go func() {
		for {
			st, err := sess.AcceptStream()
			if err != nil {
				// With keepalive on and a client that sends no NOPs, this is where the session ends
				// (aws/session-manager-plugin#93).
				report(result, fmt.Errorf("agent: smux session closed: %w", err))
				return
			}
			streams.Add(1)
			go func() {
				defer streams.Done()
				s.handleStream(st)
			}()
		}
	}()

	err = <-result
	s.cancel()
	_ = sess.Close()
	_ = local.Close()
	_ = remote.Close() // unblocks an Inject in progress, so set can take the Injector's lock
	s.cfg.Injector.set(nil)
	streams.Wait()
	return s.finish(err)
}

// sendFrom sends what it reads from r as Output payloads of at most readChunk bytes, like the agent's reads
// (§9.6), until a send or a read fails. A send error breaks the session and is returned first; otherwise
// readErr says how r ended.
func (s *session) sendFrom(r io.Reader) (sendErr, readErr error) {
	buf := make([]byte, max(readChunk, s.ch.MaxPayloadSize()))
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if serr := s.ch.Send(s.ctx, message.PayloadOutput, buf[:n]); serr != nil {
				return serr, nil
			}
		}
		if err != nil {
			return nil, err
		}
	}
}

// handleStream dials the destination for one stream and copies both ways; on dial failure it sends Flag
// ConnectToPortError and closes only this stream (§9.4 step 5). When either direction ends, both are
// closed: smux v1 has no half-close (§9.4).
func (s *session) handleStream(st *smux.Stream) {
	conn, err := dial(s.ctx, s.cfg, s.addrs)
	if err != nil {
		s.log.Info("Connection to destination failed", "stream", st.ID(), "err", err)
		if serr := s.ch.Send(s.ctx, message.PayloadFlag, message.FlagConnectToPortError.Payload()); serr != nil {
			s.log.Debug("Cannot send ConnectToPortError", "err", serr)
		}
		_ = st.Close()
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(conn, st); done <- struct{}{} }()
	go func() { _, _ = io.Copy(st, conn); done <- struct{}{} }()
	pending := 2
	select {
	case <-done:
		pending--
	case <-s.ctx.Done():
	}
	_ = conn.Close()
	_ = st.Close()
	for ; pending > 0; pending-- {
		<-done
	}
}

// serveBasic carries one destination connection as raw Output payloads (§9.3). The destination is dialled at
// session start (failure fails the session). When it closes, a LocalPortForwarding session waits for the
// next Output and redials (the client is not told, as with the real agent); any other session ends.
// DisconnectToPort closes the destination.
func (s *session) serveBasic() error {
	lpf := s.cfg.Properties.Type == message.LocalPortForwarding
	first, err := dial(s.ctx, s.cfg, s.addrs)
	if err != nil {
		return err
	}
	result := make(chan error, 1)
	var (
		mu      sync.Mutex
		cur     net.Conn
		readers sync.WaitGroup
	)
	closeCur := func(c net.Conn) {
		mu.Lock()
		if cur == c {
			cur = nil
		}
		mu.Unlock()
		_ = c.Close()
	}
	start := func(c net.Conn) {
		mu.Lock()
		cur = c
		mu.Unlock()
		readers.Add(1)
		go func() {
			defer readers.Done()
			if sendErr, _ := s.sendFrom(c); sendErr != nil {
				report(result, sendErr)
				return
			}
			closeCur(c)
			if !lpf {
				report(result, errTerminated) // §9.3: EOF ends a non-LocalPortForwarding session
			}
		}()
	}
	start(first)

	inbound := make(chan struct{})
	go func() {
		defer close(inbound)
		for {
			pt, p, err := s.ch.Receive(s.ctx)
			if err != nil {
				report(result, err)
				return
			}
			switch pt {
			case message.PayloadOutput:
				mu.Lock()
				c := cur
				mu.Unlock()
				if c == nil {
					c, err = dial(s.ctx, s.cfg, s.addrs)
					if err != nil {
						report(result, err)
						return
					}
					start(c)
				}
				if _, err := c.Write(p); err != nil {
					s.log.Debug("Destination write failed", "err", err)
					closeCur(c)
				}
			case message.PayloadFlag:
				f, err := message.DecodeFlag(p)
				if err != nil {
					s.log.Debug("Ignoring bad flag", "err", err)
					continue
				}
				switch f {
				case message.FlagTerminateSession:
					report(result, errTerminated)
					return
				case message.FlagDisconnectToPort:
					mu.Lock()
					c := cur
					mu.Unlock()
					if c != nil {
						closeCur(c)
					}
				}
			}
		}
	}()

	err = <-result
	s.cancel()
	closeAll := func() {
		mu.Lock()
		c := cur
		cur = nil
		mu.Unlock()
		if c != nil {
			_ = c.Close()
		}
	}
	closeAll() // unblocks an inbound write to a destination that does not read
	<-inbound
	closeAll() // the inbound loop may have redialled meanwhile
	readers.Wait()
	return s.finish(err)
}
