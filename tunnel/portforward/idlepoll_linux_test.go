//go:build linux

package portforward

import (
	"sync/atomic"
	"testing"
	"time"
)

func startIdlePoller(t *testing.T) *idlePoller {
	t.Helper()
	p, err := newIdlePoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// resumed returns a resume function that reports on a channel, and the channel.
func resumed() (func(), chan struct{}) {
	ch := make(chan struct{}, 2)
	return func() { ch <- struct{}{} }, ch
}

func waitResumed(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("not resumed within 10s after %s", what)
	}
}

// A parked socket resumes once when its peer sends, and the token is gone from both the poller and the slot.
func TestIdlePollerResumesOnData(t *testing.T) {
	p := startIdlePoller(t)
	client, server := tcpPair(t)
	resume, ch := resumed()
	var slot atomic.Uint64
	if !p.park(server, &slot, resume) {
		t.Fatal("park refused an open socket")
	}
	if p.parkedCount() != 1 || slot.Load() == 0 {
		t.Fatalf("parked %d, slot %d; want 1 and a token", p.parkedCount(), slot.Load())
	}
	select {
	case <-ch:
		t.Fatal("resumed before any data")
	default:
	}
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitResumed(t, ch, "data")
	if p.parkedCount() != 0 || slot.Load() != 0 {
		t.Fatalf("after resume: parked %d, slot %d; want 0 and 0", p.parkedCount(), slot.Load())
	}

	// Parked again with the byte still unread: level-triggered arming reports it at once, so data that
	// arrived between the idle timeout and the arming is never missed.
	if !p.park(server, &slot, resume) {
		t.Fatal("second park refused")
	}
	waitResumed(t, ch, "arming with unread data")

	// Read it, park a third time: the peer's close (EOF) resumes too.
	var one [1]byte
	if _, err := server.Read(one[:]); err != nil {
		t.Fatal(err)
	}
	if !p.park(server, &slot, resume) {
		t.Fatal("third park refused")
	}
	client.Close()
	waitResumed(t, ch, "the peer's close")
	if n := len(ch); n != 0 {
		t.Fatalf("%d extra resumes", n)
	}
}

// Closing a parked socket removes it from the epoll set without an event: wake must resume it, once.
func TestIdlePollerWakeAfterClose(t *testing.T) {
	p := startIdlePoller(t)
	_, server := tcpPair(t)
	resume, ch := resumed()
	var slot atomic.Uint64
	if !p.park(server, &slot, resume) {
		t.Fatal("park refused an open socket")
	}
	server.Close()
	p.wake(&slot)
	waitResumed(t, ch, "close and wake")
	p.wake(&slot) // nothing parked any more: no second resume
	if p.parkedCount() != 0 {
		t.Fatalf("parked %d after wake, want 0", p.parkedCount())
	}
	if n := len(ch); n != 0 {
		t.Fatalf("%d extra resumes", n)
	}
}

// A socket closed before parking cannot be armed: park says so and leaves nothing behind, and the caller
// reads on to find the close.
func TestIdlePollerRefusesClosedSocket(t *testing.T) {
	p := startIdlePoller(t)
	_, server := tcpPair(t)
	server.Close()
	resume, ch := resumed()
	var slot atomic.Uint64
	if p.park(server, &slot, resume) {
		t.Fatal("park accepted a closed socket")
	}
	if p.parkedCount() != 0 || slot.Load() != 0 || len(ch) != 0 {
		t.Fatalf("parked %d, slot %d, resumes %d; want all 0", p.parkedCount(), slot.Load(), len(ch))
	}
}

// Many sockets parked at once each resume for their own data only.
func TestIdlePollerManySockets(t *testing.T) {
	p := startIdlePoller(t)
	const n = 200
	type parked struct {
		ch     chan struct{}
		slot   atomic.Uint64
		client interface{ Write([]byte) (int, error) }
	}
	all := make([]*parked, n)
	for i := range all {
		client, server := tcpPair(t)
		resume, ch := resumed()
		all[i] = &parked{ch: ch, client: client}
		if !p.park(server, &all[i].slot, resume) {
			t.Fatalf("park %d refused", i)
		}
	}
	// Every other socket gets data.
	for i := 0; i < n; i += 2 {
		if _, err := all[i].client.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 2 {
		waitResumed(t, all[i].ch, "data")
	}
	if got := p.parkedCount(); got != n/2 {
		t.Fatalf("parked %d after half resumed, want %d", got, n/2)
	}
	for i := 1; i < n; i += 2 {
		if len(all[i].ch) != 0 {
			t.Fatalf("socket %d resumed without data", i)
		}
	}
}
