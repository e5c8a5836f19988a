package datachannel

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"

	"golang.org/x/sync/errgroup"
)

// transferBoth sends n random bytes each way between a and b concurrently and checks both arrive intact.
func transferBoth(t *testing.T, a, b *Channel, n int, onProgress func(int)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ab, ba := randomBytes(t, n), randomBytes(t, n)
	var gotAB, gotBA []byte
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sendAll(gctx, a, ab, 1) })
	g.Go(func() error { return sendAll(gctx, b, ba, 2) })
	g.Go(func() (err error) { gotAB, err = receiveN(gctx, b, n, onProgress); return })
	g.Go(func() (err error) { gotBA, err = receiveN(gctx, a, n, nil); return })
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "client→agent", gotAB, ab)
	sameBytes(t, "agent→client", gotBA, ba)
	if err := a.Flush(ctx); err != nil {
		t.Fatalf("flush a: %v", err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("flush b: %v", err)
	}
}

func newPipePair(t *testing.T, mod func(*Config)) (client, agent *Channel) {
	cc, ac := Config{Role: RoleClient}, Config{Role: RoleAgent}
	if mod != nil {
		mod(&cc)
		mod(&ac)
	}
	client, agent = mustNew(t, cc), mustNew(t, ac)
	x, y := Pipe(0)
	client.Attach(x)
	agent.Attach(y)
	return client, agent
}

func TestPipeDelivery(t *testing.T) {
	c, a := newPipePair(t, nil)
	transferBoth(t, c, a, 1<<20, nil)
	s := c.Stats()
	if s.FramesSent == 0 || s.AcksReceived < s.FramesSent || s.BadFrames != 0 {
		t.Fatalf("unexpected client stats %+v", s)
	}
}

// wsPair connects a client Channel through DialClient to a server-side websocket Transport attached to an
// agent Channel, over a real httptest server on loopback.
func wsPair(t *testing.T, client, agent *Channel) {
	t.Helper()
	srvT := make(chan Transport, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			t.Errorf("upgrade: %v", err)
			return
		}
		mt, open, err := conn.ReadMessage()
		if err != nil || mt != websocket.TextMessage {
			t.Errorf("OpenDataChannel: type %d err %v", mt, err)
			return
		}
		var in message.OpenDataChannelInput
		if err := json.Unmarshal(open, &in); err != nil || in.TokenValue != "tok" || in.ClientID != "cid" || in.ClientVersion != ClientVersion {
			t.Errorf("OpenDataChannel %s: %v", open, err)
		}
		srvT <- NewWebsocketTransport(conn, WebsocketOptions{})
	}))
	t.Cleanup(srv.Close)
	tr, err := DialClient(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/data-channel/s-1", "tok", "cid", DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	client.Attach(tr)
	agent.Attach(<-srvT)
}

func TestTransportMatrix(t *testing.T) {
	const n = 1 << 20
	t.Run("pipe", func(t *testing.T) {
		c, a := newPipePair(t, nil)
		transferBoth(t, c, a, n, nil)
	})
	t.Run("pipe that blocks writes", func(t *testing.T) {
		c, a := mustNew(t, Config{Role: RoleClient}), mustNew(t, Config{Role: RoleAgent})
		x, y := Pipe(1) // every second write blocks until the reader catches up
		c.Attach(x)
		a.Attach(y)
		transferBoth(t, c, a, n/2, nil)
	})
	t.Run("websocket", func(t *testing.T) {
		c, a := mustNew(t, Config{Role: RoleClient}), mustNew(t, Config{Role: RoleAgent})
		wsPair(t, c, a)
		transferBoth(t, c, a, n, nil)
	})
	t.Run("lossy", func(t *testing.T) {
		c, a := mustNew(t, Config{Role: RoleClient}), mustNew(t, Config{Role: RoleAgent})
		x, y := Pipe(0)
		lx, ly := newLossy(x, 1, 0.05, 0.05), newLossy(y, 2, 0.05, 0.05)
		c.Attach(lx)
		a.Attach(ly)
		transferBoth(t, c, a, n/2, nil)
		lx.mu.Lock()
		dropped := lx.dropped
		lx.mu.Unlock()
		s := c.Stats()
		if dropped == 0 || s.Retransmits == 0 {
			t.Fatalf("lossy transport did not exercise recovery: dropped %d, retransmits %d", dropped, s.Retransmits)
		}
		if a.Stats().Duplicates == 0 && a.Stats().OutOfOrder == 0 {
			t.Fatalf("no duplicates or reordering seen by the receiver: %+v", a.Stats())
		}
		t.Logf("client stats: %+v", s)
	})
}

// TestTransportSwap kills the transport five times mid-transfer and attaches a fresh one, as the client
// does after ResumeSession: nothing is lost or duplicated.
func TestTransportSwap(t *testing.T) {
	c, a := mustNew(t, Config{Role: RoleClient}), mustNew(t, Config{Role: RoleAgent})
	x, y := Pipe(0)
	c.Attach(x)
	a.Attach(y)
	const n = 2 << 20
	kills := make(chan int, 8)
	current := x
	swapped := 0
	progress := func(got int) {
		if swapped < 5 && got > (swapped+1)*n/7 {
			swapped++
			kills <- got
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5 {
			select {
			case <-kills:
			case <-time.After(60 * time.Second):
				return
			}
			_ = current.Close() // both ends die, like a dropped websocket
			for _, ch := range []*Channel{c, a} {
				select {
				case <-ch.TransportFailed():
				case <-time.After(10 * time.Second):
					t.Errorf("%v: TransportFailed not signalled", ch.Role())
					return
				}
			}
			nx, ny := Pipe(0)
			current = nx
			c.Attach(nx)
			a.Attach(ny)
		}
	}()
	transferBoth(t, c, a, n, progress)
	<-done
	if got := c.Stats().Transports; got != 6 {
		t.Fatalf("client saw %d transports, want 6", got)
	}
	if c.Stats().TransportFailures < 5 {
		t.Fatalf("client saw %d transport failures, want ≥ 5", c.Stats().TransportFailures)
	}
}

func TestRTTEstimator(t *testing.T) {
	e := newRTTEstimator()
	if e.srtt != 100*time.Millisecond || e.rttvar != 0 || e.effective() != 200*time.Millisecond {
		t.Fatalf("initial state %+v", e)
	}
	// §7.3 by hand: R = 20 ms. RTTVAR = ¾·0 + ¼·|100−20| = 20; SRTT = ⅞·100 + ⅛·20 = 90; RTO = 90 + max(10, 80) = 170.
	e.sample(20 * time.Millisecond)
	if e.rttvar != 20*time.Millisecond || e.srtt != 90*time.Millisecond || e.rto != 170*time.Millisecond {
		t.Fatalf("after one sample: %+v", e)
	}
	// Converges on a steady 1 ms RTT to SRTT+10 ms (clock granularity floor).
	for range 200 {
		e.sample(time.Millisecond)
	}
	if e.rto < 11*time.Millisecond || e.rto > 12*time.Millisecond {
		t.Fatalf("steady-state RTO %v, want ≈ 11 ms", e.rto)
	}
	// Capped at 1 s.
	for range 50 {
		e.sample(5 * time.Second)
	}
	if e.rto != time.Second {
		t.Fatalf("RTO %v, want the 1 s cap", e.rto)
	}
	// Backoff doubles; while no ack makes progress its cap doubles from 1 s up to MaxRetransmitBackoff.
	e = newRTTEstimator()
	e.timedOut()
	if e.effective() != 400*time.Millisecond {
		t.Fatalf("after one timeout %v, want 400ms", e.effective())
	}
	for range 20 {
		e.timedOut()
	}
	if e.effective() != MaxRetransmitBackoff {
		t.Fatalf("backoff %v after 21 timeouts without progress, want the %v cap", e.effective(), MaxRetransmitBackoff)
	}
	// Ack progress brings the cap back to §7.3's 1 s, keeping Karn's backoff within it.
	if !e.progress() || e.effective() != MaxTransmissionTimeout {
		t.Fatalf("after progress %v, want the %v cap", e.effective(), MaxTransmissionTimeout)
	}
	if e.progress() {
		t.Fatal("a second progress without a timeout in between reported a change")
	}
	// A valid sample clears the backoff.
	e.sample(100 * time.Millisecond)
	if e.backoff != 0 || e.effective() != e.rto {
		t.Fatalf("sample did not clear backoff: %+v", e)
	}
}

func rawPair(t *testing.T, cfg Config) (*Channel, *rawPeer) {
	t.Helper()
	ch := mustNew(t, cfg)
	x, y := Pipe(1024)
	ch.Attach(x)
	typ := message.OutputStreamData
	if cfg.Role == RoleAgent {
		typ = message.InputStreamData
	}
	return ch, &rawPeer{t: t, tr: y, typ: typ}
}

// TestRetransmitEveryOverdueFrame checks on virtual time that every overdue frame is resent (not only the
// oldest), that a resend updates the send time, and that an acked frame is not resent.
func TestRetransmitEveryOverdueFrame(t *testing.T) {
	clk := newFakeClock()
	ch, peer := rawPair(t, Config{Role: RoleClient, Clock: clk})
	ctx := context.Background()
	t0 := clk.Now()
	for i := range 5 {
		if err := ch.Send(ctx, message.PayloadOutput, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	first := make([]message.Message, 5)
	for i := range first {
		first[i] = peer.read()
		if first[i].SequenceNumber != int64(i) || first[i].Type != message.InputStreamData || first[i].Flags != 0 {
			t.Fatalf("frame %d: %s seq %d flags %d", i, first[i].Type, first[i].SequenceNumber, first[i].Flags)
		}
	}
	clk.waitTimerAt(t, t0.Add(200*time.Millisecond)) // initial RTO (§7.3)
	clk.Advance(200 * time.Millisecond)
	for i := range 5 {
		if m := peer.read(); m.SequenceNumber != int64(i) {
			t.Fatalf("resend %d has seq %d", i, m.SequenceNumber)
		}
	}
	waitFor(t, "5 retransmits", func() bool { return ch.Stats().Retransmits == 5 })
	// Backoff doubled the RTO; the deadline counts from the resend, not the first send.
	clk.waitTimerAt(t, t0.Add(600*time.Millisecond))
	peer.ack(first[2])
	waitFor(t, "ack of seq 2", func() bool { return ch.Stats().InFlightFrames == 4 })
	clk.Advance(400 * time.Millisecond)
	for _, want := range []int64{0, 1, 3, 4} {
		if m := peer.read(); m.SequenceNumber != want {
			t.Fatalf("second resend: seq %d, want %d", m.SequenceNumber, want)
		}
	}
	for _, i := range []int{0, 1, 3, 4} {
		peer.ack(first[i])
	}
	if err := ch.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if s := ch.Stats(); s.Retransmits != 9 || s.InFlightBytes != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestRetransmitBacksOffWithoutAckProgress: against a peer that never acknowledges, each resend round of
// the window waits twice as long as the one before, past §7.3's 1 s cap, up to MaxRetransmitBackoff, so
// the rounds in a minute stay logarithmic (with the RTO capped at 1 s including backoff there were 61).
// The first ack that acknowledges an outstanding frame brings the timeout back under the 1 s cap.
func TestRetransmitBacksOffWithoutAckProgress(t *testing.T) {
	const frames = 10
	clk := newFakeClock()
	ch, peer := rawPair(t, Config{Role: RoleClient, Clock: clk})
	ctx := context.Background()
	t0 := clk.Now()
	for i := range frames {
		if err := ch.Send(ctx, message.PayloadOutput, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	first := make([]message.Message, frames)
	for i := range first {
		first[i] = peer.read()
	}
	// nextDeadline waits for the scheduler to arm its timer after the last round and returns its deadline.
	nextDeadline := func() time.Time {
		t.Helper()
		var when time.Time
		clk.waitUntil(t, "the retransmission timer", func() bool {
			p := clk.pending()
			if len(p) != 1 || !p[0].After(clk.Now()) {
				return false
			}
			when = p[0]
			return true
		})
		return when
	}
	var at []time.Duration // virtual time of each resend round since the first send
	for {
		due := nextDeadline()
		if due.Sub(t0) > 2*time.Minute {
			break
		}
		clk.Advance(due.Sub(clk.Now()))
		for i := range frames {
			if m := peer.read(); m.SequenceNumber != int64(i) {
				t.Fatalf("round %d: resent seq %d, want %d", len(at)+1, m.SequenceNumber, i)
			}
		}
		at = append(at, due.Sub(t0))
		waitFor(t, "the round's resends counted", func() bool { return ch.Stats().Retransmits == uint64(len(at)*frames) })
	}
	inMinute := 0
	for _, d := range at {
		if d <= time.Minute {
			inMinute++
		}
	}
	t.Logf("resend rounds without an ack at %v: %d in the first minute", at, inMinute)
	if inMinute > 10 {
		t.Fatalf("%d resend rounds of the window in 60 s without an ack, want ≤ 10 (exponential backoff)", inMinute)
	}
	if gap := at[len(at)-1] - at[len(at)-2]; gap != MaxRetransmitBackoff {
		t.Errorf("interval between the last two rounds %v, want the cap %v", gap, MaxRetransmitBackoff)
	}
	previous := t0.Add(at[len(at)-1])
	if s := ch.Stats(); s.RTO != MaxRetransmitBackoff {
		t.Errorf("Stats.RTO %v while stalled, want %v", s.RTO, MaxRetransmitBackoff)
	}
	// The peer acknowledges again: the retransmission timeout is back within §7.3's cap at once.
	peer.ack(first[0])
	waitFor(t, "the ack", func() bool { return ch.Stats().InFlightFrames == frames-1 })
	// The scheduler re-arms its timer on the ack; until it has, the stalled deadline is still pending.
	clk.waitUntil(t, "the next resend within the 1 s cap of the last", func() bool {
		p := clk.pending()
		return len(p) == 1 && p[0].After(clk.Now()) && !p[0].After(previous.Add(MaxTransmissionTimeout))
	})
	if s := ch.Stats(); s.RTO > MaxTransmissionTimeout {
		t.Errorf("Stats.RTO %v after ack progress, want ≤ %v", s.RTO, MaxTransmissionTimeout)
	}
}

// TestLateTimerGraceBeforeResend: a retransmission timer that fires long after its deadline (the process
// was stopped) waits ClockGranularity for acks the readers have not processed yet; an ack arriving then
// cancels the resend, and without one the frame is resent after that single grace period.
func TestLateTimerGraceBeforeResend(t *testing.T) {
	clk := newFakeClock()
	ch, peer := rawPair(t, Config{Role: RoleClient, Clock: clk})
	ctx := context.Background()
	fireLate := func() {
		t.Helper()
		clk.waitUntil(t, "a retransmission timer", func() bool { return len(clk.pending()) == 1 })
		clk.Advance(clk.pending()[0].Sub(clk.Now()) + 500*time.Millisecond)
		clk.waitTimerAt(t, clk.Now().Add(ClockGranularity))
		if s := ch.Stats(); s.Retransmits != 0 {
			t.Fatalf("resent %d frames on a late timer without a grace period", s.Retransmits)
		}
	}

	if err := ch.Send(ctx, message.PayloadOutput, []byte("a")); err != nil {
		t.Fatal(err)
	}
	a := peer.read()
	fireLate()
	peer.ack(a) // the ack that waited unread while the process was stopped
	if err := ch.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(ClockGranularity)

	if err := ch.Send(ctx, message.PayloadOutput, []byte("b")); err != nil {
		t.Fatal(err)
	}
	b := peer.read()
	fireLate()
	clk.Advance(ClockGranularity) // no ack: resent after the one grace period
	if m := peer.read(); m.SequenceNumber != b.SequenceNumber {
		t.Fatalf("resent seq %d, want %d", m.SequenceNumber, b.SequenceNumber)
	}
	waitFor(t, "the resend counted", func() bool { return ch.Stats().Retransmits == 1 })
	peer.readNone(50 * time.Millisecond) // and only once
}

func TestWindowBackpressure(t *testing.T) {
	frame := message.HeaderSize + 100
	ch, peer := rawPair(t, Config{Role: RoleAgent, MaxPayloadSize: 100, MaxInFlightBytes: 4 * frame, Clock: newFakeClock()}) // virtual time: no retransmits
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sent := make(chan error, 1)
	go func() { sent <- ch.Send(ctx, message.PayloadOutput, make([]byte, 1000)) }() // 10 frames
	var got []message.Message
	for range 4 {
		got = append(got, peer.read())
	}
	if got[0].Flags != message.FlagSYN {
		t.Fatalf("agent's seq 0 must carry SYN (§6.4), flags %d", got[0].Flags)
	}
	select {
	case err := <-sent:
		t.Fatalf("Send returned (%v) with a full window", err)
	case <-time.After(100 * time.Millisecond):
	}
	if s := ch.Stats(); s.InFlightFrames != 4 || s.InFlightBytes != 4*frame {
		t.Fatalf("window not full: %+v", s)
	}
	peer.ack(got[0])
	if m := peer.read(); m.SequenceNumber != 4 {
		t.Fatalf("after one ack got seq %d, want 4", m.SequenceNumber)
	} else {
		got = append(got, m)
	}
	for i := 1; i < 10; i++ {
		peer.ack(got[i])
		if i+4 < 10 {
			got = append(got, peer.read())
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := ch.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// A blocked Send honours its context.
	ch2, _ := rawPair(t, Config{Role: RoleAgent, MaxPayloadSize: 100, MaxInFlightBytes: frame})
	cctx, ccancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- ch2.Send(cctx, message.PayloadOutput, make([]byte, 300)) }()
	waitFor(t, "first frame in flight", func() bool { return ch2.Stats().InFlightFrames == 1 })
	ccancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("blocked Send returned %v, want context.Canceled", err)
	}
}

func TestTokenBucket(t *testing.T) {
	now := time.Unix(0, 0)
	b := newTokenBucket(1000, 100, now)
	if w := b.take(now, 100, false); w != 0 {
		t.Fatalf("full bucket should allow a burst, wait %v", w)
	}
	if w := b.take(now, 50, false); w != 50*time.Millisecond {
		t.Fatalf("wait %v, want 50ms", w)
	}
	if w := b.take(now.Add(50*time.Millisecond), 50, false); w != 0 {
		t.Fatalf("after refill wait %v", w)
	}
	if newTokenBucket(0, 0, now).take(now, 1<<30, false) != 0 {
		t.Fatal("rate 0 must be unlimited")
	}
}

// TestRateLimitAccuracy measures the pace of Send on virtual time: 200 KB at 100 KB/s takes 2 s minus the
// burst, exactly, whatever the machine's load.
func TestRateLimitAccuracy(t *testing.T) {
	clk := newFakeClock()
	ch := mustNew(t, Config{Role: RoleClient, Clock: clk, Rate: 100_000, Burst: 1024, MaxInFlightBytes: 1 << 20})
	// No transport: frames queue in the window, so only the bucket paces Send.
	const total = 200_000
	start := clk.Now()
	done := make(chan error, 1)
	go func() { done <- ch.Send(context.Background(), message.PayloadOutput, make([]byte, total)) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			el := clk.Now().Sub(start)
			want := time.Duration(float64(total-1024) / 100_000 * float64(time.Second))
			if d := el - want; d < -10*time.Millisecond || d > 10*time.Millisecond {
				t.Fatalf("sending %d bytes at 100 KB/s took %v of virtual time, want %v ± 10ms", total, el, want)
			}
			if s := ch.Stats(); s.InFlightFrames != (total+1023)/1024 {
				t.Fatalf("queued %d frames", s.InFlightFrames)
			}
			return
		default:
		}
		// Advance to the earliest pending timer (the bucket's wait).
		var next time.Time
		clk.waitUntil(t, "a pacing timer or Send to finish", func() bool {
			p := clk.pending()
			if len(p) == 0 {
				return len(done) > 0
			}
			next = p[0]
			for _, q := range p {
				if q.Before(next) {
					next = q
				}
			}
			return true
		})
		if !next.IsZero() {
			clk.Advance(next.Sub(clk.Now()))
		}
	}
}

func TestPauseAndStartPublication(t *testing.T) {
	ch, peer := rawPair(t, Config{Role: RoleClient})
	ctx := context.Background()
	peer.write(message.Message{Type: message.PausePublication, MessageID: message.NewID()})
	waitFor(t, "pause", func() bool { return ch.Stats().Paused })
	if err := ch.Send(ctx, message.PayloadOutput, []byte("held")); err != nil {
		t.Fatal(err)
	}
	peer.readNone(150 * time.Millisecond)
	peer.write(message.Message{Type: message.StartPublication, MessageID: message.NewID()})
	m := peer.read()
	if m.SequenceNumber != 0 || string(m.Payload) != "held" {
		t.Fatalf("after start_publication got seq %d %q", m.SequenceNumber, m.Payload)
	}
	peer.ack(m)
	// Inbound data also clears a pause (§10.1).
	peer.write(message.Message{Type: message.PausePublication, MessageID: message.NewID()})
	waitFor(t, "pause", func() bool { return ch.Stats().Paused })
	if err := ch.Send(ctx, message.PayloadOutput, []byte("x")); err != nil {
		t.Fatal(err)
	}
	peer.sendData(0, message.PayloadOutput, []byte("hello"))
	if _, p, err := ch.Receive(ctx); err != nil || string(p) != "hello" { // the ack is owed once delivered
		t.Fatalf("Receive = %q, %v", p, err)
	}
	var data, ack bool
	for !(data && ack) {
		m := peer.read()
		switch m.Type {
		case message.Acknowledge:
			ack = ackSeq(t, m) == 0
		case message.InputStreamData:
			data = m.SequenceNumber == 1
		}
	}
}

func TestChannelClosed(t *testing.T) {
	ch, peer := rawPair(t, Config{Role: RoleClient})
	peer.sendData(0, message.PayloadOutput, []byte("last words"))
	out := "Your session timed out due to inactivity and has been terminated."
	payload, _ := json.Marshal(message.ChannelClosedPayload{SessionID: "s-1", Output: out, MessageType: "channel_closed", SchemaVersion: 1})
	peer.write(message.Message{Type: message.ChannelClosed, MessageID: message.NewID(), Payload: payload})
	select {
	case <-ch.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed")
	}
	var cce *ChannelClosedError
	if err := ch.Err(); !errors.As(err, &cce) || cce.Output != out || cce.SessionID != "s-1" {
		t.Fatalf("Err() = %v, want *ChannelClosedError with the service's Output", err)
	}
	// Data received before the close is still delivered, then the terminal error.
	ctx := context.Background()
	if _, p, err := ch.Receive(ctx); err != nil || string(p) != "last words" {
		t.Fatalf("Receive = %q, %v", p, err)
	}
	if _, _, err := ch.Receive(ctx); !errors.As(err, &cce) {
		t.Fatalf("Receive after close = %v", err)
	}
	if err := ch.Send(ctx, message.PayloadOutput, []byte("x")); !errors.As(err, &cce) {
		t.Fatalf("Send after close = %v", err)
	}
	select {
	case err := <-ch.TransportFailed():
		t.Fatalf("channel_closed reported as a transport failure: %v", err)
	default:
	}
}

// TestDuplicateReacked checks when each kind of data frame is acknowledged: in-order frames once Receive
// hands them over (§7.2: both official peers ack after their handler took the data), duplicates of delivered
// frames at once like the agent (§11.3), duplicates of undelivered ones not until delivery, frames ahead of
// the expected sequence number at once (they are held, not delivered).
func TestDuplicateReacked(t *testing.T) {
	ch, peer := rawPair(t, Config{Role: RoleAgent})
	ctx := context.Background()
	peer.sendData(0, message.PayloadOutput, []byte("a"))
	peer.readNone(100 * time.Millisecond) // not acked while undelivered
	peer.sendData(0, message.PayloadOutput, []byte("a"))
	peer.readNone(100 * time.Millisecond) // nor is its copy
	if _, p, err := ch.Receive(ctx); err != nil || string(p) != "a" {
		t.Fatalf("Receive = %q, %v", p, err)
	}
	if s := ackSeq(t, peer.read()); s != 0 {
		t.Fatalf("ack seq %d", s)
	}
	peer.sendData(0, message.PayloadOutput, []byte("a")) // duplicate: the plugin would stay silent (§7.2)
	if s := ackSeq(t, peer.read()); s != 0 {
		t.Fatalf("re-ack seq %d", s)
	}
	peer.sendData(2, message.PayloadOutput, []byte("c")) // ahead: buffered and acked
	if s := ackSeq(t, peer.read()); s != 2 {
		t.Fatalf("ack seq %d", s)
	}
	peer.sendData(1, message.PayloadOutput, []byte("b"))
	got, err := receiveN(ctx, ch, 2, nil)
	if err != nil || string(got) != "bc" {
		t.Fatalf("got %q, %v", got, err)
	}
	if s := ackSeq(t, peer.read()); s != 1 {
		t.Fatalf("ack seq %d", s)
	}
	peer.readNone(100 * time.Millisecond) // "c" was acked on arrival, not again on delivery
	if s := ch.Stats(); s.Duplicates != 2 || s.OutOfOrder != 1 || s.FramesReceived != 3 {
		t.Fatalf("stats %+v", s)
	}
}

// TestWindowCoversUndeliveredFrames: frames are acknowledged when delivered, so a sender whose window is no
// larger than the receiver's buffer stops at a consumer that stops, instead of overrunning it: no frame is
// dropped (with acks on arrival, the receiver held a full buffer while the sender had a window more in
// flight, and dropped it).
func TestWindowCoversUndeliveredFrames(t *testing.T) {
	const window = 64 << 10
	c, a := newPipePair(t, func(cfg *Config) { cfg.MaxInFlightBytes = window; cfg.ReceiveBufferBytes = window })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	data := randomBytes(t, 1<<20)
	errc := make(chan error, 1)
	var sent atomic.Bool
	go func() { err := sendAll(ctx, c, data, 5); sent.Store(true); errc <- err }()
	var got []byte
	for len(got) < len(data) {
		// Let the sender fill its window against a consumer that is not reading, then take a window's worth.
		waitFor(t, "a full window", func() bool {
			return c.Stats().InFlightBytes+message.HeaderSize+DefaultMaxPayloadSize > window || sent.Load()
		})
		part, err := receiveN(ctx, a, min(window/2, len(data)-len(got)), nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, part...)
	}
	sameBytes(t, "paused consumer", got, data)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if s := a.Stats(); s.DroppedFull != 0 {
		t.Fatalf("receiver dropped %d frames with a window no larger than its buffer: %+v", s.DroppedFull, s)
	}
}

// TestSlowConsumer fills the bounded receive queue and the out-of-order store behind it: further data is
// dropped without an ack (for a full buffer, or beyond the store's horizon) while acks of the channel's own
// frames keep being processed, and everything arrives once the consumer reads.
func TestSlowConsumer(t *testing.T) {
	c, a := newPipePair(t, func(cfg *Config) { cfg.ReceiveBufferBytes = 8 << 10; cfg.OutOfOrderBytes = 8 << 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	data := randomBytes(t, 64<<10)
	errc := make(chan error, 1)
	go func() { errc <- sendAll(ctx, c, data, 3) }()
	waitFor(t, "receiver drops", func() bool { s := a.Stats(); return s.DroppedFull+s.DroppedBeyondHorizon > 0 })
	// The agent's own sends are still acknowledged while its receive queue is full.
	if err := a.Send(ctx, message.PayloadOutput, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Receive(ctx); err != nil || string(p) != "ping" { // c acks it once delivered
		t.Fatalf("client Receive = %q, %v", p, err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := receiveN(ctx, a, len(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "slow consumer", got, data)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestBucketHoldsRateThroughStalls replays the agent's pace (1 KiB frames at 1 MB/s) on a simulated
// overloaded host: every pacing timer fires 20 ms late and the process is stopped for 400 ms every half
// second, between frames of one Send call as often as in timer waits. The average stays within 5% of the
// rate (credit capped at the 100 ms burst would lose about half of it), while a sender that was idle for
// seconds still gets one burst and no more.
func TestBucketHoldsRateThroughStalls(t *testing.T) {
	const rate, payload, late, stop = 1_000_000, 1024, 20 * time.Millisecond, 400 * time.Millisecond
	d := Config{Role: RoleAgent, Rate: rate, MaxPayloadSize: payload}.withDefaults()
	if d.Burst != rate/10 {
		t.Fatalf("default Burst = %d, want 100 ms of Rate (%d)", d.Burst, rate/10)
	}
	start := time.Unix(0, 0)
	now := start
	b := newTokenBucket(rate, d.Burst, now)
	sent, nextStop, inTimer := 0, start.Add(500*time.Millisecond), false
	for now.Sub(start) < 5*time.Second {
		if now.After(nextStop) {
			now = now.Add(stop)
			nextStop = nextStop.Add(500 * time.Millisecond)
		}
		if wait := b.take(now, payload, sent%(32<<10) != 0); wait > 0 {
			now = now.Add(wait + late)
			inTimer = !inTimer
			continue
		}
		sent += payload
	}
	if got := float64(sent) / now.Sub(start).Seconds(); got < 0.95*rate {
		t.Fatalf("%.0f B/s with late timers and 400 ms stops, want >= %.0f", got, 0.95*rate)
	}
	// The sender finishes its frame, then idles for 10 s: one burst passes at once, the next frame waits.
	for w := b.take(now, payload, true); w > 0; w = b.take(now, payload, true) {
		now = now.Add(w)
	}
	now = now.Add(10 * time.Second)
	for n := 0; n+payload <= int(d.Burst); n += payload {
		if wait := b.take(now, payload, n > 0); wait != 0 {
			t.Fatalf("after idling, frame at %d of the %d-byte burst waits %v", n, d.Burst, wait)
		}
	}
	if wait := b.take(now, payload, true); wait == 0 {
		t.Fatal("after idling, more than one burst passed without waiting")
	}
}

// blackHole is a transport that loses every frame written to it, as a websocket does in the moments before
// its drop is noticed; ReadFrame blocks until Close.
type blackHole struct {
	once   sync.Once
	closed chan struct{}
}

func newBlackHole() *blackHole { return &blackHole{closed: make(chan struct{})} }

func (b *blackHole) ReadFrame() ([]byte, error) { <-b.closed; return nil, ErrTransportClosed }
func (b *blackHole) WriteFrame([]byte) error {
	select {
	case <-b.closed:
		return ErrTransportClosed
	default:
		return nil
	}
}
func (b *blackHole) Close() error { b.once.Do(func() { close(b.closed) }); return nil }

// TestRandomOrderResendRecovers: a peer with a window larger than the store (the real agent buffers
// 100,000 frames) lost its whole window to a dropped transport, and after the reconnect resends every
// unacknowledged frame at once in random order (ResendRandom, §14). The receiver, with default settings,
// holds what lies within its horizon, drops the rest unheld and unacknowledged, and delivers everything in
// order within two or three resend rounds. With a 1 MiB store that acknowledged and kept whatever came
// first, far-ahead frames filled it and the next expected ones were dropped round after round: the transfer
// did not finish in a minute.
func TestRandomOrderResendRecovers(t *testing.T) {
	const frames = 14_000 // more than the horizon (10,000), so frames beyond it are dropped and resent
	payload := DefaultMaxPayloadSize
	sender := mustNew(t, Config{Role: RoleAgent, ResendOrder: ResendRandom, MaxInFlightBytes: frames * (message.HeaderSize + payload)})
	receiver := mustNew(t, Config{Role: RoleClient})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	lost := newBlackHole()
	sender.Attach(lost)
	data := randomBytes(t, frames*payload)
	if err := sender.Send(ctx, message.PayloadOutput, data); err != nil { // one frame per KiB, all in flight
		t.Fatal(err)
	}
	if s := sender.Stats(); s.InFlightFrames != frames {
		t.Fatalf("%d frames in flight before the reconnect, want %d", s.InFlightFrames, frames)
	}
	resentBefore := sender.Stats().Retransmits

	start := time.Now()
	x, y := Pipe(0)
	receiver.Attach(x)
	sender.Attach(y) // resends the window at once, shuffled
	got, err := receiveN(ctx, receiver, len(data), nil)
	if err != nil {
		t.Fatalf("random-order resend of %d frames: %v (receiver %+v)", frames, err, receiver.Stats())
	}
	sameBytes(t, "after a random-order resend", got, data)
	if err := sender.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	s, r := sender.Stats(), receiver.Stats()
	resent := s.Retransmits - resentBefore
	t.Logf("recovered %d frames resent in random order in %v: %d frames resent after the reconnect (%.2f windows); receiver held %d out of order, dropped %d beyond the horizon and %d for full buffers",
		frames, took.Round(time.Millisecond), resent, float64(resent)/frames, r.OutOfOrder, r.DroppedBeyondHorizon, r.DroppedFull)
	if r.DroppedBeyondHorizon == 0 {
		t.Errorf("no frame was dropped beyond the horizon with %d frames resent at once", frames)
	}
	// The first round resends the window; one more (the frames beyond the horizon, about 4,000) should
	// do, with slack for frames that waited for the consumer past a retransmission timeout.
	if resent > 2*frames {
		t.Errorf("%d frames resent after the reconnect, more than two windows (%d): rounds of resends did not progress", resent, 2*frames)
	}
	if took > 20*time.Second {
		t.Errorf("recovery took %v, want seconds", took)
	}
}

// TestOutOfOrderHorizon: a frame is held (and acknowledged, §7.2) only within the horizon:
// MaxOutOfOrderFrames ahead of the expected one, and no further than the byte bound holds at the largest
// frame received. Beyond it the frame is dropped without an ack and counted, and the peer resends it.
func TestOutOfOrderHorizon(t *testing.T) {
	const frame = message.HeaderSize + DefaultMaxPayloadSize
	ch, peer := rawPair(t, Config{Role: RoleClient, MaxOutOfOrderFrames: 5, OutOfOrderBytes: 10 * frame})
	kib := make([]byte, DefaultMaxPayloadSize)
	peer.sendData(6, message.PayloadOutput, kib) // 6 ahead of expected 0: beyond the 5-frame horizon
	peer.sendData(5, message.PayloadOutput, kib) // at the horizon: held and acknowledged
	if s := ackSeq(t, peer.read()); s != 5 {
		t.Fatalf("ack of seq %d, want 5 (6 is beyond the horizon and must not be acknowledged)", s)
	}
	if s := ch.Stats(); s.DroppedBeyondHorizon != 1 || s.OutOfOrder != 1 {
		t.Fatalf("stats %+v, want 1 dropped beyond the horizon and 1 held", s)
	}
	// Frames four times the size: the 10-frame byte bound now holds only 2 of them, one slot being the
	// expected frame's, so the horizon is 1.
	big := make([]byte, 4*frame-message.HeaderSize)
	peer.sendData(3, message.PayloadOutput, big)
	peer.sendData(1, message.PayloadOutput, big)
	if s := ackSeq(t, peer.read()); s != 1 {
		t.Fatalf("ack of seq %d, want 1 (3 is beyond the shrunken horizon)", s)
	}
	if s := ch.Stats(); s.DroppedBeyondHorizon != 2 || s.OutOfOrder != 2 {
		t.Fatalf("stats %+v, want 2 dropped beyond the horizon and 2 held", s)
	}
	// The expected frame arrives: 0 and 1 are delivered; 5, held since before, follows once 2–4 do.
	peer.sendData(0, message.PayloadOutput, []byte("x"))
	ctx := context.Background()
	for _, want := range []int{1, len(big)} {
		if _, p, err := ch.Receive(ctx); err != nil || len(p) != want {
			t.Fatalf("Receive = %d bytes, %v; want %d", len(p), err, want)
		}
	}
	for seq := int64(2); seq <= 4; seq++ {
		peer.sendData(seq, message.PayloadOutput, []byte{byte(seq)})
	}
	for _, want := range []int{1, 1, 1, len(kib)} {
		if _, p, err := ch.Receive(ctx); err != nil || len(p) != want {
			t.Fatalf("Receive = %d bytes, %v; want %d", len(p), err, want)
		}
	}
}

// TestPausedSince: Stats.PausedSince is when publication was paused, kept through repeated
// pause_publication, and zero once the pause ends (start_publication, or inbound data or ack, §10.1).
func TestPausedSince(t *testing.T) {
	clk := newFakeClock()
	ch, peer := rawPair(t, Config{Role: RoleClient, Clock: clk})
	if s := ch.Stats(); s.Paused || !s.PausedSince.IsZero() {
		t.Fatalf("before any pause: %+v", s)
	}
	pause := func() { peer.write(message.Message{Type: message.PausePublication, MessageID: message.NewID()}) }
	pause()
	waitFor(t, "pause", func() bool { return ch.Stats().Paused })
	since := clk.Now()
	if s := ch.Stats(); !s.PausedSince.Equal(since) {
		t.Fatalf("PausedSince %v, want %v", s.PausedSince, since)
	}
	clk.Advance(5 * time.Second)
	pause() // the service repeating itself does not restart the pause
	// Frames are handled in order: once the unknown one after it was counted, the repeated pause was seen.
	peer.write(message.Message{Type: "not_a_type", MessageID: message.NewID()})
	waitFor(t, "the frame after the repeated pause", func() bool { return ch.Stats().UnknownFrames == 1 })
	if s := ch.Stats(); !s.Paused || !s.PausedSince.Equal(since) {
		t.Fatalf("after a repeated pause_publication: Paused %v PausedSince %v, want the first pause's %v", s.Paused, s.PausedSince, since)
	}
	peer.write(message.Message{Type: message.StartPublication, MessageID: message.NewID()})
	waitFor(t, "start_publication", func() bool { return !ch.Stats().Paused })
	if s := ch.Stats(); !s.PausedSince.IsZero() {
		t.Fatalf("after start_publication PausedSince %v, want zero", s.PausedSince)
	}
	pause()
	waitFor(t, "second pause", func() bool { return ch.Stats().Paused })
	if s := ch.Stats(); !s.PausedSince.Equal(clk.Now()) {
		t.Fatalf("second pause PausedSince %v, want %v", s.PausedSince, clk.Now())
	}
	peer.sendData(0, message.PayloadOutput, []byte("data ends a pause"))
	waitFor(t, "inbound data", func() bool { return !ch.Stats().Paused })
	if s := ch.Stats(); !s.PausedSince.IsZero() {
		t.Fatalf("after inbound data PausedSince %v, want zero", s.PausedSince)
	}
}

// TestTimeoutResendsLowestUnacked: every resend round includes the lowest unacknowledged frame, the one
// the peer cannot deliver without, even when it was sent after the overdue ones (a shuffled resend, or a
// peer that dropped it for a full buffer). Passing it over while the timeout doubles each round left an
// emulated download stalled for 30 s.
func TestTimeoutResendsLowestUnacked(t *testing.T) {
	clk := newFakeClock()
	ch, peer := rawPair(t, Config{Role: RoleClient, Clock: clk})
	ctx := context.Background()
	t0 := clk.Now()
	send := func(b byte) {
		t.Helper()
		if err := ch.Send(ctx, message.PayloadOutput, []byte{b}); err != nil {
			t.Fatal(err)
		}
		peer.read()
	}
	send(0) // seq 0 at t0
	clk.Advance(100 * time.Millisecond)
	send(1) // seq 1 at t0+100ms
	// Round 1 at t0+200ms: seq 0 is overdue (seq 1 is not) and resent; the timeout doubles to 400 ms.
	clk.waitTimerAt(t, t0.Add(200*time.Millisecond))
	clk.Advance(100 * time.Millisecond)
	if m := peer.read(); m.SequenceNumber != 0 {
		t.Fatalf("round 1 resent seq %d, want 0", m.SequenceNumber)
	}
	waitFor(t, "round 1 counted", func() bool { return ch.Stats().Retransmits == 1 })
	// Round 2 at t0+500ms, for seq 1 (sent at t0+100ms). Seq 0, resent at t0+200ms, is not overdue, but it
	// is the lowest unacknowledged frame: it goes first.
	clk.waitTimerAt(t, t0.Add(500*time.Millisecond))
	clk.Advance(300 * time.Millisecond)
	for _, want := range []int64{0, 1} {
		if m := peer.read(); m.SequenceNumber != want {
			t.Fatalf("round 2 resent seq %d, want %d", m.SequenceNumber, want)
		}
	}
	waitFor(t, "round 2 counted", func() bool { return ch.Stats().Retransmits == 3 })
}

// TestExpectedFrameWaitsForRoom: the expected frame that finds the receive queue full waits in the
// out-of-order store, unacknowledged, instead of being dropped; Receive delivers it once there is room, and
// only then is it acknowledged.
func TestExpectedFrameWaitsForRoom(t *testing.T) {
	const frame = message.HeaderSize + 100
	ch, peer := rawPair(t, Config{Role: RoleClient, ReceiveBufferBytes: frame})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	peer.sendData(0, message.PayloadOutput, make([]byte, 100)) // fills the receive queue
	peer.sendData(1, message.PayloadOutput, make([]byte, 100)) // expected next: waits in the store
	peer.sendData(1, message.PayloadOutput, make([]byte, 100)) // its copy: ignored, the ack follows delivery
	peer.sendData(2, message.PayloadOutput, []byte("ahead"))   // held ahead, acknowledged at once
	if s := ackSeq(t, peer.read()); s != 2 {
		t.Fatalf("first ack for seq %d, want 2 (0 and 1 are not delivered yet)", s)
	}
	for i, want := range []int{100, 100, 5} {
		if _, p, err := ch.Receive(ctx); err != nil || len(p) != want {
			t.Fatalf("Receive %d = %d bytes, %v; want %d", i, len(p), err, want)
		}
		if i < 2 {
			if s := ackSeq(t, peer.read()); s != int64(i) {
				t.Fatalf("ack for seq %d after delivering seq %d", s, i)
			}
		}
	}
	if s := ch.Stats(); s.DroppedFull != 0 || s.Duplicates != 1 {
		t.Fatalf("stats %+v, want no drop and one duplicate", s)
	}
}
