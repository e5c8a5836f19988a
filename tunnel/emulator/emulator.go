// Package emulator is a local AWS Session Manager: the SSM JSON 1.1 API (StartSession, ResumeSession,
// TerminateSession, DescribeInstanceInformation), the message gateway's data-channel websocket with the
// relay semantics of ssm-protocol.md §11.2, and emulated managed instances whose in-process SSM Agent speaks
// the full data-channel protocol (handshake, sequence numbers, acks and retransmission, smux server, one dial
// per stream). Fault knobs drop websockets, refuse resumes, throttle the API, time sessions out and make the
// agent resend in random order; per-session faults stall the agent's acknowledgements, pause publication,
// corrupt the smux stream and terminate the session; so the client's recovery paths can be tested against
// something faithful on loopback.
package emulator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/ssmtunnel/ssmtunnel/tunnel/agent"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
)

// Errors of the Go API.
var (
	// ErrInvalidConfig wraps every configuration error.
	ErrInvalidConfig = errors.New("invalid emulator config")
	// ErrUnknownInstance is returned by setters given an instance the emulator does not have.
	ErrUnknownInstance = errors.New("unknown instance")
	// ErrUnknownSession is returned by fault methods given a session the emulator does not have.
	ErrUnknownSession = errors.New("unknown session")
	// ErrAgentsStuck is returned by Close when session goroutines did not stop in time: a bug in an agent.
	ErrAgentsStuck = errors.New("emulated agents did not stop")
	// ErrNotConnected is returned by DropClient when the session has no client websocket attached.
	ErrNotConnected = errors.New("no client websocket attached")
	// ErrNotMultiplexed is returned by CorruptMux for a session whose agent carries no smux stream: before
	// its handshake, in basic mode, or after it ended.
	ErrNotMultiplexed = agent.ErrNotMultiplexed
)

// Pacing says how fast the emulated agent sends.
type Pacing string

const (
	// PacingAgent is the real agent's pace: 1 KiB payloads at about 1 MB/s (its 1 KiB read + 1 ms sleep, §9.6),
	// so throughput measured against the emulator is what AWS would give.
	PacingAgent Pacing = "agent"
	// PacingNone sends large payloads without a rate limit, to test the client's own limits.
	PacingNone Pacing = "none"
)

// Pacing parameters.
const (
	agentPayloadSize   = 1024
	agentRate          = 1_000_000
	unpacedPayloadSize = 32 << 10
)

// ResumeRefusal selects how ResumeSession refuses, when it does.
type ResumeRefusal int

const (
	// ResumeAllowed answers ResumeSession with a new token (the default).
	ResumeAllowed ResumeRefusal = iota
	// ResumeEmptyToken answers without a token, which means the session is gone (§2, §10.3): the client must
	// start a fresh session. The session is ended.
	ResumeEmptyToken
	// ResumeError answers with a 400 error, and ends the session.
	ResumeError
)

// ResendOrder selects how the emulated agent resends its unacknowledged frames after the client
// reconnects.
type ResendOrder int

const (
	// ResendInOrder resends oldest first, like the real agent (§14). The default.
	ResendInOrder ResendOrder = iota
	// ResendRandom resends every unacknowledged frame at once, in random order, whenever the client's
	// websocket (re)attaches, as another correct implementation may (§14). Such an agent also has the real
	// agent's deep buffer instead of the emulator's 1 MiB window (randomResendWindow), so that the client
	// faces more frames than its out-of-order store holds.
	ResendRandom
)

// ParseResendOrder reads "", "in-order" or "random".
func ParseResendOrder(s string) (ResendOrder, error) {
	switch s {
	case "", "in-order":
		return ResendInOrder, nil
	case "random":
		return ResendRandom, nil
	}
	return 0, fmt.Errorf("%w: resend order %q must be \"in-order\" or \"random\"", ErrInvalidConfig, s)
}

func (o ResendOrder) String() string {
	if o == ResendRandom {
		return "random"
	}
	return "in-order"
}

// randomResendWindow is the emulated agent's window with ResendRandom. The real agent buffers up to
// 100,000 unacknowledged frames and sends without a window (§7.3); 16 MiB, about 14,600 of its 1 KiB frames
// or 510 unpaced 32 KiB ones, is more than the client's out-of-order horizon at either size, so a resend
// after a reconnect exercises the horizon, without letting a test's agent buffer 100 MB.
const randomResendWindow = 16 << 20

// Outputs of channel_closed (§10.2). The idle text is the service's own; the others are the emulator's, as
// the service's wording for them is not documented.
const (
	OutputIdleTimeout   = "Your session timed out due to inactivity and has been terminated."
	OutputMaxDuration   = "Your session has reached the maximum session duration and has been terminated."
	OutputTerminated    = "Your session has been terminated."
	OutputResumeRefused = "Your session could not be resumed and has been terminated."
)

// Faults are the knobs that make the emulator misbehave like the real service does, for tests. They can be
// changed at run time with SetFaults; zero values are off.
type Faults struct {
	// DropEvery drops each client websocket (TCP close, no close frame) this long after it attached.
	DropEvery time.Duration
	// ByeEvery closes each client websocket with close 1000 "Bye" this long after it attached, as the service
	// does hourly (§10.3).
	ByeEvery time.Duration
	// RefuseResume makes ResumeSession refuse (and end the session).
	RefuseResume ResumeRefusal
	// ThrottleFirst answers the next N API calls with ThrottlingException (counted from Start or SetFaults).
	ThrottleFirst int
	// ThrottleRate limits API calls to this many per second (burst of the same size, at least 1); excess
	// calls get ThrottlingException. 0 is unlimited.
	ThrottleRate float64
	// IdleTimeout ends a session with OutputIdleTimeout when no stream data flowed in either direction for
	// this long (the service's idleSessionTimeout, §2). 0 is off.
	IdleTimeout time.Duration
	// MaxSessionDuration ends a session with OutputMaxDuration this long after StartSession. 0 is off.
	MaxSessionDuration time.Duration
	// DeniedAccessKeys get AccessDeniedException on every API call.
	DeniedAccessKeys []string
	// ResendOrder is how the agents of sessions started from now on resend unacknowledged frames after the
	// client reconnects. Default ResendInOrder.
	ResendOrder ResendOrder
}

// Validate reports what is wrong with the knobs.
func (f Faults) Validate() error {
	if f.DropEvery < 0 || f.ByeEvery < 0 || f.IdleTimeout < 0 || f.MaxSessionDuration < 0 {
		return fmt.Errorf("%w: fault durations must not be negative", ErrInvalidConfig)
	}
	if f.ThrottleFirst < 0 || f.ThrottleRate < 0 {
		return fmt.Errorf("%w: throttle settings must not be negative", ErrInvalidConfig)
	}
	if f.RefuseResume < ResumeAllowed || f.RefuseResume > ResumeError {
		return fmt.Errorf("%w: RefuseResume %d is not a ResumeRefusal", ErrInvalidConfig, f.RefuseResume)
	}
	if f.ResendOrder != ResendInOrder && f.ResendOrder != ResendRandom {
		return fmt.Errorf("%w: ResendOrder %d is not a ResendOrder", ErrInvalidConfig, f.ResendOrder)
	}
	return nil
}

// Config configures an Emulator.
type Config struct {
	// Addr is the listen address of the API and the message gateway. Default "127.0.0.1:0".
	Addr string
	// Instances are the emulated managed nodes.
	Instances []Instance
	// Pacing of the emulated agents. Default PacingAgent.
	Pacing Pacing
	// AllowedDestinations are the CIDRs (or AllowAny) the agents may dial. Default loopback only. Metadata
	// link-local addresses are always denied, like the real agent does (§9.1).
	AllowedDestinations []string
	// DialTimeout bounds the agent's dial of a destination. Default 10 s.
	DialTimeout time.Duration
	// Faults are the initial fault knobs.
	Faults Faults
	// Logger receives the emulator's logs. Tokens are never logged. Default: discard.
	Logger *slog.Logger
}

// Validate reports configuration errors with what to change.
func (c Config) Validate() error {
	switch c.Pacing {
	case "", PacingAgent, PacingNone:
	default:
		return fmt.Errorf("%w: pacing %q must be %q or %q", ErrInvalidConfig, c.Pacing, PacingAgent, PacingNone)
	}
	seen := map[string]bool{}
	for _, in := range c.Instances {
		if err := in.Validate(); err != nil {
			return err
		}
		if seen[in.ID] {
			return fmt.Errorf("%w: instance %s is defined twice", ErrInvalidConfig, in.ID)
		}
		seen[in.ID] = true
	}
	if _, err := ParseDestinations(c.AllowedDestinations); err != nil {
		return err
	}
	if c.DialTimeout < 0 {
		return fmt.Errorf("%w: DialTimeout must not be negative", ErrInvalidConfig)
	}
	return c.Faults.Validate()
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.Pacing == "" {
		c.Pacing = PacingAgent
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Emulator is a running local Session Manager.
type Emulator struct {
	cfg  Config
	log  *slog.Logger
	ln   net.Listener
	srv  *http.Server
	ctx  context.Context // cancelled by Close; parent of every session
	stop context.CancelFunc

	mu            sync.Mutex
	insts         map[string]Instance
	sessions      map[string]*session
	order         []string // session IDs in start order
	faults        Faults
	throttleCount int            // calls throttled under ThrottleFirst since the last SetFaults
	limiter       *rate.Limiter  // ThrottleRate, nil when off
	calls         map[string]int // API calls per operation
	reasons       []string       // Reason of each StartSession, in order
	closeOnce     sync.Once
	wg            sync.WaitGroup // sessions and the server

	stats struct {
		started, resumed, terminated, resumeRefused, throttled atomic.Int64
	}
}

// Start validates cfg and starts serving; the emulator is listening when Start returns.
func Start(cfg Config) (*Emulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	e := &Emulator{
		cfg:      cfg,
		log:      cfg.Logger,
		ln:       ln,
		ctx:      ctx,
		stop:     stop,
		insts:    map[string]Instance{},
		sessions: map[string]*session{},
		calls:    map[string]int{},
	}
	for _, in := range cfg.Instances {
		e.insts[in.ID] = in.withDefaults()
	}
	e.setFaultsLocked(cfg.Faults)
	e.srv = &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(e.log.Handler(), slog.LevelDebug)}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("Emulator server stopped", "err", err)
		}
	}()
	e.log.Info("SSM emulator listening", "endpoint", e.Endpoint(), "instances", len(cfg.Instances), "pacing", cfg.Pacing)
	return e, nil
}

// Handler serves the API, the data-channel websocket and the admin endpoints. Start serves it; it is
// exported for embedding the emulator in another server.
func (e *Emulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{$}", e.serveAPI)
	mux.HandleFunc("GET "+dataChannelPath+"{id}", e.serveDataChannel)
	e.adminRoutes(mux)
	return mux
}

// Endpoint is the API base URL, for AWS_ENDPOINT_URL_SSM or ssm.Options.BaseEndpoint.
func (e *Emulator) Endpoint() string { return "http://" + e.Addr() }

// Addr is the listen address.
func (e *Emulator) Addr() string { return e.ln.Addr().String() }

// Close ends every session (channel_closed to both sides), stops the server and waits for its goroutines.
func (e *Emulator) Close() error {
	var err error
	e.closeOnce.Do(func() {
		for _, s := range e.allSessions() {
			s.end(OutputTerminated)
		}
		e.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = e.srv.Shutdown(ctx)
		if err != nil {
			err = e.srv.Close()
		}
		// Sessions stop within agentGrace; an agent that does not return after its context is cancelled
		// must not hang the caller's Close forever.
		waited := make(chan struct{})
		go func() { e.wg.Wait(); close(waited) }()
		t := time.NewTimer(2 * agentGrace)
		defer t.Stop()
		select {
		case <-waited:
		case <-t.C:
			e.log.Error("Emulator closed with session goroutines still running (an agent did not return after cancellation)")
			err = errors.Join(err, ErrAgentsStuck)
		}
	})
	return err
}

// SetPingStatus changes an instance's ping status at run time. StartSession to an instance that is not
// Online fails with TargetNotConnected; sessions already running are not affected.
func (e *Emulator) SetPingStatus(instanceID, status string) error {
	if err := validPingStatus(status); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.insts[instanceID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownInstance, instanceID)
	}
	in.PingStatus = status
	e.insts[instanceID] = in
	return nil
}

// SetAgentVersion changes the agent version an instance reports in new sessions' handshakes.
func (e *Emulator) SetAgentVersion(instanceID, version string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.insts[instanceID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrUnknownInstance, instanceID)
	}
	in.AgentVersion = version
	if err := in.Validate(); err != nil {
		return err
	}
	e.insts[instanceID] = in
	return nil
}

// AddInstance adds (or replaces) an emulated instance at run time.
func (e *Emulator) AddInstance(in Instance) error {
	if err := in.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.insts[in.ID] = in.withDefaults()
	return nil
}

// Faults returns the current fault knobs.
func (e *Emulator) Faults() Faults {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.faults
}

// SetFaults replaces the fault knobs. Timers of connections already attached keep their old period; the
// throttle counter restarts.
func (e *Emulator) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.setFaultsLocked(f)
	return nil
}

func (e *Emulator) setFaultsLocked(f Faults) {
	e.faults = f
	e.throttleCount = 0
	e.limiter = nil
	if f.ThrottleRate > 0 {
		e.limiter = rate.NewLimiter(rate.Limit(f.ThrottleRate), max(1, int(f.ThrottleRate)))
	}
}

// throttle decides whether this API call gets ThrottlingException.
func (e *Emulator) throttle() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.throttleCount < e.faults.ThrottleFirst {
		e.throttleCount++
		e.stats.throttled.Add(1)
		return true
	}
	if e.limiter != nil && !e.limiter.Allow() {
		e.stats.throttled.Add(1)
		return true
	}
	return false
}

func (e *Emulator) deniedKey(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range e.faults.DeniedAccessKeys {
		if k == key {
			return true
		}
	}
	return false
}

func (e *Emulator) countCall(op string) {
	e.mu.Lock()
	e.calls[op]++
	e.mu.Unlock()
}

func (e *Emulator) instance(id string) (Instance, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	in, ok := e.insts[id]
	return in, ok
}

func (e *Emulator) instances() []Instance {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Instance, 0, len(e.insts))
	for _, in := range e.insts {
		out = append(out, in)
	}
	return out
}

func (e *Emulator) destinationsFor(in Instance) (Destinations, error) {
	if len(in.AllowedDestinations) > 0 {
		return ParseDestinations(in.AllowedDestinations)
	}
	return ParseDestinations(e.cfg.AllowedDestinations)
}

func (e *Emulator) session(id string) *session {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sessions[id]
}

func (e *Emulator) allSessions() []*session {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*session, 0, len(e.order))
	for _, id := range e.order {
		out = append(out, e.sessions[id])
	}
	return out
}

// Stats are counters for tests.
type Stats struct {
	// SessionsStarted, SessionsResumed and SessionsTerminated count StartSession calls that succeeded,
	// ResumeSession calls that returned a token, and sessions that ended for any reason.
	SessionsStarted, SessionsResumed, SessionsTerminated int
	// ResumesRefused counts ResumeSession calls refused by the RefuseResume knob.
	ResumesRefused int
	// Throttled counts API calls answered with ThrottlingException.
	Throttled int
	// APICalls counts API calls per operation name, including failed and throttled ones.
	APICalls map[string]int
	// Reasons is the Reason of each successful StartSession, in order.
	Reasons []string
}

// Stats returns a snapshot of the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := Stats{
		SessionsStarted:    int(e.stats.started.Load()),
		SessionsResumed:    int(e.stats.resumed.Load()),
		SessionsTerminated: int(e.stats.terminated.Load()),
		ResumesRefused:     int(e.stats.resumeRefused.Load()),
		Throttled:          int(e.stats.throttled.Load()),
		APICalls:           make(map[string]int, len(e.calls)),
		Reasons:            append([]string(nil), e.reasons...),
	}
	for k, v := range e.calls {
		st.APICalls[k] = v
	}
	return st
}

// SessionInfo describes one session, for tests.
type SessionInfo struct {
	ID, Target, Document, Reason string
	// Properties are the resolved document properties sent in the handshake.
	Properties map[string]string
	// AgentVersion is the version the session's agent reports.
	AgentVersion string
	// ClientID and ClientVersion are from the last OpenDataChannel.
	ClientID, ClientVersion string
	// Connects counts client websockets accepted for the session (1 + reconnects).
	Connects int
	// Attached reports whether a client websocket is attached now.
	Attached bool
	// Ended reports whether the session is over, and Output is its channel_closed text.
	Ended  bool
	Output string
	// Started is when StartSession created it, and MaxDuration the maximum duration fixed then (0: none).
	Started     time.Time
	MaxDuration time.Duration
	// StopAcking and Paused report the StopAcking and PausePublication faults in force.
	StopAcking, Paused bool
	// Agent is the agent's data channel counters (zero before the agent started): what it sent, resent
	// and received.
	Agent datachannel.Stats
}

// Sessions lists every session the emulator has seen, in start order.
func (e *Emulator) Sessions() []SessionInfo {
	ss := e.allSessions()
	out := make([]SessionInfo, len(ss))
	for i, s := range ss {
		out[i] = s.info()
	}
	return out
}

// Session describes one session.
func (e *Emulator) Session(id string) (SessionInfo, bool) {
	s := e.session(id)
	if s == nil {
		return SessionInfo{}, false
	}
	return s.info(), true
}

// DropClient drops the client websocket of a session now, without a close frame, as a network failure
// would. Frames in flight are lost; the client must resume.
func (e *Emulator) DropClient(sessionID string) error {
	s := e.session(sessionID)
	if s == nil {
		return fmt.Errorf("%w: %s", ErrUnknownSession, sessionID)
	}
	if !s.dropClient(false) {
		return fmt.Errorf("%w: session %s", ErrNotConnected, sessionID)
	}
	return nil
}

// ByeClient closes the client websocket of a session with close 1000 "Bye", as the service does hourly.
func (e *Emulator) ByeClient(sessionID string) error {
	s := e.session(sessionID)
	if s == nil {
		return fmt.Errorf("%w: %s", ErrUnknownSession, sessionID)
	}
	if !s.dropClient(true) {
		return fmt.Errorf("%w: session %s", ErrNotConnected, sessionID)
	}
	return nil
}

// DropAllClients drops every attached client websocket and returns how many it dropped.
func (e *Emulator) DropAllClients() int {
	n := 0
	for _, s := range e.allSessions() {
		if s.dropClient(false) {
			n++
		}
	}
	return n
}

// TerminateSession ends a session as the TerminateSession API, or an administrator, does: channel_closed
// with OutputTerminated to the client and the agent.
func (e *Emulator) TerminateSession(sessionID string) error {
	s := e.session(sessionID)
	if s == nil {
		return fmt.Errorf("%w: %s", ErrUnknownSession, sessionID)
	}
	s.end(OutputTerminated)
	return nil
}

// StopAcking makes the session's agent stop acknowledging and processing the client's data frames (stop
// true), as a wedged agent would: the relay drops the client's input_stream_data, so the client sees its
// frames stay in flight with no ack while its websocket stays up, a stall. The agent's own output and the
// client's acks of it still flow. StopAcking(id, false) lets the client's retransmissions through again.
// It lasts across the client's reconnects, until called with false or the session ends.
func (e *Emulator) StopAcking(sessionID string, stop bool) error {
	s := e.session(sessionID)
	if s == nil {
		return fmt.Errorf("%w: %s", ErrUnknownSession, sessionID)
	}
	s.stopAcking.Store(stop)
	s.log.Info("Agent acknowledgements", "stopped", stop)
	return nil
}

// PausePublication makes the gateway send the client pause_publication, as the service does while the
// agent's data channel is inactive (§10.1), and start_publication after d. Meanwhile nothing of the agent
// reaches the client (its frames are held, up to a bound, and delivered in order after the pause, since
// inbound data would end the client's pause), the agent is paused too, and a client that reconnects is
// paused again at once. d < 0 pauses until PausePublication is called again with d ≥ 0; d == 0 ends a
// pause now. A new call replaces the previous deadline.
func (e *Emulator) PausePublication(sessionID string, d time.Duration) error {
	s := e.session(sessionID)
	if s == nil {
		return fmt.Errorf("%w: %s", ErrUnknownSession, sessionID)
	}
	s.pausePublication(d)
	return nil
}

// CorruptMux makes the session's agent send the client an smux frame with version byte 9 (smux v1 is
// version 1, §9.4) between two of its frames: an smux protocol error for the client, whose smux session
// stops reading. It returns ErrNotMultiplexed when the session's agent carries no smux stream.
func (e *Emulator) CorruptMux(sessionID string) error {
	s := e.session(sessionID)
	if s == nil {
		return fmt.Errorf("%w: %s", ErrUnknownSession, sessionID)
	}
	if err := s.injector.Inject(badVersionFrame); err != nil {
		return fmt.Errorf("corrupt the smux stream of session %s: %w", sessionID, err)
	}
	s.log.Info("Sent the client an smux frame with a bad version byte")
	return nil
}

// badVersionFrame is an smux header with version 9: command NOP, length 0, stream 0 (§9.4).
var badVersionFrame = []byte{9, 3, 0, 0, 0, 0, 0, 0}

// InstanceIDs lists the emulated instances, sorted.
func (e *Emulator) InstanceIDs() []string {
	ins := e.instances()
	ids := make([]string, len(ins))
	for i, in := range ins {
		ids[i] = in.ID
	}
	sort.Strings(ids)
	return ids
}

// Instances lists the emulated instances with their current settings, sorted by ID.
func (e *Emulator) Instances() []Instance {
	ins := e.instances()
	sort.Slice(ins, func(i, j int) bool { return ins[i].ID < ins[j].ID })
	return ins
}
