package datachannel

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// maxAckQueue bounds acks waiting for the writer. Beyond it an ack is dropped: the peer retransmits the
// frame and the duplicate is re-acknowledged (§11.3), so a flood of duplicates cannot grow memory.
const maxAckQueue = 4096

// outFrame is one sent, not yet acknowledged data frame. It stays in unacked until its ack arrives: frames
// are never evicted (the plugin's 10 000-frame eviction corrupts streams, §7.3); the window bounds them.
type outFrame struct {
	seq      int64
	buf      *[]byte // encoded frame, from the channel's pool
	size     int     // encoded size, counted against the window
	payload  int
	lastSent time.Time
	sent     bool // written at least once
	retrans  bool // written more than once: its ack is ambiguous (Karn's rule)
	acked    bool
	queued   bool // in sendQ
	writers  int  // writer goroutines currently writing buf
	inTiming bool
	prev     *outFrame // timing list, ordered by lastSent
	next     *outFrame
}

type recvItem struct {
	pt   message.PayloadType
	p    []byte
	cost int
	seq  int64
	// ackOwed says the frame's acknowledgement, which names seq and id (§7.1), is owed once Receive hands
	// the payload over (handleData).
	ackOwed bool
	id      message.ID
}

// attachment is one transport's tenure under the channel.
type attachment struct {
	t    Transport
	done chan struct{}
	once sync.Once
}

func (a *attachment) end() {
	a.once.Do(func() {
		close(a.done)
		_ = a.t.Close()
	})
}

// notifier is a broadcast condition for use under Channel.mu that works with select: waiters take wait()
// under the lock and block on it after unlocking; notify() wakes them all. It allocates only when waited on.
type notifier struct{ ch chan struct{} }

func (n *notifier) wait() <-chan struct{} {
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// Channel is one end of a reliable, ordered data channel (§7). See the package doc for its life cycle.
//
// Goroutines: per attached transport one reader (decodes frames, handles acks and data, queues acks; it
// never blocks on the consumer) and one writer (the only caller of WriteFrame); per channel one
// retransmission scheduler with a single timer armed for the earliest deadline.
type Channel struct {
	cfg      Config
	log      *slog.Logger
	clock    Clock
	sendType message.MessageType
	recvType message.MessageType
	tf       chan error
	die      chan struct{}
	rearm    chan struct{}
	dataPool sync.Pool
	// smallPool holds buffers for frames of at most smallFrameCap bytes (smux SYN/FIN/NOP frames, short
	// writes). The window counts encoded bytes, so without it a window full of tiny frames would pin one
	// MaxPayloadSize buffer each: with 32 KiB payloads, the ~8,000 SYN frames in flight while 10,000
	// connections open would hold ~260 MB.
	smallPool sync.Pool
	ackPool   sync.Pool

	sendSem chan struct{} // serialises Send (a semaphore, so waiting honours ctx): one call's frames are consecutive

	mu          sync.Mutex
	err         error
	cur         *attachment
	paused      bool
	pausedSince time.Time // when paused became true; zero while not paused
	stats       Stats

	// Send side (§7.1, §7.3).
	nextSeq    int64
	baseSeq    int64 // every seq below it is acknowledged
	unacked    map[int64]*outFrame
	inflight   int
	sendQ      []*outFrame
	ackQ       []*[]byte
	ackScratch []byte
	timingHead *outFrame
	timingTail *outFrame
	rtt        rttEstimator
	bucket     *tokenBucket
	ackNotify  notifier
	writerWake notifier

	// Receive side (§7.2).
	expected   int64
	delivered  int64 // every seq below it has been handed to Receive's caller
	recvQ      []recvItem
	recvHead   int
	recvBytes  int
	ooo        map[int64]recvItem
	oooBytes   int
	recvNotify notifier
	// maxRecvCost is the largest encoded data frame received, at least the service's (header + 1 KiB): the
	// frame size the out-of-order horizon is computed for.
	maxRecvCost int
}

// New returns a Channel with no transport: Send queues up to the window until Attach.
func New(cfg Config) (*Channel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Channel{
		cfg:      cfg,
		log:      cfg.Logger.With("role", cfg.Role.String()),
		clock:    cfg.Clock,
		sendType: cfg.Role.sendType(),
		recvType: cfg.Role.recvType(),
		tf:       make(chan error, 1),
		die:      make(chan struct{}),
		rearm:    make(chan struct{}, 1),
		sendSem:  make(chan struct{}, 1),
		unacked:  make(map[int64]*outFrame),
		ooo:      make(map[int64]recvItem),
		rtt:      newRTTEstimator(),

		maxRecvCost: message.HeaderSize + DefaultMaxPayloadSize,
	}
	c.bucket = newTokenBucket(cfg.Rate, cfg.Burst, c.clock.Now())
	frameCap := message.HeaderSize + cfg.MaxPayloadSize
	c.dataPool.New = func() any { b := make([]byte, 0, frameCap); return &b }
	c.smallPool.New = func() any { b := make([]byte, 0, smallFrameCap); return &b }
	c.ackPool.New = func() any { b := make([]byte, 0, 320); return &b }
	go c.schedule()
	return c, nil
}

// Attach starts the channel on t, replacing (and closing) any current transport. Sequence numbers continue
// and every unacknowledged frame is retransmitted on t, in sequence order (§7.1, §10.3 step 4). Attaching to
// a finished channel closes t.
func (c *Channel) Attach(t Transport) {
	a := &attachment{t: t, done: make(chan struct{})}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		_ = t.Close()
		return
	}
	old := c.cur
	c.cur = a
	c.stats.Transports++
	// The stall backoff measured the old path; the new one starts at the §7.3 cap, so that a frame the new
	// transport loses is resent within a second rather than after the old path's backoff.
	c.rtt.progress()
	c.queueWindow()
	c.mu.Unlock()
	if old != nil {
		old.end()
	}
	go c.readLoop(a)
	go c.writeLoop(a)
	c.kick()
}

// TransportFailed delivers the error of each transport that dies under the channel (read or write error,
// dead link). The owner then resumes the session and Attaches a new transport. A transport replaced by
// Attach or closed by Close is not reported. At most one error is pending: an unread one is replaced.
func (c *Channel) TransportFailed() <-chan error { return c.tf }

func (c *Channel) failTransport(a *attachment, err error) {
	c.mu.Lock()
	current := c.cur == a
	if current {
		c.cur = nil
		c.stats.TransportFailures++
	}
	dead := c.err != nil
	c.mu.Unlock()
	a.end()
	if !current || dead {
		return
	}
	c.log.Debug("Transport failed", "err", err)
	for {
		select {
		case c.tf <- err:
			return
		default:
		}
		select {
		case <-c.tf:
		default:
		}
	}
}

// Send sends p as sequenced data frames of payload type pt. Output payloads are split into frames of at most
// MaxPayloadSize bytes (an empty Output payload sends nothing, like the agent, §5); other payload types
// (handshake JSON, flags) always travel as one frame. Send blocks while the in-flight window is full or the
// rate limiter has no tokens, and returns when every frame is queued for the transport (not when it is
// acknowledged; see Flush). While the service paused publication (§10.1) frames are queued but not written,
// so Send blocks once the window fills. p may be reused after Send returns.
func (c *Channel) Send(ctx context.Context, pt message.PayloadType, p []byte) error {
	select {
	case c.sendSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case <-c.die:
		return c.Err()
	}
	defer func() { <-c.sendSem }()
	if pt != message.PayloadOutput {
		return c.sendFrame(ctx, pt, p, false)
	}
	for first := true; len(p) > 0; first = false {
		n := min(len(p), c.cfg.MaxPayloadSize)
		if err := c.sendFrame(ctx, pt, p[:n], !first); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// sendFrame waits for window and rate, then encodes and queues one frame. Called with sendSem held, which
// makes nextSeq stable outside mu. backlogged says the payload continues the previous frame's Send call.
func (c *Channel) sendFrame(ctx context.Context, pt message.PayloadType, payload []byte, backlogged bool) error {
	size := message.HeaderSize + len(payload)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return c.err
		}
		if c.inflight > 0 && c.inflight+size > c.cfg.MaxInFlightBytes {
			w := c.ackNotify.wait()
			c.mu.Unlock()
			select {
			case <-w:
			case <-ctx.Done():
			case <-c.die:
			}
			continue
		}
		wait := c.bucket.take(c.clock.Now(), len(payload), backlogged)
		c.mu.Unlock()
		if wait == 0 {
			break
		}
		t := c.clock.NewTimer(wait)
		select {
		case <-t.C():
		case <-ctx.Done():
		case <-c.die:
		}
		t.Stop()
	}

	seq := c.nextSeq // stable: only Send writes it, under sendSem
	var flags uint64
	if c.cfg.Role == RoleAgent && seq == 0 {
		flags = message.FlagSYN // §6.4
	}
	m := message.Message{
		Type:           c.sendType,
		SchemaVersion:  1,
		CreatedDate:    uint64(c.clock.Now().UnixMilli()),
		SequenceNumber: seq,
		Flags:          flags,
		MessageID:      message.NewID(),
		PayloadType:    pt,
		Payload:        payload,
	}
	buf := c.getFrameBuf(size)
	enc, err := m.AppendBinary((*buf)[:0])
	if err != nil {
		c.putFrameBuf(buf)
		return fmt.Errorf("datachannel: encode frame: %w", err)
	}
	*buf = enc
	f := &outFrame{seq: seq, buf: buf, size: size, payload: len(payload), queued: true}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		c.putFrameBuf(buf)
		return c.err
	}
	c.nextSeq++
	c.unacked[seq] = f
	c.inflight += size
	c.sendQ = append(c.sendQ, f)
	c.writerWake.notify()
	return nil
}

// Receive returns the next in-order data payload and its payload type; the payload is owned by the caller.
// After the channel ends, payloads already received are still returned, then the terminal error.
func (c *Channel) Receive(ctx context.Context) (message.PayloadType, []byte, error) {
	for {
		c.mu.Lock()
		if c.recvHead < len(c.recvQ) {
			it := c.recvQ[c.recvHead]
			c.recvQ[c.recvHead] = recvItem{}
			c.recvHead++
			if c.recvHead == len(c.recvQ) {
				c.recvQ, c.recvHead = c.recvQ[:0], 0
			} else if c.recvHead > 64 && c.recvHead*2 > len(c.recvQ) {
				n := copy(c.recvQ, c.recvQ[c.recvHead:])
				clear(c.recvQ[n:])
				c.recvQ, c.recvHead = c.recvQ[:n], 0
			}
			c.recvBytes -= it.cost
			c.delivered = it.seq + 1
			if it.ackOwed {
				c.queueAck(it.seq, it.id)
			}
			c.drainOutOfOrder()
			c.mu.Unlock()
			return it.pt, it.p, nil
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return 0, nil, err
		}
		w := c.recvNotify.wait()
		c.mu.Unlock()
		select {
		case <-w:
		case <-c.die:
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		}
	}
}

// Flush blocks until every frame sent so far has been acknowledged, the channel ends, or ctx is done.
func (c *Channel) Flush(ctx context.Context) error {
	for {
		c.mu.Lock()
		if len(c.unacked) == 0 {
			c.mu.Unlock()
			return nil
		}
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return err
		}
		w := c.ackNotify.wait()
		c.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Done is closed when the channel ends: Close, or channel_closed from the service.
func (c *Channel) Done() <-chan struct{} { return c.die }

// Err is nil while the channel is open; afterwards ErrClosed, or a *ChannelClosedError carrying the
// service's message (§10.2).
func (c *Channel) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the channel and closes its transport. Pending Send calls return ErrClosed; Receive returns
// what was already received, then ErrClosed.
func (c *Channel) Close() error {
	c.terminate(ErrClosed)
	return nil
}

func (c *Channel) terminate(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	close(c.die)
	a := c.cur
	c.cur = nil
	c.ackNotify.notify()
	c.recvNotify.notify()
	c.writerWake.notify()
	c.mu.Unlock()
	if a != nil {
		a.end()
	}
}

// Stats returns a snapshot of the counters.
func (c *Channel) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.InFlightBytes = c.inflight
	s.InFlightFrames = len(c.unacked)
	s.SRTT, s.RTTVar, s.RTO = c.rtt.srtt, c.rtt.rttvar, c.rtt.effective()
	s.Paused, s.PausedSince = c.paused, c.pausedSince
	return s
}

// Role returns the role the channel was created with.
func (c *Channel) Role() Role { return c.cfg.Role }

// MaxPayloadSize returns the largest Output payload of one frame; Send splits larger writes at it.
func (c *Channel) MaxPayloadSize() int { return c.cfg.MaxPayloadSize }

// kick asks the scheduler to recompute its deadline.
func (c *Channel) kick() {
	select {
	case c.rearm <- struct{}{}:
	default:
	}
}

// resume clears a pause (§10.1: start_publication, inbound data or ack). The peer is back: with
// ResendRandom the whole window goes out again at once; otherwise frames are resent as their timeouts
// expire. Called with mu held.
func (c *Channel) resume() {
	if c.paused {
		c.paused = false
		c.pausedSince = time.Time{}
		if c.cfg.ResendOrder == ResendRandom {
			c.queueWindow()
		}
		c.writerWake.notify()
		c.kick()
	}
}

// queueWindow replaces the send queue with every unacknowledged frame, written or not: in sequence order,
// or shuffled for ResendRandom. Frames leave the timing list until written again. Called with mu held.
func (c *Channel) queueWindow() {
	for _, f := range c.sendQ {
		f.queued = false
		c.maybeRelease(f)
	}
	c.sendQ = c.sendQ[:0]
	for s := c.baseSeq; s < c.nextSeq; s++ {
		if f := c.unacked[s]; f != nil {
			c.timingRemove(f)
			f.queued = true
			c.sendQ = append(c.sendQ, f)
		}
	}
	if c.cfg.ResendOrder == ResendRandom {
		rand.Shuffle(len(c.sendQ), func(i, j int) { c.sendQ[i], c.sendQ[j] = c.sendQ[j], c.sendQ[i] })
	}
	c.writerWake.notify()
}

// maybeRelease returns an acknowledged frame's buffer to the pool once no writer uses it. Called with mu held.
func (c *Channel) maybeRelease(f *outFrame) {
	if f.acked && f.writers == 0 && !f.queued && f.buf != nil {
		c.putFrameBuf(f.buf)
		f.buf = nil
	}
}

// smallFrameCap is the capacity of smallPool's buffers: a header and up to 256 payload bytes.
const smallFrameCap = message.HeaderSize + 256

// getFrameBuf returns a pooled buffer able to hold an encoded frame of size bytes without growing.
func (c *Channel) getFrameBuf(size int) *[]byte {
	if size <= smallFrameCap {
		return c.smallPool.Get().(*[]byte)
	}
	return c.dataPool.Get().(*[]byte)
}

// putFrameBuf returns a buffer to the pool its capacity came from.
func (c *Channel) putFrameBuf(b *[]byte) {
	if cap(*b) <= smallFrameCap {
		c.smallPool.Put(b)
		return
	}
	c.dataPool.Put(b)
}

func (c *Channel) timingPush(f *outFrame) {
	f.inTiming = true
	f.prev, f.next = c.timingTail, nil
	if c.timingTail != nil {
		c.timingTail.next = f
	} else {
		c.timingHead = f
	}
	c.timingTail = f
}

func (c *Channel) timingRemove(f *outFrame) {
	if !f.inTiming {
		return
	}
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		c.timingHead = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		c.timingTail = f.prev
	}
	f.prev, f.next, f.inTiming = nil, nil, false
}

// schedule is the retransmission scheduler: one timer, armed for the earliest resend deadline. It replaces
// the plugin's 100 ms polling loop that resent only the oldest frame (§7.3).
//
// A timer that fires more than ClockGranularity late means this process was stopped or starved, and acks
// that arrived meanwhile may still wait in the transport unread; resending then would repeat the whole
// window for nothing (a loaded host can stop the process for hundreds of milliseconds at a time). Such a
// deadline gets one grace period of ClockGranularity for the readers to catch up, and only one, so a
// lost frame is still resent on a machine whose timers are always late.
func (c *Channel) schedule() {
	t := c.clock.NewTimer(time.Hour)
	t.Stop()
	var due time.Time // when t fires; zero while stopped
	graced := false
	for {
		fired := false
		select {
		case <-c.die:
			t.Stop()
			return
		case <-c.rearm:
		case <-t.C():
			fired = true
		}
		if fired && !graced && !due.IsZero() && c.clock.Now().Sub(due) > ClockGranularity {
			graced = true
			due = c.clock.Now().Add(ClockGranularity)
			t.Reset(ClockGranularity)
			continue
		}
		graced = false
		d := c.checkRetransmit()
		t.Stop()
		due = time.Time{}
		if d >= 0 {
			due = c.clock.Now().Add(d)
			t.Reset(d)
		}
	}
}

// checkRetransmit queues every overdue frame for resending (not only the oldest) and returns the time to
// the next deadline, or -1 when nothing is outstanding or sending is suspended (no transport, paused).
// Each round that resends counts as a timeout without ack progress (handleAck resets that count), so
// against a peer that acknowledges nothing the rounds come exponentially less often, up to one per
// MaxRetransmitBackoff.
func (c *Channel) checkRetransmit() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || c.cur == nil || c.paused {
		return -1
	}
	now := c.clock.Now()
	rto := c.rtt.effective()
	overdue := 0
	if f := c.timingHead; f != nil && now.Sub(f.lastSent) >= rto {
		// The peer can deliver nothing before the lowest unacknowledged frame, so every round resends it
		// first, even if it was sent after the overdue ones: after a resend in random order, or when the
		// peer dropped it for a full buffer, it is not the oldest sent, and with the timeout doubling each
		// round it would be passed over until the timeout reached MaxRetransmitBackoff.
		if low := c.unacked[c.baseSeq]; low != nil && low.inTiming {
			c.timingRemove(low)
			low.queued = true
			c.sendQ = append(c.sendQ, low)
			overdue++
		}
	}
	for f := c.timingHead; f != nil && now.Sub(f.lastSent) >= rto; f = c.timingHead {
		c.timingRemove(f)
		f.queued = true
		c.sendQ = append(c.sendQ, f)
		overdue++
	}
	if overdue > 0 {
		c.rtt.timedOut()
		c.writerWake.notify()
		c.log.Debug("Retransmitting overdue frames", "frames", overdue, "rto", rto)
	}
	if c.timingHead == nil {
		return -1
	}
	return max(0, c.timingHead.lastSent.Add(c.rtt.effective()).Sub(now))
}

// writeLoop is the only writer of a's transport: acks first (they unblock the peer's window), then data
// frames in queue order. While paused it writes acks only (§10.1).
func (c *Channel) writeLoop(a *attachment) {
	for {
		var (
			buf *[]byte
			f   *outFrame
		)
		c.mu.Lock()
		for {
			if c.cur != a {
				c.mu.Unlock()
				return
			}
			if len(c.ackQ) > 0 {
				buf = c.ackQ[0]
				c.ackQ[0] = nil
				c.ackQ = c.ackQ[1:]
				if len(c.ackQ) == 0 {
					c.ackQ = nil
				}
				break
			}
			if !c.paused && len(c.sendQ) > 0 {
				f = c.sendQ[0]
				c.sendQ[0] = nil
				c.sendQ = c.sendQ[1:]
				f.queued = false
				if f.acked {
					c.maybeRelease(f)
					f = nil
					continue
				}
				f.writers++
				buf = f.buf
				break
			}
			w := c.writerWake.wait()
			c.mu.Unlock()
			select {
			case <-w:
			case <-a.done:
				return
			}
			c.mu.Lock()
		}
		c.mu.Unlock()

		err := a.t.WriteFrame(*buf)

		c.mu.Lock()
		if f == nil {
			if err == nil {
				c.stats.AcksSent++
			}
			*buf = (*buf)[:0]
			c.ackPool.Put(buf)
		} else {
			f.writers--
			if err == nil && !f.sent {
				// Counted even when the ack beat us back here (a fast peer acks before WriteFrame returns).
				f.sent = true
				c.stats.FramesSent++
				c.stats.BytesSent += uint64(f.payload)
			} else if err == nil && !f.acked {
				f.retrans = true
				c.stats.Retransmits++
			}
			if err == nil && !f.acked {
				f.lastSent = c.clock.Now()
				if !f.queued && !f.inTiming {
					wasEmpty := c.timingHead == nil
					c.timingPush(f)
					if wasEmpty {
						c.kick()
					}
				}
			}
			c.maybeRelease(f)
		}
		c.mu.Unlock()
		if err != nil {
			c.failTransport(a, fmt.Errorf("write frame: %w", err))
			return
		}
	}
}

// readLoop is the only reader of a's transport. It never blocks on the local consumer: data that does not
// fit the bounded receive buffers is dropped without an ack and retransmitted by the peer, so acks of our
// own frames are always processed (unlike the plugin, whose reader stalls behind a slow consumer, §9.4).
func (c *Channel) readLoop(a *attachment) {
	for {
		frame, err := a.t.ReadFrame()
		if err != nil {
			c.failTransport(a, fmt.Errorf("read frame: %w", err))
			return
		}
		c.handleFrame(frame)
	}
}

// handleFrame processes one inbound frame. Bad frames are counted and dropped: a hostile or broken peer
// can neither crash the channel nor make it allocate what a length field claims (message.Decode aliases).
func (c *Channel) handleFrame(frame []byte) {
	m, err := message.Decode(frame)
	if err != nil {
		c.mu.Lock()
		c.stats.BadFrames++
		c.mu.Unlock()
		c.log.Debug("Dropping bad frame", "err", err, "bytes", len(frame))
		return
	}
	switch m.Type {
	case message.Acknowledge:
		seq, err := ackSequenceNumber(m.Payload)
		if err != nil {
			c.mu.Lock()
			c.stats.BadFrames++
			c.mu.Unlock()
			c.log.Debug("Dropping bad acknowledge", "err", err)
			return
		}
		c.handleAck(seq)
	case c.recvType:
		c.handleData(&m)
	case message.ChannelClosed:
		// §10.2: terminal; not acknowledged.
		var p message.ChannelClosedPayload
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			c.log.Debug("channel_closed payload is not valid JSON", "err", err)
		}
		c.terminate(&ChannelClosedError{SessionID: printable(p.SessionID), Output: printable(p.Output)})
	case message.StartPublication:
		c.mu.Lock()
		c.resume()
		c.mu.Unlock()
	case message.PausePublication:
		c.mu.Lock()
		if !c.paused {
			c.paused, c.pausedSince = true, c.clock.Now()
		}
		c.mu.Unlock()
	case message.AgentSessionState:
		// §6.1: meant for the relay; ignored.
	default:
		c.mu.Lock()
		c.stats.UnknownFrames++
		c.mu.Unlock()
		c.log.Debug("Ignoring frame of unexpected type", "type", string(m.Type))
	}
}

func (c *Channel) handleAck(seq int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.AcksReceived++
	c.resume()
	f := c.unacked[seq]
	if f == nil {
		return // duplicate ack, or an ack for a frame we never sent
	}
	delete(c.unacked, seq)
	f.acked = true
	c.inflight -= f.size
	c.timingRemove(f)
	if c.rtt.progress() {
		c.kick() // the scheduler's deadline was computed with the stall backoff, now lifted
	}
	if f.sent && !f.retrans {
		c.rtt.sample(c.clock.Now().Sub(f.lastSent)) // Karn's rule: only unambiguous samples
	}
	for c.baseSeq < c.nextSeq && c.unacked[c.baseSeq] == nil {
		c.baseSeq++
	}
	c.maybeRelease(f)
	c.ackNotify.notify()
}

// handleData is the receive algorithm of §7.2 with the agent's re-ack of duplicates (§11.3).
//
// An in-order frame is acknowledged when Receive hands it to the consumer, not on arrival: like both official
// peers, which ack only once their session handler took the data (§7.2), and unlike an ack on arrival, this
// makes the sender's window (MaxInFlightBytes) cover the frames waiting here, so a sender whose window is no
// larger than ReceiveBufferBytes never overruns a slow consumer. Overrunning costs a drop, and a drop costs a
// retransmission timeout: at hundreds of MB/s over loopback, a receiver that acked on arrival would drop
// thousands of frames of a 16 MiB upload. A peer without a window (the real agent, §7.3) still meets
// the drop below, once the out-of-order store, where the expected frame waits for room, is full too. Frames held out of order are acknowledged at once (they wait for a gap, not for the
// consumer), duplicates of delivered frames too (their ack was lost, §11.3); a duplicate of a frame still
// waiting for the consumer is ignored, since its ack follows on delivery.
//
// The out-of-order store never evicts: its frames were acknowledged when stored (§7.2, like both official
// peers), so the peer has forgotten them and an evicted frame would be a hole in the stream for good.
// Instead nothing is stored that could crowd out a nearer frame: a frame is held only within the horizon,
// at most MaxOutOfOrderFrames ahead of expected and no further than the byte bound can hold at the largest
// frame cost received so far (horizon). The store only ever holds frames in [expected, expected+horizon],
// at most horizon+1 of them, each no larger than that cost, so every frame within the horizon fits; one
// beyond it is dropped without an ack and resent by the peer once expected has moved up. Without the
// horizon, a peer that resends its window in random order after a reconnect would fill the store with
// frames far ahead, and the next expected frames would be dropped round after round. The store can still be
// full after the peer's frames grew larger than any before (the horizon shrank under frames already held);
// then a frame is dropped without an ack like any frame that does not fit.
func (c *Channel) handleData(m *message.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.resume()
	cost := message.HeaderSize + len(m.Payload)
	c.maxRecvCost = max(c.maxRecvCost, cost)
	seq := m.SequenceNumber
	if it, held := c.ooo[seq]; held {
		// A frame held ahead was acknowledged when stored: its ack was lost (§11.3). The expected frame held
		// while the receive queue is full is acknowledged on delivery, like any in-order frame.
		c.stats.Duplicates++
		if !it.ackOwed {
			c.queueAck(seq, m.MessageID)
		}
		return
	}
	switch {
	case seq < c.expected:
		c.stats.Duplicates++
		if seq >= c.delivered {
			// Still waiting for the consumer: its ack is sent on delivery. Acking the copy now would let the
			// peer's window run past what the consumer took, and overrun the buffer.
			return
		}
		c.queueAck(seq, m.MessageID)
	case seq == c.expected:
		if c.recvBytes > 0 && c.recvBytes+cost > c.cfg.ReceiveBufferBytes {
			// The consumer is behind. The frame waits in the store for Receive to make room (drainOutOfOrder),
			// unacknowledged until delivered; without room there it is dropped unacknowledged and resent.
			if c.oooBytes+cost > c.cfg.OutOfOrderBytes {
				c.stats.DroppedFull++
				return
			}
			c.ooo[seq] = recvItem{pt: m.PayloadType, p: clone(m.Payload), cost: cost, seq: seq, ackOwed: true, id: m.MessageID}
			c.oooBytes += cost
			return
		}
		c.enqueue(recvItem{pt: m.PayloadType, p: clone(m.Payload), cost: cost, seq: seq, ackOwed: true, id: m.MessageID})
		c.expected++
		c.drainOutOfOrder()
	case seq-c.expected > c.horizon():
		c.stats.DroppedBeyondHorizon++ // not held, not acked: resent by the peer once expected moved up
	case c.oooBytes+cost > c.cfg.OutOfOrderBytes:
		c.stats.DroppedFull++
	default:
		c.ooo[seq] = recvItem{pt: m.PayloadType, p: clone(m.Payload), cost: cost, seq: seq}
		c.oooBytes += cost
		c.stats.OutOfOrder++
		c.queueAck(seq, m.MessageID)
	}
}

// horizon is how far ahead of expected a frame may be and still be held: MaxOutOfOrderFrames, and no more
// than OutOfOrderBytes holds at the largest frame cost received (one slot is for the expected frame, which
// waits in the store while the receive queue is full). Called with mu held.
func (c *Channel) horizon() int64 {
	return min(int64(c.cfg.MaxOutOfOrderFrames), int64(c.cfg.OutOfOrderBytes/c.maxRecvCost)-1)
}

func clone(p []byte) []byte {
	if len(p) == 0 {
		return []byte{}
	}
	return append([]byte(nil), p...)
}

func (c *Channel) enqueue(it recvItem) {
	c.recvQ = append(c.recvQ, it)
	c.recvBytes += it.cost
	c.stats.FramesReceived++
	c.stats.BytesReceived += uint64(len(it.p))
	c.recvNotify.notify()
}

// drainOutOfOrder moves held frames that became in-order into the receive queue while it has room; the
// rest wait in the store. Frames held ahead were acknowledged on arrival; the expected frame held because
// the queue was full keeps its owed ack (ackOwed), sent on delivery.
func (c *Channel) drainOutOfOrder() {
	for len(c.ooo) > 0 {
		it, ok := c.ooo[c.expected]
		if !ok || (c.recvBytes > 0 && c.recvBytes+it.cost > c.cfg.ReceiveBufferBytes) {
			return
		}
		delete(c.ooo, c.expected)
		c.oooBytes -= it.cost
		c.expected++
		c.enqueue(it)
	}
}

// queueAck encodes the ack of the received data frame seq, id (§7.1) into a pooled buffer for the writer.
// Called with mu held.
func (c *Channel) queueAck(seq int64, id message.ID) {
	if len(c.ackQ) >= maxAckQueue {
		c.stats.DroppedFull++
		return
	}
	of := message.Message{Type: c.recvType, MessageID: id, SequenceNumber: seq}
	c.ackScratch = message.AppendAckPayload(c.ackScratch[:0], &of)
	am := message.Message{
		Type:          message.Acknowledge,
		SchemaVersion: 1,
		CreatedDate:   uint64(c.clock.Now().UnixMilli()),
		Flags:         message.FlagSYN | message.FlagFIN,
		MessageID:     message.NewID(),
		Payload:       c.ackScratch,
	}
	buf := c.ackPool.Get().(*[]byte)
	enc, err := am.AppendBinary((*buf)[:0])
	if err != nil { // cannot happen: the type and payload are ours
		c.ackPool.Put(buf)
		return
	}
	*buf = enc
	c.ackQ = append(c.ackQ, buf)
	c.writerWake.notify()
}
