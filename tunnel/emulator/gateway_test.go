package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/gorilla/websocket"
	"github.com/xtaci/smux"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// echoServer is a loopback TCP echo destination.
func echoServer(t *testing.T) int {
	t.Helper()
	return testutil.Port(testutil.EchoServer(t))
}

// smuxClient is the smux v1 client (§9.4, keepalive off) that the gateway tests run over the raw client's
// data channel; it is closed when the test ends.
func (c *rawClient) smuxClient(ctx context.Context) *smux.Session {
	c.t.Helper()
	cfg := smux.DefaultConfig()
	cfg.KeepAliveDisabled = true
	sess, err := smux.Client(c.conn(ctx), cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { sess.Close() })
	return sess
}

// rawClient speaks the data channel by hand with tunnel/message, as a minimal plugin would (§4.1, §7, §8):
// it acknowledges every output_stream_data frame, delivers them in sequence order, and numbers its own
// input_stream_data frames from 0 across reconnects. It keeps its unacknowledged frames and resends them
// after every reconnect, like a real client (§10.3 step 4): frames written while the websocket was
// dropping are lost, exactly as on a real drop.
type rawClient struct {
	t        *testing.T
	clientID string

	mu       sync.Mutex // guards ws writes and seq
	ws       *websocket.Conn
	seq      int64
	expected int64
	ahead    map[int64]message.Message
	unacked  map[int64][]byte

	data   chan message.Message // in-order output_stream_data
	closed chan message.Message // channel_closed frames
	gone   chan error           // the websocket's read error
}

func newRawClient(t *testing.T) *rawClient {
	c := &rawClient{t: t, clientID: "c780a302-0000-4000-8000-000000000001", ahead: map[int64]message.Message{}, unacked: map[int64][]byte{},
		data: make(chan message.Message, 4096), closed: make(chan message.Message, 1)}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go c.resendLoop(stop)
	return c
}

// resendInterval is the raw client's fixed retransmission timeout. The agent drops frames without an ack
// when its receive buffer is full (§7.2, §11.3) and this client sends without a window, so like any real
// client it must resend what stays unacknowledged, or a burst faster than the agent consumes hangs.
const resendInterval = 200 * time.Millisecond

// resendBudget bounds the bytes one resend round writes, oldest frames first (go-back-N from the first
// frame the agent dropped), so a large backlog is not flooded back at the agent every round.
const resendBudget = 256 << 10

// resendLoop resends the oldest unacknowledged frames, in sequence order, each resendInterval until stop.
func (c *rawClient) resendLoop(stop <-chan struct{}) {
	t := time.NewTicker(resendInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		if c.ws != nil {
			seqs := make([]int64, 0, len(c.unacked))
			for s := range c.unacked {
				seqs = append(seqs, s)
			}
			slices.Sort(seqs)
			budget := resendBudget
			for _, s := range seqs {
				if budget <= 0 {
					break
				}
				budget -= len(c.unacked[s])
				_ = c.ws.WriteMessage(websocket.BinaryMessage, c.unacked[s])
			}
		}
		c.mu.Unlock()
	}
}

// dial opens the websocket and sends OpenDataChannel; it returns the websocket's first read error, if the
// gateway refuses it straight away.
func (c *rawClient) dial(streamURL, token string) error {
	ws, _, err := websocket.DefaultDialer.Dial(streamURL, nil)
	if err != nil {
		return err
	}
	open, _ := json.Marshal(message.OpenDataChannelInput{MessageSchemaVersion: "1.0", RequestID: message.NewID().String(), TokenValue: token, ClientID: c.clientID, ClientVersion: "1.2.677.0"})
	if err := ws.WriteMessage(websocket.TextMessage, open); err != nil {
		return err
	}
	c.mu.Lock()
	c.ws = ws
	seqs := make([]int64, 0, len(c.unacked))
	for s := range c.unacked {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	for _, s := range seqs {
		_ = ws.WriteMessage(websocket.BinaryMessage, c.unacked[s])
	}
	c.mu.Unlock()
	c.gone = make(chan error, 1)
	go c.read(ws, c.gone)
	return nil
}

func (c *rawClient) read(ws *websocket.Conn, gone chan<- error) {
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			gone <- err
			return
		}
		m, err := message.Decode(b)
		if err != nil {
			c.t.Errorf("gateway sent a malformed frame: %v", err)
			continue
		}
		switch m.Type {
		case message.OutputStreamData:
			c.write(message.NewAck(&m, uint64(time.Now().UnixMilli())))
			c.mu.Lock()
			if m.SequenceNumber >= c.expected {
				c.ahead[m.SequenceNumber] = m
			}
			for {
				n, ok := c.ahead[c.expected]
				if !ok {
					break
				}
				delete(c.ahead, c.expected)
				c.expected++
				c.data <- n
			}
			c.mu.Unlock()
		case message.ChannelClosed:
			c.closed <- m
		case message.Acknowledge:
			ack, err := message.DecodeAck(m.Payload)
			if err != nil {
				c.t.Errorf("bad ack: %v", err)
				continue
			}
			c.mu.Lock()
			delete(c.unacked, ack.AcknowledgedMessageSequenceNumber)
			c.mu.Unlock()
		case message.StartPublication, message.PausePublication:
		default:
			c.t.Errorf("unexpected frame type %q from the gateway", m.Type)
		}
	}
}

func (c *rawClient) write(m message.Message) {
	b, err := m.MarshalBinary()
	if err != nil {
		c.t.Error(err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.WriteMessage(websocket.BinaryMessage, b)
}

// send sends one input_stream_data frame with the next sequence number.
func (c *rawClient) send(pt message.PayloadType, p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := message.Message{Type: message.InputStreamData, SchemaVersion: 1, CreatedDate: uint64(time.Now().UnixMilli()), SequenceNumber: c.seq, MessageID: message.NewID(), PayloadType: pt, Payload: p}
	b, err := m.MarshalBinary()
	if err != nil {
		c.t.Error(err)
		return
	}
	c.unacked[c.seq] = b
	c.seq++
	_ = c.ws.WriteMessage(websocket.BinaryMessage, b)
}

func (c *rawClient) next(ctx context.Context) message.Message {
	c.t.Helper()
	select {
	case m := <-c.data:
		return m
	case <-ctx.Done():
		c.t.Fatalf("no data frame from the agent: %v", ctx.Err())
	}
	return message.Message{}
}

// handshake runs the client half of §8 and returns the HandshakeRequest's session type.
func (c *rawClient) handshake(ctx context.Context) (message.HandshakeRequest, message.SessionTypeRequest) {
	c.t.Helper()
	m := c.next(ctx)
	if m.PayloadType != message.PayloadHandshakeRequest || m.SequenceNumber != 0 {
		c.t.Fatalf("first agent frame: seq %d %v, want seq 0 HandshakeRequest", m.SequenceNumber, m.PayloadType)
	}
	var req message.HandshakeRequest
	if err := message.DecodeJSON(m.PayloadType, m.Payload, &req); err != nil {
		c.t.Fatal(err)
	}
	st, err := req.SessionType()
	if err != nil {
		c.t.Fatal(err)
	}
	resp, _ := json.Marshal(message.HandshakeResponse{ClientVersion: "1.2.677.0", ProcessedClientActions: []message.ProcessedClientAction{{ActionType: message.ActionSessionType, ActionStatus: message.ActionSuccess}}})
	c.send(message.PayloadHandshakeResponse, resp)
	m = c.next(ctx)
	if m.PayloadType != message.PayloadHandshakeComplete {
		c.t.Fatalf("after the response: %v, want HandshakeComplete", m.PayloadType)
	}
	return req, st
}

// conn is the smux byte stream over the data channel: PT 1 payloads both ways (§9.4).
func (c *rawClient) conn(ctx context.Context) io.ReadWriteCloser {
	pr, pw := io.Pipe()
	go func() {
		for {
			select {
			case m := <-c.data:
				if m.PayloadType == message.PayloadOutput {
					if _, err := pw.Write(m.Payload); err != nil {
						return
					}
				}
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			}
		}
	}()
	return &streamRWC{c: c, r: pr}
}

type streamRWC struct {
	c *rawClient
	r *io.PipeReader
}

func (s *streamRWC) Read(p []byte) (int, error) { return s.r.Read(p) }
func (s *streamRWC) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += 1024 {
		s.c.send(message.PayloadOutput, p[off:min(off+1024, len(p))])
	}
	return len(p), nil
}
func (s *streamRWC) Close() error { return s.r.Close() }

func startPortSession(t *testing.T, e *Emulator, doc string, params map[string][]string) *ssm.StartSessionOutput {
	t.Helper()
	out, err := newClient(e, nil).StartSession(ctxT(t), &ssm.StartSessionInput{Target: aws.String(testInstance), DocumentName: aws.String(doc), Parameters: params})
	if err != nil {
		t.Fatalf("StartSession: %v", err)
	}
	return out
}

func echoOnce(t *testing.T, sess *smux.Session, msg string) {
	t.Helper()
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer st.Close()
	_ = st.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := st.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(st, got); err != nil {
		t.Fatalf("echo of %q: %v", msg, err)
	}
	if !bytes.Equal(got, []byte(msg)) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

func waitGone(t *testing.T, c *rawClient) error {
	t.Helper()
	select {
	case err := <-c.gone:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("websocket still open")
	}
	return nil
}

// TestRawProtocolEndToEnd: handshake with the ToRemoteHost properties, an smux stream to a loopback echo
// server, a drop, a refused stale token, a resume that continues the sequence numbers, and TerminateSession's
// channel_closed.
func TestRawProtocolEndToEnd(t *testing.T) {
	port := echoServer(t)
	e := startEmulator(t, Config{Pacing: PacingNone})
	out := startPortSession(t, e, DocPortForwardingToRemoteHost, map[string][]string{"host": {"127.0.0.1"}, "portNumber": {strconv.Itoa(port)}, "localPortNumber": {"0"}})
	id := aws.ToString(out.SessionId)
	ctx := ctxT(t)

	c := newRawClient(t)
	if err := c.dial(aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue)); err != nil {
		t.Fatal(err)
	}
	req, st := c.handshake(ctx)
	if req.AgentVersion != DefaultAgentVersion || st.SessionType != message.SessionTypePort {
		t.Errorf("handshake agent %q type %q", req.AgentVersion, st.SessionType)
	}
	want := message.PortParameters{Host: "127.0.0.1", PortNumber: strconv.Itoa(port), LocalPortNumber: "0", Type: message.LocalPortForwarding}
	if st.Properties != want {
		t.Errorf("handshake properties %+v, want %+v", st.Properties, want)
	}
	sess := c.smuxClient(ctx)
	echoOnce(t, sess, "hello through the emulator")

	// Drop: the websocket dies without a close frame.
	if err := e.DropClient(id); err != nil {
		t.Fatal(err)
	}
	if err := waitGone(t, c); websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
		t.Errorf("drop sent a close frame: %v", err)
	}
	r, err := newClient(e, nil).ResumeSession(ctx, &ssm.ResumeSessionInput{SessionId: out.SessionId})
	if err != nil || aws.ToString(r.TokenValue) == "" {
		t.Fatalf("ResumeSession: %v", err)
	}
	// The old token is no longer valid.
	if err := c.dial(aws.ToString(r.StreamUrl), aws.ToString(out.TokenValue)); err != nil {
		t.Fatal(err)
	}
	if err := waitGone(t, c); !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Errorf("stale token: %v, want close 1008", err)
	}
	if err := c.dial(aws.ToString(r.StreamUrl), aws.ToString(r.TokenValue)); err != nil {
		t.Fatal(err)
	}
	// Same session state: sequence numbers continue on both sides, and the smux session carries on.
	echoOnce(t, sess, "after the resume")
	if info, _ := e.Session(id); info.Connects != 2 || info.ClientID != c.clientID || info.ClientVersion != "1.2.677.0" {
		t.Errorf("session info %+v: want 2 accepted connects by %s", info, c.clientID)
	}

	if _, err := newClient(e, nil).TerminateSession(ctx, &ssm.TerminateSessionInput{SessionId: out.SessionId}); err != nil {
		t.Fatal(err)
	}
	assertChannelClosed(t, c, id, OutputTerminated)
}

func assertChannelClosed(t *testing.T, c *rawClient, id, output string) {
	t.Helper()
	select {
	case m := <-c.closed:
		var p message.ChannelClosedPayload
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatal(err)
		}
		if p.Output != output || p.SessionID != id || p.MessageType != "channel_closed" || p.SchemaVersion != 1 || m.CreatedDate == 0 {
			t.Errorf("channel_closed %+v, want Output %q for %s", p, output, id)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no channel_closed (want %q)", output)
	}
}

func TestIdleTimeoutAndMaxDuration(t *testing.T) {
	for _, tc := range []struct {
		faults Faults
		output string
	}{
		{Faults{IdleTimeout: 300 * time.Millisecond}, OutputIdleTimeout},
		{Faults{MaxSessionDuration: time.Second}, OutputMaxDuration},
	} {
		t.Run(tc.output, func(t *testing.T) {
			e := startEmulator(t, Config{Faults: tc.faults})
			out := startPortSession(t, e, DocPortForwarding, map[string][]string{"portNumber": {"22"}})
			c := newRawClient(t)
			if err := c.dial(aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue)); err != nil {
				t.Fatal(err)
			}
			// No traffic at all after the open: the service's timers run from StartSession.
			assertChannelClosed(t, c, aws.ToString(out.SessionId), tc.output)
			if info, _ := e.Session(aws.ToString(out.SessionId)); !info.Ended || info.Output != tc.output {
				t.Errorf("session %+v", info)
			}
		})
	}
}

func TestByeAndDropKnobs(t *testing.T) {
	e := startEmulator(t, Config{Faults: Faults{DropEvery: 200 * time.Millisecond}})
	out := startPortSession(t, e, DocPortForwarding, nil)
	c := newRawClient(t)
	if err := c.dial(aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue)); err != nil {
		t.Fatal(err)
	}
	if err := waitGone(t, c); err == nil || websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("DropEvery: %v, want a dropped connection", err)
	}
	if err := e.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	r, err := newClient(e, nil).ResumeSession(ctxT(t), &ssm.ResumeSessionInput{SessionId: out.SessionId})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.dial(aws.ToString(r.StreamUrl), aws.ToString(r.TokenValue)); err != nil {
		t.Fatal(err)
	}
	// Wait until attached, then Bye.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if info, _ := e.Session(aws.ToString(out.SessionId)); info.Attached && info.Connects == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second websocket never attached")
		}
		time.Sleep(10 * time.Millisecond) // polling external state with a deadline
	}
	if err := e.ByeClient(aws.ToString(out.SessionId)); err != nil {
		t.Fatal(err)
	}
	var ce *websocket.CloseError
	if err := waitGone(t, c); !errors.As(err, &ce) || ce.Code != websocket.CloseNormalClosure || ce.Text != "Bye" {
		t.Errorf("Bye: %v, want close 1000 Bye", err)
	}
	if err := e.DropClient("nobody"); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("DropClient(unknown) = %v", err)
	}
	_ = fmt.Sprint()
}

// TestDestinationPolicy: the agent refuses metadata addresses and, by default, anything but loopback, at
// session start (§9.1); the client learns why from channel_closed. A refused dial of one stream is
// ConnectToPortError (§9.4) and the session lives on.
func TestDestinationPolicy(t *testing.T) {
	e := startEmulator(t, Config{})
	for _, tc := range []struct{ host, want string }{
		{"169.254.169.254", "forbidden"},
		{"10.1.2.3", "not allowed"},
	} {
		out := startPortSession(t, e, DocPortForwardingToRemoteHost, map[string][]string{"host": {tc.host}, "portNumber": {"80"}})
		c := newRawClient(t)
		if err := c.dial(aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue)); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-c.closed:
			var p message.ChannelClosedPayload
			if err := json.Unmarshal(m.Payload, &p); err != nil || !strings.Contains(p.Output, tc.want) || !strings.Contains(p.Output, tc.host) {
				t.Errorf("%s: channel_closed %+v (%v), want Output naming it %s", tc.host, p, err, tc.want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no channel_closed", tc.host)
		}
	}

	// A closed loopback port: the stream fails with ConnectToPortError, the session stays usable.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	out := startPortSession(t, e, DocPortForwarding, map[string][]string{"portNumber": {strconv.Itoa(closedPort)}})
	c := newRawClient(t)
	if err := c.dial(aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue)); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	c.handshake(ctx)
	c.send(message.PayloadOutput, []byte{1, 0, 0, 0, 3, 0, 0, 0}) // smux v1 SYN of stream 3 (§9.4)
	for {
		m := c.next(ctx)
		if m.PayloadType == message.PayloadFlag {
			if f, err := message.DecodeFlag(m.Payload); err != nil || f != message.FlagConnectToPortError {
				t.Fatalf("flag %v %v, want ConnectToPortError", f, err)
			}
			break
		}
	}
	if info, _ := e.Session(aws.ToString(out.SessionId)); info.Ended {
		t.Errorf("session ended by one failed stream: %+v", info)
	}
}

// TestAgentPacing: with PacingAgent the agent sends 1 KiB payloads at about 1 MB/s (§9.6), so measured
// throughput is what the real service gives.
func TestAgentPacing(t *testing.T) {
	for _, p := range []Pacing{PacingAgent, PacingNone} {
		t.Run(string(p), func(t *testing.T) { testPacing(t, p) })
	}
}

func testPacing(t *testing.T, pacing Pacing) {
	port := echoServer(t)
	e := startEmulator(t, Config{Pacing: pacing})
	out := startPortSession(t, e, DocPortForwarding, map[string][]string{"portNumber": {strconv.Itoa(port)}})
	c := newRawClient(t)
	if err := c.dial(aws.ToString(out.StreamUrl), aws.ToString(out.TokenValue)); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	c.handshake(ctx)
	sess := c.smuxClient(ctx)
	st, err := sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	payload := DemoBytes(size)
	start := time.Now()
	go func() { _, _ = st.Write(payload) }()
	got := make([]byte, size)
	_ = st.SetReadDeadline(time.Now().Add(25 * time.Second))
	if _, err := io.ReadFull(st, got); err != nil {
		t.Fatalf("echo of 1 MiB: %v", err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, payload) {
		t.Fatal("echoed bytes differ")
	}
	rate := float64(size) / elapsed.Seconds()
	t.Logf("1 MiB echoed through the emulator with pacing %s in %v: %.0f KB/s", pacing, elapsed, rate/1000)
	if pacing == PacingAgent && rate > 1.3e6 {
		t.Errorf("agent pacing let %.0f B/s through, want ≤ about 1 MB/s", rate)
	}
}
