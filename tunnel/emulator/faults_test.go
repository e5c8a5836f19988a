package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/xtaci/smux"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// realClient is the client side of a session the way tunnel/session runs it: the real websocket dialer,
// a datachannel.Channel of role Client, the client handshake and an smux v1 client (keepalive off) pumped
// over the channel, so each fault is seen as the tunnel would see it.
type realClient struct {
	t    *testing.T
	e    *Emulator
	ctx  context.Context
	id   string
	ch   *datachannel.Channel
	sess *smux.Session
}

const realClientID = "c780a302-0000-4000-8000-0000000000aa"

// dialReal opens the session's data channel and runs the handshake; handshakeErr is its error, if any.
func dialReal(t *testing.T, e *Emulator, out *ssm.StartSessionOutput) (c *realClient, handshakeErr error) {
	t.Helper()
	ctx := ctxT(t)
	ch, err := datachannel.New(datachannel.Config{Role: datachannel.RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ch.Close() })
	tr, err := datachannel.DialClient(ctx, aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue), realClientID, datachannel.DialOptions{})
	if err != nil {
		t.Fatalf("DialClient: %v", err)
	}
	ch.Attach(tr)
	c = &realClient{t: t, e: e, ctx: ctx, id: aws.ToString(out.SessionId), ch: ch}
	_, err = datachannel.ClientHandshake(ctx, ch, "")
	return c, err
}

// startReal starts a port session and connects a real client with an smux session over it.
func startReal(t *testing.T, e *Emulator, doc string, params map[string][]string) *realClient {
	t.Helper()
	c, err := dialReal(t, e, startPortSession(t, e, doc, params))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.startMux()
	return c
}

// startMux runs an smux client over the channel, as tunnel/portforward does: Output payloads both ways.
func (c *realClient) startMux() {
	local, remote := net.Pipe()
	conf := smux.DefaultConfig()
	conf.KeepAliveDisabled = true
	sess, err := smux.Client(remote, conf)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = sess.Close(); _ = local.Close() })
	c.sess = sess
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := local.Read(buf)
			if n > 0 && c.ch.Send(c.ctx, message.PayloadOutput, buf[:n]) != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			pt, p, err := c.ch.Receive(c.ctx)
			if err != nil {
				_ = local.Close()
				return
			}
			if pt == message.PayloadOutput {
				if _, err := local.Write(p); err != nil {
					return
				}
			}
		}
	}()
}

// resume does what the client does after a drop (§10.3): ResumeSession, then a new websocket to the
// returned StreamUrl with the new token, attached to the same channel.
func (c *realClient) resume() {
	c.t.Helper()
	r, err := newClient(c.e, nil).ResumeSession(c.ctx, &ssm.ResumeSessionInput{SessionId: aws.String(c.id)})
	if err != nil || aws.ToString(r.TokenValue) == "" {
		c.t.Fatalf("ResumeSession: %v", err)
	}
	tr, err := datachannel.DialClient(c.ctx, aws.ToString(r.StreamUrl), aws.ToString(r.TokenValue), realClientID, datachannel.DialOptions{})
	if err != nil {
		c.t.Fatalf("DialClient after ResumeSession: %v", err)
	}
	c.ch.Attach(tr)
}

// eventually polls the emulator's or the client's state until cond holds, for at most 20 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, what, 20*time.Second, cond)
}

func (c *realClient) info() SessionInfo {
	c.t.Helper()
	info, ok := c.e.Session(c.id)
	if !ok {
		c.t.Fatalf("session %s unknown to the emulator", c.id)
	}
	return info
}

func echoParams(t *testing.T) map[string][]string {
	return map[string][]string{"portNumber": {strconv.Itoa(echoServer(t))}}
}

// TestStopAcking: while the agent stops acknowledging, the client's frames stay in flight and are resent
// with no ack coming back, on a websocket that stays up; once it acknowledges again, the stream carries on
// with nothing lost.
func TestStopAcking(t *testing.T) {
	e := startEmulator(t, Config{Pacing: PacingNone})
	c := startReal(t, e, DocPortForwarding, echoParams(t))
	echoOnce(t, c.sess, "before the stall")
	if err := c.ch.Flush(c.ctx); err != nil {
		t.Fatal(err)
	}
	before := c.ch.Stats()

	if err := e.StopAcking(c.id, true); err != nil {
		t.Fatal(err)
	}
	if !c.info().StopAcking {
		t.Error("SessionInfo.StopAcking is false after StopAcking(true)")
	}
	st, err := c.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	msg := []byte("sent into a stall")
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a retransmission timeout on the client", func() bool { return c.ch.Stats().Retransmits > before.Retransmits })
	during := c.ch.Stats()
	if during.AcksReceived != before.AcksReceived || during.InFlightFrames == 0 {
		t.Fatalf("during the stall the client got %d acks with %d frames in flight, want none with frames in flight",
			during.AcksReceived-before.AcksReceived, during.InFlightFrames)
	}
	if info := c.info(); !info.Attached || info.Connects != 1 {
		t.Fatalf("the stall dropped the websocket: %+v", info)
	}

	if err := e.StopAcking(c.id, false); err != nil {
		t.Fatal(err)
	}
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(st, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo after the stall: %q, %v", got, err)
	}
	if err := c.ch.Flush(c.ctx); err != nil {
		t.Fatalf("frames still unacknowledged after StopAcking(false): %v", err)
	}
	if err := e.StopAcking("nobody", true); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("StopAcking(unknown) = %v, want ErrUnknownSession", err)
	}
}

// TestPausePublication: pause_publication reaches the client, which holds its data (Stats.Paused and
// PausedSince) until start_publication; a pause with a duration ends by itself, one without an end lasts
// until PausePublication(id, 0), and agent traffic meanwhile does not end it.
func TestPausePublication(t *testing.T) {
	e := startEmulator(t, Config{Pacing: PacingNone})
	c := startReal(t, e, DocPortForwarding, echoParams(t))
	echoOnce(t, c.sess, "before the pause")

	// A stream the destination keeps answering: its output must wait, not end the client's pause.
	busy, err := c.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, err := busy.Write(bytes.Repeat([]byte("x"), 256<<10)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := e.PausePublication(c.id, -1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the client paused", func() bool { return c.ch.Stats().Paused })
	if s := c.ch.Stats(); s.PausedSince.Before(start) || s.PausedSince.After(time.Now()) {
		t.Errorf("PausedSince %v, want the moment of the pause (after %v)", s.PausedSince, start)
	}
	if !c.info().Paused {
		t.Error("SessionInfo.Paused is false during the pause")
	}
	st, err := c.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	msg := []byte("held by the pause")
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	sent := c.ch.Stats().FramesSent
	select { // absence can only be checked over a bounded window
	case <-time.After(300 * time.Millisecond):
	case <-c.ch.Done():
		t.Fatal("channel ended during the pause")
	}
	if s := c.ch.Stats(); !s.Paused || s.FramesSent != sent {
		t.Fatalf("during the pause: Paused %v, %d data frames written, want still paused and none", s.Paused, s.FramesSent-sent)
	}

	if err := e.PausePublication(c.id, 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the pause ended", func() bool { return !c.ch.Stats().Paused })
	if s := c.ch.Stats(); !s.PausedSince.IsZero() {
		t.Errorf("PausedSince %v after start_publication, want zero", s.PausedSince)
	}
	_ = st.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(st, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo after the pause: %q, %v", got, err)
	}
	_ = busy.SetReadDeadline(time.Now().Add(20 * time.Second))
	if n, err := io.CopyN(io.Discard, busy, 256<<10); err != nil {
		t.Fatalf("output held during the pause: %d bytes, %v", n, err)
	}

	// A pause with a duration ends by itself.
	if err := e.PausePublication(c.id, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the timed pause", func() bool { return c.ch.Stats().Paused })
	eventually(t, "the timed pause to end", func() bool { return !c.ch.Stats().Paused })
	echoOnce(t, c.sess, "after the timed pause")
}

// TestCorruptMux: the agent's smux frame with version 9 is a protocol error for the client's smux session;
// a session without smux refuses the fault.
func TestCorruptMux(t *testing.T) {
	e := startEmulator(t, Config{})
	c := startReal(t, e, DocPortForwarding, echoParams(t))
	echoOnce(t, c.sess, "before the corruption")
	accepted := make(chan error, 1)
	go func() { _, err := c.sess.AcceptStream(); accepted <- err }()
	if err := e.CorruptMux(c.id); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, smux.ErrInvalidProtocol) {
			t.Fatalf("client smux after CorruptMux: %v, want %v", err, smux.ErrInvalidProtocol)
		}
	case <-c.ctx.Done():
		t.Fatal("the client's smux saw no protocol error")
	}

	if err := e.SetAgentVersion(testInstance, BasicAgentVersion); err != nil {
		t.Fatal(err)
	}
	b, err := dialReal(t, e, startPortSession(t, e, DocPortForwarding, echoParams(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.CorruptMux(b.id); !errors.Is(err, ErrNotMultiplexed) {
		t.Errorf("CorruptMux on a basic-mode session = %v, want ErrNotMultiplexed", err)
	}
	if err := e.CorruptMux("nobody"); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("CorruptMux(unknown) = %v, want ErrUnknownSession", err)
	}
}

// TestTerminateSessionOutput: an administrator's end reaches the client as channel_closed with the
// service's text, the channel's terminal *ChannelClosedError.
func TestTerminateSessionOutput(t *testing.T) {
	e := startEmulator(t, Config{})
	c := startReal(t, e, DocPortForwarding, echoParams(t))
	if err := e.TerminateSession(c.id); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.ch.Done():
	case <-c.ctx.Done():
		t.Fatal("the client's channel did not end")
	}
	var cce *datachannel.ChannelClosedError
	if err := c.ch.Err(); !errors.As(err, &cce) || cce.Output != OutputTerminated || cce.SessionID != c.id {
		t.Fatalf("client channel error %v, want *ChannelClosedError with Output %q for %s", err, OutputTerminated, c.id)
	}
	if !strings.HasSuffix(OutputTerminated, "has been terminated.") {
		t.Errorf("OutputTerminated %q does not end like the service's texts", OutputTerminated)
	}
}

// TestResendRandomAfterResume: with ResendRandom, an agent whose whole window was lost to a dropped
// websocket resends it at once in random order after the client resumes (the window is larger than the
// client's out-of-order horizon), and the download carries on to the last byte within seconds. A client
// whose out-of-order store acknowledged and kept whatever came first would stall here for minutes.
func TestResendRandomAfterResume(t *testing.T) {
	const size, dropAt = 32 << 20, 2 << 20
	e := startEmulator(t, Config{Pacing: PacingNone, Faults: Faults{ResendOrder: ResendRandom}})
	src := testutil.Serve(t, func(conn net.Conn) { _, _ = conn.Write(DemoBytes(size)) })
	c := startReal(t, e, DocPortForwarding, map[string][]string{"portNumber": {strconv.Itoa(testutil.Port(src))}})
	st, err := c.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got bytes.Buffer
	var received atomic.Int64
	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for got.Len() < size {
			n, err := st.Read(buf)
			got.Write(buf[:n])
			received.Store(int64(got.Len()))
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	eventually(t, "the first 2 MiB", func() bool { return received.Load() >= dropAt })
	if err := e.DropClient(c.id); err != nil {
		t.Fatal(err)
	}
	// While the client is away the agent keeps sending into the lost websocket and then, paused, into its
	// window, until the window is full: more than the client's horizon holds.
	eventually(t, "the agent's window to fill", func() bool {
		return c.info().Agent.InFlightBytes > randomResendWindow-(unpacedPayloadSize+message.HeaderSize)
	})
	outstanding := c.info().Agent
	base := received.Load()
	resumed := time.Now()
	c.resume()
	// Recovered once the client has what was outstanding (the window, less a frame of slack).
	recovered := make(chan time.Duration, 1)
	go func() {
		for received.Load() < base+int64(outstanding.InFlightBytes)*9/10 {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond): // sampling a counter of the reader goroutine
			}
		}
		recovered <- time.Since(resumed)
	}()
	var err2 error
	select {
	case err2 = <-done:
	case <-time.After(25 * time.Second): // within ctxT's 30 s, which would end the client
		t.Fatalf("download stalled after the random-order resend: %d of %d bytes (client %+v)", received.Load(), size, c.ch.Stats())
	}
	if err2 != nil {
		t.Fatalf("download after the random-order resend: %v after %d of %d bytes (client %+v)", err2, received.Load(), size, c.ch.Stats())
	}
	if !bytes.Equal(got.Bytes(), DemoBytes(size)) {
		t.Fatal("downloaded bytes differ")
	}
	var took time.Duration
	select {
	case took = <-recovered:
	default:
		t.Fatal("the download ended before the outstanding window was counted as received")
	}
	s := c.ch.Stats()
	t.Logf("%d frames (%.1f MiB) outstanding at the resume, delivered %v after it, the whole download %v after it; client held %d out of order, dropped %d beyond the horizon and %d for full buffers",
		outstanding.InFlightFrames, float64(outstanding.InFlightBytes)/(1<<20), took.Round(time.Millisecond), time.Since(resumed).Round(time.Millisecond), s.OutOfOrder, s.DroppedBeyondHorizon, s.DroppedFull)
	if s.OutOfOrder == 0 {
		t.Error("the resend after the resume was not out of order")
	}
	if took > 15*time.Second {
		t.Errorf("the outstanding window took %v to arrive after the resume, want seconds", took)
	}
}

// TestRemoteHostDenylist: an instance whose agent is DenylistAgentVersion or later refuses loopback and
// the container credential endpoints as the remote host, and the client learns why from channel_closed
// before any handshake; the plain document still reaches the instance's localhost, and the default agent
// still allows a loopback remote host.
func TestRemoteHostDenylist(t *testing.T) {
	port := strconv.Itoa(echoServer(t))
	e := startEmulator(t, Config{AllowedDestinations: []string{AllowAny}})
	if err := e.SetAgentVersion(testInstance, DenylistAgentVersion); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "127.1", "::1", "169.254.170.2", "169.254.170.23", "fd00:ec2::23"} {
		_, err := dialReal(t, e, startPortSession(t, e, DocPortForwardingToRemoteHost, map[string][]string{"host": {host}, "portNumber": {port}}))
		var cce *datachannel.ChannelClosedError
		if !errors.As(err, &cce) || !strings.Contains(cce.Output, "forbidden") || !strings.Contains(cce.Output, DenylistAgentVersion) {
			t.Errorf("host %q on agent %s: handshake %v, want channel_closed saying it is forbidden", host, DenylistAgentVersion, err)
		}
	}
	c := startReal(t, e, DocPortForwarding, map[string][]string{"portNumber": {port}})
	echoOnce(t, c.sess, "the instance's own localhost")

	if err := e.SetAgentVersion(testInstance, DefaultAgentVersion); err != nil {
		t.Fatal(err)
	}
	old := startReal(t, e, DocPortForwardingToRemoteHost, map[string][]string{"host": {"127.0.0.1"}, "portNumber": {port}})
	echoOnce(t, old.sess, "loopback as a remote host on an older agent")
}

// TestAdminFaultEndpoints drives the faults through the admin endpoints, as a test of another process
// would, and checks their effect on the session and their errors.
func TestAdminFaultEndpoints(t *testing.T) {
	e := startEmulator(t, Config{})
	c := startReal(t, e, DocPortForwarding, echoParams(t))
	echoOnce(t, c.sess, "hello")
	post := func(path string, wantCode int) {
		t.Helper()
		resp, err := http.Post(e.Endpoint()+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantCode {
			t.Fatalf("POST %s: %d %s, want %d", path, resp.StatusCode, body, wantCode)
		}
	}
	base := "/emulator/sessions/" + c.id
	post(base+"/stop-acking", http.StatusOK)
	if !c.info().StopAcking {
		t.Error("stop-acking did not stop acknowledgements")
	}
	post(base+"/stop-acking?stop=false", http.StatusOK)
	if c.info().StopAcking {
		t.Error("stop-acking?stop=false did not resume acknowledgements")
	}
	post(base+"/stop-acking?stop=maybe", http.StatusBadRequest)
	post(base+"/pause-publication?for=never", http.StatusOK)
	eventually(t, "the client paused", func() bool { return c.ch.Stats().Paused })
	post(base+"/pause-publication?for=0s", http.StatusOK)
	eventually(t, "the pause ended", func() bool { return !c.ch.Stats().Paused })
	post(base+"/pause-publication?for=soon", http.StatusBadRequest)
	post(base+"/corrupt-mux", http.StatusOK)
	post("/emulator/sessions/nobody/corrupt-mux", http.StatusNotFound)
	post("/emulator/sessions/nobody/pause-publication?for=1s", http.StatusNotFound)
	post("/emulator/sessions/nobody/stop-acking", http.StatusNotFound)

	req, _ := http.NewRequest(http.MethodPut, e.Endpoint()+"/emulator/faults", strings.NewReader(`{"resendOrder":"random"}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var j FaultsJSON
	_ = json.NewDecoder(resp.Body).Decode(&j)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || e.Faults().ResendOrder != ResendRandom || j.ResendOrder != "random" {
		t.Fatalf("PUT faults resendOrder random: %d, faults %+v", resp.StatusCode, e.Faults())
	}
	if _, err := (FaultsJSON{ResendOrder: "backwards"}).Faults(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("resendOrder backwards: %v, want ErrInvalidConfig", err)
	}
}
