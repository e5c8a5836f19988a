package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/google/uuid"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// State is where a session is in its life. Only a Ready session should be given new connections.
type State int32

// States of a Session.
const (
	// StateConnecting: StartSession done, data channel opening or handshaking.
	StateConnecting State = iota
	// StateReady: handshaken and a transport attached.
	StateReady
	// StateResuming: the transport died; ResumeSession and a redial are in progress (§10.3).
	StateResuming
	// StateClosed: the session ended (terminated, channel_closed, not resumable).
	StateClosed
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateReady:
		return "ready"
	case StateResuming:
		return "resuming"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Dialer opens a data-channel transport with the given token (§4.1). The default uses
// datachannel.DialClient with SigV4 signing from the client's credentials.
type Dialer func(ctx context.Context, streamURL, token, clientID string) (datachannel.Transport, error)

// ClientConfig configures a Client. API is required; the rest has defaults.
type ClientConfig struct {
	// API is the SSM API (NewAPI(cfg) in production).
	API API
	// Credentials sign the websocket upgrade and are invalidated before every ResumeSession so the resume uses
	// fresh ones (aws/session-manager-plugin#117, aws/session-manager-plugin#136). Nil: unsigned upgrades.
	Credentials aws.CredentialsProvider
	// Region is the SigV4 region of the websocket upgrade.
	Region string
	// Channel configures each session's data channel (payload size, rate, windows). Role is forced to client.
	Channel datachannel.Config
	// Dial overrides the websocket dial. Default: datachannel.DialClient.
	Dial Dialer
	// ClientID is sent in every OpenDataChannel and reused on resume (§4.1). Default: a random UUID per Client.
	ClientID string
	// HandshakeTimeout bounds the dial + handshake of a new session. Default 30s.
	HandshakeTimeout time.Duration
	// ResumeInitialBackoff and ResumeMaxBackoff shape the capped, jittered exponential backoff between resume
	// attempts. Defaults 100ms and 5s (§10.3 uses the same start, but gives up after 6 attempts; we do not).
	ResumeInitialBackoff, ResumeMaxBackoff time.Duration
	// APITimeout bounds each ResumeSession / TerminateSession call (SDK retries included). Default 30s.
	APITimeout time.Duration
	// Logger for session events. Tokens are never logged. Default: discard.
	Logger *slog.Logger
	// AllowInsecureStream accepts ws:// stream URLs to hosts other than loopback: only for an emulator
	// reached over a network. The service always returns wss://.
	AllowInsecureStream bool
}

// Validate reports what is missing.
func (c ClientConfig) Validate() error {
	if c.API == nil {
		return errors.New("session: ClientConfig.API is required")
	}
	if c.HandshakeTimeout < 0 || c.ResumeInitialBackoff < 0 || c.ResumeMaxBackoff < 0 || c.APITimeout < 0 {
		return errors.New("session: timeouts and backoffs must not be negative")
	}
	ch := c.Channel
	ch.Role = datachannel.RoleClient
	return ch.Validate()
}

// Client starts sessions. It is safe for concurrent use; every session it starts shares its ClientID.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
}

// NewClient validates cfg and fills defaults.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Channel.Role = datachannel.RoleClient
	if cfg.ClientID == "" {
		cfg.ClientID = uuid.NewString()
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 30 * time.Second
	}
	if cfg.ResumeInitialBackoff == 0 {
		cfg.ResumeInitialBackoff = 100 * time.Millisecond
	}
	if cfg.ResumeMaxBackoff == 0 {
		cfg.ResumeMaxBackoff = 5 * time.Second
	}
	if cfg.APITimeout == 0 {
		cfg.APITimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: cfg.Logger}
	if c.cfg.Dial == nil {
		c.cfg.Dial = func(ctx context.Context, url, token, clientID string) (datachannel.Transport, error) {
			return datachannel.DialClient(ctx, url, token, clientID, datachannel.DialOptions{
				Credentials: cfg.Credentials, Region: cfg.Region, Logger: cfg.Logger,
			})
		}
	}
	return c, nil
}

// Session is one Session Manager session with its data channel, kept alive across websocket drops by
// ResumeSession (§10.3) until it ends. Its Channel is what port forwarding runs on.
type Session struct {
	c         *Client
	spec      Spec
	id        string
	streamURL string
	ch        *datachannel.Channel
	hs        datachannel.HandshakeResult
	log       *slog.Logger

	state      atomic.Int32
	handshaken atomic.Bool
	resumes    atomic.Uint64
	onState    func(State)
	closing    atomic.Bool // set by Close/Terminate before anything is torn down

	die      chan struct{} // closed by Close/Terminate
	dieOnce  sync.Once
	done     chan struct{} // closed when the session has ended for good
	doneOnce sync.Once
	err      error // set before done is closed
}

// Start calls StartSession for spec, opens the data channel and runs the handshake (§2, §4.1, §8). The
// returned session is Ready and resumes itself on transport failures; onState (may be nil) is called on
// every state change from the session's goroutine. On failure after StartSession, the server-side session
// is terminated rather than left to idle out (the plugin leaks it, §3).
func (c *Client) Start(ctx context.Context, spec Spec, onState func(State)) (*Session, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	out, err := c.cfg.API.StartSession(ctx, spec.StartInput())
	if err != nil {
		return nil, classifyStart(spec.Target, err)
	}
	id, url, token := aws.ToString(out.SessionId), aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue)
	if id == "" || url == "" || token == "" {
		return nil, fmt.Errorf("StartSession on %s returned an incomplete response (SessionId %q, StreamUrl set %t, token set %t)",
			spec.Target, id, url != "", token != "")
	}
	s := &Session{
		c: c, spec: spec, id: id, streamURL: url, onState: onState,
		log: c.log.With("session", id, "target", spec.Target),
		die: make(chan struct{}), done: make(chan struct{}),
	}
	if err := c.checkStreamURL(url); err != nil {
		s.terminateAPI(context.Background())
		return nil, err
	}
	if err := s.open(ctx, token); err != nil {
		// Not ctx: the caller may have given up (its context ended), and the session must still be ended.
		s.terminateAPI(context.Background())
		return nil, err
	}
	return s, nil
}

func (s *Session) open(ctx context.Context, token string) error {
	ctx, cancel := context.WithTimeout(ctx, s.c.cfg.HandshakeTimeout)
	defer cancel()
	ch, err := datachannel.New(s.c.cfg.Channel)
	if err != nil {
		return err
	}
	t, err := s.c.cfg.Dial(ctx, s.streamURL, token, s.c.cfg.ClientID)
	if err != nil {
		ch.Close()
		return fmt.Errorf("failed to open the data channel of session %s: %w", s.id, err)
	}
	s.ch = ch
	ch.Attach(t)
	go s.supervise()
	hs, err := datachannel.ClientHandshake(ctx, ch, "")
	if err != nil {
		// channel_closed during the handshake (idle timeout, agent refused the document) carries the
		// service's message: surface it rather than the handshake's generic error.
		var cc *datachannel.ChannelClosedError
		if cerr := ch.Err(); errors.As(cerr, &cc) {
			err = cerr
		}
		s.finish(err)
		return fmt.Errorf("handshake of session %s failed: %w", s.id, err)
	}
	s.hs = hs
	s.handshaken.Store(true)
	s.setState(StateReady)
	s.log.Debug("Session ready", "agentVersion", hs.AgentVersion.String(), "properties", hs.Properties)
	return nil
}

// ID is the SessionId of StartSession.
func (s *Session) ID() string { return s.id }

// Spec is what the session was started for.
func (s *Session) Spec() Spec { return s.spec }

// Channel is the session's data channel; it stays the same object across resumes.
func (s *Session) Channel() *datachannel.Channel { return s.ch }

// Handshake is what the agent said in the handshake (agent version, document properties).
func (s *Session) Handshake() datachannel.HandshakeResult { return s.hs }

// State is the current state.
func (s *Session) State() State { return State(s.state.Load()) }

// Resumes counts successful resumes.
func (s *Session) Resumes() uint64 { return s.resumes.Load() }

// Done is closed when the session has ended for good; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is nil while the session lives; then ErrClosed (closed by us), ErrNotResumable (wrapped), or a
// *datachannel.ChannelClosedError with the service's message.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *Session) setState(st State) {
	if State(s.state.Swap(int32(st))) == st {
		return
	}
	if s.onState != nil {
		s.onState(st)
	}
}

// finish ends the session once with err and closes the channel.
func (s *Session) finish(err error) {
	s.doneOnce.Do(func() {
		if s.closing.Load() {
			err = ErrClosed // our own Close/Terminate, whatever the channel reported meanwhile
		}
		s.err = err
		s.setState(StateClosed)
		if s.ch != nil {
			s.ch.Close()
		}
		close(s.done)
	})
}

// supervise watches the channel: on a transport failure it resumes; on the channel's end it ends the session.
func (s *Session) supervise() {
	attempt := 0
	var attachedAt time.Time
	for {
		select {
		case <-s.die:
			s.finish(ErrClosed)
			return
		case <-s.ch.Done():
			s.finish(s.ch.Err())
			return
		case terr := <-s.ch.TransportFailed():
			// A transport that stayed up for a while resets the backoff; one that dies at once keeps it growing.
			if time.Since(attachedAt) > 10*time.Second {
				attempt = 0
			}
			s.log.Info("Data channel lost, resuming the session", "err", terr)
			s.setState(StateResuming)
			if err := s.resume(&attempt); err != nil {
				select {
				case <-s.die:
					s.finish(ErrClosed)
				default:
					s.log.Warn("Session cannot be resumed", "err", err)
					s.finish(err)
				}
				return
			}
			attachedAt = time.Now()
			s.resumes.Add(1)
			if s.handshaken.Load() {
				s.setState(StateReady)
			} else {
				s.setState(StateConnecting)
			}
		}
	}
}

// backoff returns the capped, jittered exponential delay before attempt n (0-based): uniform in
// [d/2, d) where d = min(max, initial·2ⁿ).
func (s *Session) backoff(n int) time.Duration {
	d := s.c.cfg.ResumeInitialBackoff << min(n, 30)
	if d <= 0 || d > s.c.cfg.ResumeMaxBackoff {
		d = s.c.cfg.ResumeMaxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// resume implements §10.3 without its flaws: ResumeSession with freshly loaded credentials, dial the
// StreamUrl it returns (the original when empty), same ClientId, new token, Attach to the same channel so
// sequence numbers continue and unacknowledged frames are retransmitted. It retries for as long as the
// service says the session is resumable; a refusal (no token, 403, session gone) returns ErrNotResumable.
func (s *Session) resume(attempt *int) error {
	for {
		if *attempt > 0 {
			t := time.NewTimer(s.backoff(*attempt - 1))
			select {
			case <-t.C:
			case <-s.die:
				t.Stop()
				return ErrClosed
			case <-s.ch.Done():
				t.Stop()
				return s.ch.Err()
			}
		}
		*attempt++
		invalidateCredentials(s.c.cfg.Credentials)
		ctx, cancel := context.WithTimeout(context.Background(), s.c.cfg.APITimeout)
		go func() {
			select {
			case <-s.die:
				cancel()
			case <-ctx.Done():
			}
		}()
		out, err := s.c.cfg.API.ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: aws.String(s.id)})
		if err != nil {
			cancel()
			if !resumable(err) {
				return fmt.Errorf("%w: ResumeSession refused for %s: %v", ErrNotResumable, s.id, err)
			}
			s.log.Info("ResumeSession failed, retrying", "attempt", *attempt, "err", err)
			continue
		}
		token := aws.ToString(out.TokenValue)
		if token == "" {
			cancel()
			return fmt.Errorf("%w: ResumeSession returned no token for %s (the session timed out or was terminated)", ErrNotResumable, s.id)
		}
		url := aws.ToString(out.StreamUrl)
		if url == "" {
			url = s.streamURL
		} else if err := s.c.checkStreamURL(url); err != nil {
			cancel()
			return err
		} else {
			s.streamURL = url
		}
		t, err := s.c.cfg.Dial(ctx, url, token, s.c.cfg.ClientID)
		cancel()
		if err != nil {
			s.log.Info("Data channel redial failed, retrying", "attempt", *attempt, "err", err)
			continue
		}
		s.ch.Attach(t)
		s.log.Info("Session resumed", "attempts", *attempt)
		return nil
	}
}

// Close ends the session locally without telling the service (used when it is already gone).
func (s *Session) Close() error {
	s.closing.Store(true)
	s.dieOnce.Do(func() { close(s.die) })
	s.finish(ErrClosed)
	return nil
}

// Terminate ends the session as a well-behaved client does (§9.5): Flag TerminateSession on the data channel
// (mux mode, and basic mode with agents above 2.3.722.0), then the TerminateSession API, then Close; all of
// it within ctx (and APITimeout), so shutdown fits the caller's budget.
func (s *Session) Terminate(ctx context.Context) error {
	s.closing.Store(true)
	if s.State() != StateClosed && s.ch != nil && s.handshaken.Load() &&
		s.hs.AgentVersion.Compare(message.FlagTerminateAgentVersion) > 0 {
		fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := s.ch.Send(fctx, message.PayloadFlag, message.FlagTerminateSession.Payload()); err == nil {
			_ = s.ch.Flush(fctx) // best effort: the agent ends the session on receipt
		}
		cancel()
	}
	s.dieOnce.Do(func() { close(s.die) })
	err := s.terminateAPI(ctx)
	s.finish(ErrClosed)
	return err
}

func (s *Session) terminateAPI(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.c.cfg.APITimeout)
	defer cancel()
	_, err := s.c.cfg.API.TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: aws.String(s.id)})
	if err != nil {
		s.log.Warn("TerminateSession failed", "err", err)
		return fmt.Errorf("TerminateSession %s: %w", s.id, err)
	}
	return nil
}

// ErrInsecureStream is returned for a ws:// stream URL that is not allowed.
var ErrInsecureStream = errors.New("the service returned an unencrypted (ws://) stream URL")

// checkStreamURL refuses a stream URL that would carry the session's data and token in the clear: wss://
// always passes, ws:// only to loopback (a local emulator) or with AllowInsecureStream.
func (c *Client) checkStreamURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("the service returned a stream URL that does not parse: %w", err)
	}
	switch u.Scheme {
	case "wss":
		return nil
	case "ws":
		if c.cfg.AllowInsecureStream {
			return nil
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && ip.IsLoopback() || u.Hostname() == "localhost" {
			return nil
		}
		return fmt.Errorf("%w to %s: refusing to send the session over it; for an emulator on another host pass --allow-insecure-stream", ErrInsecureStream, u.Host)
	}
	return fmt.Errorf("the service returned a stream URL with scheme %q, want wss", u.Scheme)
}
