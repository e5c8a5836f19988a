package portforward_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
)

// Memory at rest: a connection's agent → local copy runs on a goroutine only while its stream has
// bytes or an end to deliver. These tests use real sockets end to end and look at the goroutines directly.

// goroutinesIn counts the goroutines whose stack contains fn (a function name as runtime.Stack prints it).
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			count++
		}
	}
	return count
}

const (
	toLocalCopyFn = "portforward.(*slot).pumpToLocal"
	handlerFn     = "portforward.(*slot).serveMux"
)

// waitIdle waits until no agent → local copy runs: every byte that arrived has been delivered.
func waitIdle(t *testing.T, h *harness) {
	t.Helper()
	testutil.WaitFor(t, "no agent → local copy running", 20*time.Second, func() bool {
		return goroutinesIn(toLocalCopyFn) == 0 && h.fwd.Sessions()[0].ToLocalCopies == 0
	})
}

// triggeredServer is a destination that, for each connection, echoes one byte (so the path is up) and then
// does what the test sends on its channel: write n pattern bytes (n > 0) or close (n == 0). Nothing passes
// through the tunnel to trigger it, so what the client sees after an idle spell comes from the agent alone.
type triggeredServer struct {
	ln    net.Listener
	conns chan chan int64
}

func startTriggeredServer(t *testing.T) *triggeredServer {
	t.Helper()
	s := &triggeredServer{conns: make(chan chan int64, 16)}
	s.ln = testutil.Serve(t, s.serve)
	return s
}

func (s *triggeredServer) serve(c net.Conn) {
	var one [1]byte
	if _, err := io.ReadFull(c, one[:]); err != nil {
		return
	}
	if _, err := c.Write(one[:]); err != nil {
		return
	}
	orders := make(chan int64)
	s.conns <- orders
	seed := uint64(10)
	for n := range orders {
		if n == 0 {
			return
		}
		if _, err := io.CopyN(c, newPattern(seed), n); err != nil {
			return
		}
		seed++
	}
}

func (s *triggeredServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// open dials the tunnel, completes the one-byte echo and returns the connection with its order channel.
func (s *triggeredServer) open(t *testing.T, h *harness) (net.Conn, chan<- int64) {
	t.Helper()
	c := h.dial(0)
	t.Cleanup(func() { c.Close() })
	if err := echoRoundTrip(c, []byte{'x'}); err != nil {
		t.Fatal(err)
	}
	select {
	case orders := <-s.conns:
		return c, orders
	case <-time.After(20 * time.Second):
		t.Fatal("destination saw no connection")
		return nil, nil
	}
}

// startLazyHarness parks connections idle for 50 ms (Linux), so the tests here also cover bytes and ends
// from the agent reaching connections that have no goroutine at all.
func startLazyHarness(t *testing.T, port int) *harness {
	return startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf:  portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: port}}, IdleParkAfter: 50 * time.Millisecond},
	})
}

func TestIdleConnectionsHaveNoAgentToLocalGoroutine(t *testing.T) {
	srv := startTriggeredServer(t)
	h := startLazyHarness(t, srv.port())
	const conns = 30
	for range conns {
		srv.open(t, h) // each delivered one byte from the agent, so each had a copy running once
	}
	waitIdle(t, h)
	// On Linux idle connections end up parked with no goroutine at all; elsewhere each keeps its handler.
	// A parking handler registers with the poller just before its goroutine returns, so both are awaited.
	if runtime.GOOS == "linux" {
		testutil.WaitFor(t, "every idle connection parked and no handler goroutine left", 20*time.Second, func() bool {
			return h.fwd.ParkedConnections() == conns && goroutinesIn(handlerFn) == 0
		})
	} else if got := goroutinesIn(handlerFn); got != conns {
		t.Errorf("%d handler goroutines for %d idle connections, want one each", got, conns)
	}
	if open := h.fwd.Sessions()[0].OpenStreams; open != conns {
		t.Errorf("%d open streams, want %d", open, conns)
	}
}

func TestDataAfterIdleArrivesExactly(t *testing.T) {
	srv := startTriggeredServer(t)
	h := startLazyHarness(t, srv.port())
	quiet, _ := srv.open(t, h)
	c, orders := srv.open(t, h)
	seed := uint64(10)
	// One byte, several smux frames, then more than one local socket buffer: each after the copy has gone.
	for _, n := range []int64{1, 100 << 10, 3 << 20} {
		waitIdle(t, h)
		orders <- n
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		got := make([]byte, n)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("reading %d bytes after idle: %v", n, err)
		}
		want := make([]byte, n)
		io.ReadFull(newPattern(seed), want)
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes after idle differ from what the destination sent", n)
		}
		seed++
	}
	// The other idle connection was not woken with anyone else's bytes.
	quiet.SetReadDeadline(time.Now().Add(time.Millisecond))
	if n, err := quiet.Read(make([]byte, 1)); n != 0 || !isTimeout(err) {
		t.Errorf("idle bystander read %d bytes (err %v), want nothing", n, err)
	}
}

func TestFINAfterIdleHalfClosesLocal(t *testing.T) {
	srv := startTriggeredServer(t)
	h := startLazyHarness(t, srv.port())
	c, orders := srv.open(t, h)
	waitIdle(t, h)
	close(orders) // the destination closes; the agent FINs the stream
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err != io.EOF {
		t.Fatalf("after the destination closed: read %d bytes, err %v; want a clean EOF (half-close)", n, err)
	}
	// Half-closed, not reset: our side may still write, and the connection ends once it closes its side.
	if _, err := c.Write([]byte("late")); err != nil {
		t.Fatalf("write after EOF: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the connection to end", 20*time.Second, func() bool {
		return h.fwd.Sessions()[0].OpenStreams == 0 && goroutinesIn(handlerFn) == 0
	})
	waitIdle(t, h)
}

func TestIdleConnectionClosesWhenItsSessionEnds(t *testing.T) {
	srv := startTriggeredServer(t)
	h := startLazyHarness(t, srv.port())
	c, _ := srv.open(t, h)
	waitIdle(t, h)
	first := h.fwd.Sessions()[0].SessionID
	if err := h.emu.SetFaults(emulator.Faults{RefuseResume: emulator.ResumeError}); err != nil {
		t.Fatal(err)
	}
	if err := h.emu.DropClient(first); err != nil {
		t.Fatal(err)
	}
	// Nothing reads the idle connection's stream; the session's end must still reach it.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("idle connection of an ended session: read %d bytes, err %v; want it closed", n, err)
	}
	if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("idle connection of an ended session: %v, want EOF or reset", err)
	}
}
