//go:build linux || darwin || freebsd || netbsd || openbsd

package portforward

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// The watchdog's decisions with real sockets and explicit clock readings: the time a check runs at is an
// argument, so a copy goroutine "starved for an hour" costs the test nothing and no scheduling can change
// the outcome.

// fillSendBuffer writes to c until the kernel takes no more (its peer reads nothing), the state of a local
// connection whose reader stopped.
func fillSendBuffer(t *testing.T, c, peer *net.TCPConn) {
	t.Helper()
	if err := c.SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	if err := peer.SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	// Each write ends at its deadline once the buffers are full. Loopback can still free some room after a
	// write gave up (the receiver compacts its queue and opens its window a little), so write until the
	// kernel itself says the socket takes nothing more.
	chunk := make([]byte, 4<<20)
	for range 100 {
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Write(chunk)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("filling the send buffer: %v, want the write to time out on a full buffer", err)
		}
		if localRefuses(c) {
			c.SetWriteDeadline(time.Time{})
			return
		}
	}
	t.Fatal("localRefuses stays false on a socket whose writes time out: the send buffer never looks full")
}

// drainUntilWritable reads from peer until c's socket can take data again.
func drainUntilWritable(t *testing.T, c, peer *net.TCPConn) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for localRefuses(c) {
		if _, err := peer.Read(buf); err != nil {
			t.Fatalf("draining: %v", err)
		}
	}
}

func heldConn(local net.Conn) *fwdConn {
	c := &fwdConn{local: local}
	c.arrived.Add(1 << 20) // smux holds a MiB for it
	return c
}

// A copy that has not been scheduled or started is in no write: however long bytes wait, and even when the
// local socket is full, that is not a refusal.
func TestWatchdogIgnoresCopyNotInAWrite(t *testing.T) {
	client, server := tcpPair(t)
	c := heldConn(client)
	t0 := time.Now()
	for _, at := range []time.Duration{0, 400 * time.Millisecond, time.Hour} {
		if d := c.refusingFor(t0.Add(at)); d != 0 {
			t.Fatalf("copy not in a write, socket writable, at +%v: refusing for %v, want 0", at, d)
		}
	}
	fillSendBuffer(t, client, server)
	for _, at := range []time.Duration{2 * time.Hour, 3 * time.Hour} {
		if d := c.refusingFor(t0.Add(at)); d != 0 {
			t.Fatalf("copy not in a write, socket full, at +%v: refusing for %v, want 0", at, d)
		}
	}
}

// Only one and the same write, seen refused by the kernel at every check, counts, and only from the first
// check that saw it: a finished write, or a socket that can take data while the copy waits to run, starts
// the count again.
func TestWatchdogCountsOnlyARefusedWrite(t *testing.T) {
	client, server := tcpPair(t)
	c := heldConn(client)
	t0 := time.Now()
	c.localWrites.Add(1) // the copy is inside a write to the local connection

	if d := c.refusingFor(t0.Add(time.Hour)); d != 0 {
		t.Fatalf("write in progress on a writable socket (the copy is just not running): refusing for %v, want 0", d)
	}

	fillSendBuffer(t, client, server)
	checks := []struct {
		at, want time.Duration
		why      string
	}{
		{0, 0, "first sighting of the refused write"},
		{3 * time.Second, 3 * time.Second, "same write, still refused"},
	}
	for _, ch := range checks {
		if d := c.refusingFor(t0.Add(ch.at)); d != ch.want {
			t.Fatalf("%s (+%v): refusing for %v, want %v", ch.why, ch.at, d, ch.want)
		}
	}

	c.localWrites.Add(2) // that write finished (progress) and the next one began
	if d := c.refusingFor(t0.Add(4 * time.Second)); d != 0 {
		t.Fatalf("a new write after progress: refusing for %v, want 0 (a fresh count)", d)
	}
	if d := c.refusingFor(t0.Add(5 * time.Second)); d != time.Second {
		t.Fatalf("the new write refused a second later: refusing for %v, want 1s", d)
	}

	drainUntilWritable(t, client, server)
	if d := c.refusingFor(t0.Add(time.Hour)); d != 0 {
		t.Fatalf("the reader took data, the copy has not run yet: refusing for %v, want 0", d)
	}
	fillSendBuffer(t, client, server)
	if d := c.refusingFor(t0.Add(2 * time.Hour)); d != 0 {
		t.Fatalf("refused again after the socket was seen writable: refusing for %v, want 0 (a fresh count)", d)
	}

	c.localWrites.Add(1) // the write returned
	if d := c.refusingFor(t0.Add(3 * time.Hour)); d != 0 {
		t.Fatalf("no write in progress: refusing for %v, want 0", d)
	}
}

// Under buffer pressure only the stream holding most of what is buffered gets the shortened limit.
func TestWatchdogShortLimitOnlyForTheStreamFillingTheBuffer(t *testing.T) {
	cfg := Config{SessionReceiveBuffer: 1 << 20, StreamStallTimeout: 2 * time.Second}
	cases := []struct {
		name           string
		held, buffered int64
		want           time.Duration
	}{
		{"no pressure", 400 << 10, 400 << 10, 2 * time.Second},
		{"pressure, holds all of it", 1 << 20, 1 << 20, 200 * time.Millisecond},
		{"pressure, holds half of it", 300 << 10, 600 << 10, 200 * time.Millisecond},
		{"pressure, a healthy bystander", 64 << 10, 1 << 20, 2 * time.Second},
		{"pressure, holds just under half", 300<<10 - 1, 600 << 10, 2 * time.Second},
	}
	for _, tc := range cases {
		if got := stallLimit(cfg, tc.held, tc.buffered); got != tc.want {
			t.Errorf("%s (held %d of %d buffered): limit %v, want %v", tc.name, tc.held, tc.buffered, got, tc.want)
		}
	}
}
