package emulator

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ssmtunnel/ssmtunnel/tunnel/agent"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

const (
	// maxPending bounds the agent frames held for replay until the first client attaches (§10.1). The agent
	// is paused meanwhile, so only its HandshakeRequest and perhaps a retransmit of it arrive.
	maxPending = 128
	// clientQueue is the per-websocket queue of frames to write; larger than maxPending so a replay never
	// blocks.
	clientQueue = 256
	// agentGrace is how long an ended session's agent may flush before its transport is closed; the real agent
	// flushes for up to 2 s (§10.2).
	agentGrace = 3 * time.Second
	// writeTimeout bounds one websocket write, so a client that stopped reading cannot wedge the relay.
	writeTimeout = 30 * time.Second
	// maxHeld bounds the agent frames held during a PausePublication fault, for delivery after it. The agent
	// is paused meanwhile, so only frames it sent before it saw the pause (at most its window) arrive;
	// beyond the bound they are lost like frames of a dropped websocket and the agent resends them.
	maxHeld = 32 << 10
)

// session is one Session Manager session: its token, its agent and the relay between the agent's transport
// and whichever client websocket is attached (§11.2).
type session struct {
	e                            *Emulator
	id, target, document, reason string
	agentVersion                 string
	props                        message.PortParameters
	dests                        Destinations
	started                      time.Time
	idle, maxDur                 time.Duration
	log                          *slog.Logger

	relayEnd, agentEnd datachannel.Transport // the in-memory link to the agent
	ctx                context.Context       // the agent's; cancelled after the grace period of end
	cancel             context.CancelFunc

	activity    atomic.Int64  // unix nanoseconds of the last stream-data frame, either direction
	done        chan struct{} // closed by end
	agentDone   chan struct{} // closed when the agent returned
	resendOrder ResendOrder   // Faults.ResendOrder when the session started
	injector    *agent.Injector
	agentCh     atomic.Pointer[datachannel.Channel]
	stopAcking  atomic.Bool // StopAcking: the client's data frames do not reach the agent

	// toClientMu orders what reaches the client websocket across pumpAgent and the PausePublication fault:
	// held under it, a frame is either sent before the pause frame or held until after start_publication.
	toClientMu sync.Mutex

	mu            sync.Mutex
	token         string
	clientID      string
	clientVersion string
	conn          *clientConn
	everAttached  bool
	pending       [][]byte
	connects      int
	ended         bool
	output        string
	faultPaused   bool        // PausePublication in force
	pauseTimer    *time.Timer // ends the fault pause, nil for one without an end
	held          [][]byte    // agent frames held during the fault pause
}

func (e *Emulator) newSession(id string, inst Instance, document string, props message.PortParameters, dests Destinations, reason string) (*session, error) {
	if e.ctx.Err() != nil {
		return nil, fmt.Errorf("emulator is shutting down")
	}
	f := e.Faults()
	relayEnd, agentEnd := datachannel.Pipe(0)
	ctx, cancel := context.WithCancel(e.ctx)
	s := &session{
		e: e, id: id, target: inst.ID, document: document, reason: reason,
		agentVersion: inst.AgentVersion, props: props, dests: dests,
		started: time.Now(), idle: f.IdleTimeout, maxDur: f.MaxSessionDuration,
		log:      e.log.With("session", id, "target", inst.ID),
		relayEnd: relayEnd, agentEnd: agentEnd, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), agentDone: make(chan struct{}),
		resendOrder: f.ResendOrder, injector: &agent.Injector{},
		token: newToken(),
	}
	s.activity.Store(s.started.UnixNano())
	// §10.1: no client is attached yet, so the agent is paused; start_publication follows the client's
	// OpenDataChannel, and agent frames sent before it are replayed.
	if err := relayEnd.WriteFrame(controlFrame(message.PausePublication)); err != nil {
		cancel()
		return nil, err
	}
	e.mu.Lock()
	e.sessions[id] = s
	e.order = append(e.order, id)
	e.reasons = append(e.reasons, reason)
	e.mu.Unlock()
	e.stats.started.Add(1)
	s.log.Info("Session started", "document", document, "agentVersion", inst.AgentVersion, "reason", reason)

	e.wg.Add(3)
	go func() {
		defer e.wg.Done()
		defer close(s.agentDone)
		err := s.runAgent(ctx, agentEnd)
		s.log.Debug("Agent finished", "err", err)
		out := ""
		if err != nil && ctx.Err() == nil {
			out = err.Error()
		}
		// §10.2: the agent's plugin finished or failed: the service closes the client's channel.
		s.end(out)
	}()
	go func() { defer e.wg.Done(); s.pumpAgent() }()
	go func() { defer e.wg.Done(); s.watchdog() }()
	return s, nil
}

func (s *session) currentToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// resume issues a new token, unless the session is over.
func (s *session) resume() (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return "", false
	}
	s.token = newToken()
	return s.token, true
}

func (s *session) touch() { s.activity.Store(time.Now().UnixNano()) }

// pumpAgent relays the agent's frames to the attached client, verbatim and in order (§11.2). It swallows
// agent_session_state, holds frames sent before the first client attached for replay, and loses frames
// sent while no client is attached after that, as a real drop does; the data channel retransmits them.
func (s *session) pumpAgent() {
	for {
		f, err := s.relayEnd.ReadFrame()
		if err != nil {
			return
		}
		m, err := message.Decode(f)
		if err != nil {
			s.log.Warn("Dropping malformed frame from the agent", "err", err)
			continue
		}
		if m.Type == message.AgentSessionState {
			continue
		}
		if m.Type.IsStreamData() {
			s.touch()
		}
		s.toClientMu.Lock()
		s.mu.Lock()
		if s.faultPaused {
			if len(s.held) < maxHeld {
				s.held = append(s.held, f)
			}
			s.mu.Unlock()
			s.toClientMu.Unlock()
			continue
		}
		c := s.conn
		if c == nil {
			if !s.everAttached && !s.ended {
				if len(s.pending) == maxPending {
					s.pending = s.pending[1:]
				}
				s.pending = append(s.pending, f)
			}
			s.mu.Unlock()
			s.toClientMu.Unlock()
			continue
		}
		s.mu.Unlock()
		c.send(f)
		s.toClientMu.Unlock()
	}
}

// pausePublication is the PausePublication fault: see Emulator.PausePublication.
func (s *session) pausePublication(d time.Duration) {
	if d == 0 {
		s.endPause()
		return
	}
	s.toClientMu.Lock()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		s.toClientMu.Unlock()
		return
	}
	if s.pauseTimer != nil {
		s.pauseTimer.Stop()
		s.pauseTimer = nil
	}
	if d > 0 {
		s.pauseTimer = time.AfterFunc(d, s.endPause)
	}
	already := s.faultPaused
	s.faultPaused = true
	c := s.conn
	s.mu.Unlock()
	if !already && c != nil {
		c.send(controlFrame(message.PausePublication))
	}
	s.toClientMu.Unlock()
	if !already {
		s.log.Info("Publication paused", "for", d)
		s.toAgent(controlFrame(message.PausePublication))
	}
}

// endPause ends the PausePublication fault: start_publication to the client, then the agent frames held
// meanwhile in their order, and start_publication to the agent if a client is there to receive.
func (s *session) endPause() {
	s.toClientMu.Lock()
	s.mu.Lock()
	if !s.faultPaused {
		s.mu.Unlock()
		s.toClientMu.Unlock()
		return
	}
	s.faultPaused = false
	if s.pauseTimer != nil {
		s.pauseTimer.Stop()
		s.pauseTimer = nil
	}
	held := s.held
	s.held = nil
	c := s.conn
	ended := s.ended
	s.mu.Unlock()
	if c != nil {
		c.send(controlFrame(message.StartPublication))
		for _, f := range held {
			c.send(f)
		}
	}
	s.toClientMu.Unlock()
	s.log.Info("Publication resumed", "held", len(held))
	if c != nil && !ended {
		s.toAgent(controlFrame(message.StartPublication))
	}
}

// attach makes c the session's client websocket, replacing any previous one (§11.1 step 9: a resumed client
// splices into the same session state).
func (s *session) attach(c *clientConn, in message.OpenDataChannelInput) bool {
	s.mu.Lock()
	if s.ended {
		// The session ended before this client came (e.g. the agent refused the destination at session
		// start, §9.1): tell it why with channel_closed rather than a bare close.
		out := s.output
		s.mu.Unlock()
		c.finish(channelClosedFrame(s.id, in.ClientID, out))
		return false
	}
	old := s.conn
	s.conn = c
	s.connects++
	s.clientID, s.clientVersion = in.ClientID, in.ClientVersion
	paused := s.faultPaused
	if paused {
		// The agent is still "inactive": the new websocket is paused at once, and the agent frames that
		// waited for a first client wait for the pause's end instead (they would end the client's pause).
		c.out <- outFrame{b: controlFrame(message.PausePublication)} // a fresh queue: never blocks
		s.held = append(s.pending, s.held...)
		s.pending = nil
	}
	if !s.everAttached {
		s.everAttached = true
		for _, f := range s.pending {
			c.out <- outFrame{b: f} // clientQueue > maxPending: never blocks
		}
		s.pending = nil
	}
	connects := s.connects
	s.mu.Unlock()
	if old != nil {
		old.kill()
	}
	s.log.Info("Client attached", "clientId", in.ClientID, "clientVersion", in.ClientVersion, "connects", connects, "paused", paused)
	if !paused {
		s.toAgent(controlFrame(message.StartPublication))
	}
	f := s.e.Faults()
	if f.DropEvery > 0 {
		c.after(f.DropEvery, c.kill)
	}
	if f.ByeEvery > 0 {
		c.after(f.ByeEvery, c.bye)
	}
	return true
}

// detach forgets c if it is still the attached client, and pauses the agent (§10.1).
func (s *session) detach(c *clientConn) {
	c.kill()
	s.mu.Lock()
	cur := s.conn == c
	if cur {
		s.conn = nil
	}
	ended := s.ended
	s.mu.Unlock()
	if cur && !ended {
		s.log.Info("Client detached")
		s.toAgent(controlFrame(message.PausePublication))
	}
}

// readClient relays the client's frames to the agent until the websocket fails.
func (s *session) readClient(c *clientConn) {
	for {
		mt, data, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if mt != websocket.BinaryMessage {
			s.log.Debug("Ignoring a non-binary frame from the client", "type", mt)
			continue
		}
		m, err := message.Decode(data)
		if err != nil {
			s.log.Debug("Dropping a malformed frame from the client", "err", err)
			continue
		}
		if m.Type.IsStreamData() {
			s.touch()
		}
		if m.Type == message.InputStreamData && s.stopAcking.Load() {
			continue // StopAcking: the agent neither processes nor acknowledges it
		}
		if err := s.relayEnd.WriteFrame(data); err != nil {
			// The relay closes only after the session ended, and end queued channel_closed on c: returning
			// now would let detach kill c before its writer sent it. Drain until the writer closes c.
			drain(c.ws)
			return
		}
	}
}

// drain reads and discards a websocket's messages until it fails.
func drain(ws *websocket.Conn) {
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
	}
}

// toAgent sends a relay control frame to the agent without blocking the caller for long.
func (s *session) toAgent(f []byte) {
	select {
	case <-s.agentDone:
		return
	default:
	}
	_ = s.relayEnd.WriteFrame(f)
}

// dropClient drops (or, with bye, closes with 1000 "Bye") the attached client websocket.
func (s *session) dropClient(bye bool) bool {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return false
	}
	if bye {
		c.bye()
	} else {
		c.kill()
	}
	return true
}

// end finishes the session once: channel_closed with output to the client and to the agent (§10.2), then
// the agent gets agentGrace to flush before its transport closes.
func (s *session) end(output string) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	s.output = output
	c := s.conn
	s.conn = nil
	s.pending = nil
	s.held = nil
	if s.pauseTimer != nil {
		s.pauseTimer.Stop()
		s.pauseTimer = nil
	}
	clientID := s.clientID
	close(s.done)
	s.mu.Unlock()
	s.e.stats.terminated.Add(1)
	s.log.Info("Session ended", "output", output)
	if c != nil {
		c.finish(channelClosedFrame(s.id, clientID, output))
	}
	s.e.wg.Add(1)
	go func() {
		defer s.e.wg.Done()
		t := time.NewTimer(agentGrace)
		defer t.Stop()
		select {
		case <-s.agentDone:
		default:
			go s.toAgent(channelClosedFrame(s.id, s.target, output))
			select {
			case <-s.agentDone:
			case <-t.C:
			case <-s.e.ctx.Done():
			}
		}
		s.cancel()
		_ = s.relayEnd.Close()
	}()
}

// watchdog ends the session on idle timeout or at its maximum duration (§2, §10.2): the service enforces
// these, not the agent.
func (s *session) watchdog() {
	if s.idle == 0 && s.maxDur == 0 {
		return
	}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		now := time.Now()
		next := time.Duration(1<<62 - 1)
		if s.maxDur > 0 {
			rem := s.started.Add(s.maxDur).Sub(now)
			if rem <= 0 {
				s.end(OutputMaxDuration)
				return
			}
			next = rem
		}
		if s.idle > 0 {
			rem := time.Unix(0, s.activity.Load()).Add(s.idle).Sub(now)
			if rem <= 0 {
				s.end(OutputIdleTimeout)
				return
			}
			next = min(next, rem)
		}
		t.Reset(next)
		select {
		case <-t.C:
		case <-s.done:
			return
		}
	}
}

func (s *session) info() SessionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	props := map[string]string{"portNumber": s.props.PortNumber}
	if s.props.LocalPortNumber != "" {
		props["localPortNumber"] = s.props.LocalPortNumber
	}
	if s.props.Host != "" {
		props["host"] = s.props.Host
	}
	if s.props.Type != "" {
		props["type"] = s.props.Type
	}
	info := SessionInfo{
		ID: s.id, Target: s.target, Document: s.document, Reason: s.reason,
		Properties: props, AgentVersion: s.agentVersion,
		ClientID: s.clientID, ClientVersion: s.clientVersion,
		Connects: s.connects, Attached: s.conn != nil,
		Ended: s.ended, Output: s.output, Started: s.started, MaxDuration: s.maxDur,
		StopAcking: s.stopAcking.Load(), Paused: s.faultPaused,
	}
	if ch := s.agentCh.Load(); ch != nil {
		info.Agent = ch.Stats()
	}
	return info
}

// controlFrame is a relay control message (start_publication, pause_publication) with an empty payload and
// seq 0; the client exempts these from validation and the agent parses an empty payload (§5, §10.1).
func controlFrame(t message.MessageType) []byte {
	m := message.Message{Type: t, SchemaVersion: 1, CreatedDate: uint64(time.Now().UnixMilli()), Flags: message.FlagSYN | message.FlagFIN, MessageID: message.NewID()}
	b, err := m.MarshalBinary()
	if err != nil {
		panic(err) // a constant, valid message type
	}
	return b
}

// channelClosedFrame is the service's channel_closed (§10.2): binary, JSON payload, PayloadType 0,
// CreatedDate set and a correct digest, or the plugin drops it.
func channelClosedFrame(sessionID, destination, output string) []byte {
	id := message.NewID()
	now := time.Now().UTC()
	p, _ := json.Marshal(message.ChannelClosedPayload{
		MessageID: id.String(), CreatedDate: now.Format("2006-01-02T15:04:05.000Z"), DestinationID: destination,
		SessionID: sessionID, MessageType: string(message.ChannelClosed), SchemaVersion: 1, Output: output,
	})
	m := message.Message{Type: message.ChannelClosed, SchemaVersion: 1, CreatedDate: uint64(now.UnixMilli()), Flags: message.FlagSYN | message.FlagFIN, MessageID: id, Payload: p}
	b, err := m.MarshalBinary()
	if err != nil {
		panic(err)
	}
	return b
}

// clientConn is one client websocket: a writer goroutine fed by out (gorilla allows one writer), the
// reader being the gateway handler.
type clientConn struct {
	ws     *websocket.Conn
	out    chan outFrame
	die    chan struct{}
	once   sync.Once
	mu     sync.Mutex
	timers []*time.Timer
}

// outFrame is a frame to write; last makes the writer close the websocket with 1000 after it.
type outFrame struct {
	b    []byte
	last bool
}

func newClientConn(ws *websocket.Conn) *clientConn {
	c := &clientConn{ws: ws, out: make(chan outFrame, clientQueue), die: make(chan struct{})}
	go c.writer()
	return c
}

func (c *clientConn) writer() {
	for {
		select {
		case f := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
			if err := c.ws.WriteMessage(websocket.BinaryMessage, f.b); err != nil {
				c.kill()
				return
			}
			if f.last {
				_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				c.after(time.Second, c.kill)
				return
			}
		case <-c.die:
			return
		}
	}
}

// send queues a frame; it is lost if the websocket dies first.
func (c *clientConn) send(f []byte) bool {
	select {
	case c.out <- outFrame{b: f}:
		return true
	case <-c.die:
		return false
	}
}

// finish queues the last frame, after which the writer closes the websocket with 1000.
func (c *clientConn) finish(last []byte) {
	go func() {
		select {
		case c.out <- outFrame{b: last, last: true}:
		case <-c.die:
		}
	}()
}

// bye closes like the service's hourly recycle (§10.3): close 1000 "Bye", then the TCP connection shortly
// after, whether or not the client answers the close.
func (c *clientConn) bye() {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "Bye"), time.Now().Add(time.Second))
	c.after(time.Second, c.kill)
}

// after runs f after d unless the connection dies first.
func (c *clientConn) after(d time.Duration, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.die:
		return
	default:
	}
	c.timers = append(c.timers, time.AfterFunc(d, f))
}

// kill drops the connection without a close frame.
func (c *clientConn) kill() {
	c.once.Do(func() {
		close(c.die)
		_ = c.ws.Close()
		c.mu.Lock()
		for _, t := range c.timers {
			t.Stop()
		}
		c.mu.Unlock()
	})
}
