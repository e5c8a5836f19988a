package datachannel

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// fakeClock is a manually advanced Clock with Go 1.23 timer semantics (Stop/Reset discard stale fires).
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{}
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1_700_000_000, 0), changed: make(chan struct{})}
}

type fakeTimer struct {
	c      *fakeClock
	ch     chan time.Time
	when   time.Time
	active bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) Timer {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	c.mu.Lock()
	c.timers = append(c.timers, t)
	c.mu.Unlock()
	t.Reset(d)
	return t
}

func (c *fakeClock) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := t.active
	t.active = false
	select {
	case <-t.ch:
	default:
	}
	t.c.signal()
	return was
}

func (t *fakeTimer) Reset(d time.Duration) {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	select {
	case <-t.ch:
	default:
	}
	t.when = t.c.now.Add(d)
	t.active = true
	if d <= 0 {
		t.active = false
		t.ch <- t.c.now
	}
	t.c.signal()
}

// Advance moves time forward and fires due timers.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, t := range c.timers {
		if t.active && !t.when.After(c.now) {
			t.active = false
			select {
			case t.ch <- c.now:
			default:
			}
		}
	}
	c.signal()
}

// pending returns the deadlines of active timers.
func (c *fakeClock) pending() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []time.Time
	for _, t := range c.timers {
		if t.active {
			out = append(out, t.when)
		}
	}
	return out
}

// waitUntil blocks until cond holds (evaluated whenever a timer changes) or fails the test after 10 s.
func (c *fakeClock) waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Millisecond): // cond may depend on state other than timers
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitTimerAt waits until an active timer has exactly this deadline.
func (c *fakeClock) waitTimerAt(t *testing.T, when time.Time) {
	t.Helper()
	c.waitUntil(t, "timer at "+when.Format(time.StampMilli), func() bool {
		for _, p := range c.pending() {
			if p.Equal(when) {
				return true
			}
		}
		return false
	})
}

// waitFor polls cond with a deadline: for state owned by other goroutines (not used to order events).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// lossyTransport drops and reorders written frames (data and acks alike) with the given probabilities.
type lossyTransport struct {
	Transport
	mu              sync.Mutex
	rng             *mrand.Rand
	drop, reorder   float64
	held            []byte
	dropped, swaped int
}

func newLossy(t Transport, seed uint64, drop, reorder float64) *lossyTransport {
	return &lossyTransport{Transport: t, rng: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), drop: drop, reorder: reorder}
}

func (l *lossyTransport) WriteFrame(f []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.rng.Float64()
	if r < l.drop {
		l.dropped++
		return nil
	}
	if l.held == nil && r < l.drop+l.reorder {
		l.held = append([]byte(nil), f...)
		l.swaped++
		return nil
	}
	if err := l.Transport.WriteFrame(f); err != nil {
		return err
	}
	if l.held != nil {
		h := l.held
		l.held = nil
		return l.Transport.WriteFrame(h)
	}
	return nil
}

func mustNew(t testing.TB, cfg Config) *Channel {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sendAll sends data in random-sized Output chunks.
func sendAll(ctx context.Context, ch *Channel, data []byte, seed uint64) error {
	rng := mrand.New(mrand.NewPCG(seed, 1))
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(8000))
		if err := ch.Send(ctx, message.PayloadOutput, data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// receiveN reads Output payloads until n bytes arrived and returns them.
func receiveN(ctx context.Context, ch *Channel, n int, progress func(int)) ([]byte, error) {
	var buf bytes.Buffer
	for buf.Len() < n {
		pt, p, err := ch.Receive(ctx)
		if err != nil {
			return buf.Bytes(), fmt.Errorf("after %d bytes: %w", buf.Len(), err)
		}
		if pt != message.PayloadOutput {
			return buf.Bytes(), fmt.Errorf("unexpected payload type %s", pt)
		}
		buf.Write(p)
		if progress != nil {
			progress(buf.Len())
		}
	}
	return buf.Bytes(), nil
}

func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes (sha256 %x), want %d bytes (sha256 %x)", what, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
	}
}

// rawPeer drives the far end of a Pipe frame by frame, for protocol-level assertions. One goroutine reads
// the transport for the peer's lifetime, so a read that timed out (readNone) cannot swallow a later frame.
type rawPeer struct {
	t      *testing.T
	tr     Transport
	typ    message.MessageType // type of data frames the peer sends
	seq    int64
	once   sync.Once
	frames chan peerFrame
}

type peerFrame struct {
	f   []byte
	err error
}

func (p *rawPeer) next() <-chan peerFrame {
	p.once.Do(func() {
		p.frames = make(chan peerFrame)
		go func() {
			for {
				f, err := p.tr.ReadFrame()
				p.frames <- peerFrame{f, err}
				if err != nil {
					return
				}
			}
		}()
	})
	return p.frames
}

func (p *rawPeer) read() message.Message {
	p.t.Helper()
	select {
	case r := <-p.next():
		if r.err != nil {
			p.t.Fatalf("peer read: %v", r.err)
		}
		m, err := message.Decode(r.f)
		if err != nil {
			p.t.Fatalf("peer decode: %v", err)
		}
		return m
	case <-time.After(10 * time.Second):
		p.t.Fatal("peer read timed out")
	}
	return message.Message{}
}

// readNone asserts that no frame arrives within d (absence can only be checked over a bounded window).
func (p *rawPeer) readNone(d time.Duration) {
	p.t.Helper()
	select {
	case r := <-p.next():
		m, _ := message.Decode(r.f)
		p.t.Fatalf("unexpected frame %s seq %d (read error %v)", m.Type, m.SequenceNumber, r.err)
	case <-time.After(d):
	}
}

func (p *rawPeer) write(m message.Message) {
	p.t.Helper()
	if m.SchemaVersion == 0 {
		m.SchemaVersion = 1
	}
	if m.CreatedDate == 0 {
		m.CreatedDate = uint64(time.Now().UnixMilli())
	}
	b, err := m.MarshalBinary()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.tr.WriteFrame(b); err != nil {
		p.t.Fatalf("peer write: %v", err)
	}
}

func (p *rawPeer) writeRaw(b []byte) {
	p.t.Helper()
	if err := p.tr.WriteFrame(b); err != nil {
		p.t.Fatalf("peer write: %v", err)
	}
}

func (p *rawPeer) sendData(seq int64, pt message.PayloadType, payload []byte) {
	p.write(message.Message{Type: p.typ, SequenceNumber: seq, MessageID: message.NewID(), PayloadType: pt, Payload: payload})
}

func (p *rawPeer) ack(m message.Message) {
	a := message.NewAck(&m, uint64(time.Now().UnixMilli()))
	p.write(a)
}

func ackSeq(t *testing.T, m message.Message) int64 {
	t.Helper()
	if m.Type != message.Acknowledge {
		t.Fatalf("expected acknowledge, got %s seq %d", m.Type, m.SequenceNumber)
	}
	a, err := message.DecodeAck(m.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return a.AcknowledgedMessageSequenceNumber
}
