package portforward_test

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
)

func openStreams(h *harness) int {
	n := 0
	for _, s := range h.fwd.Sessions() {
		n += s.OpenStreams
	}
	return n
}

// Idle connections are parked without a goroutine (Linux) and carry on exactly when they send again; a
// parked connection that the application closes ends with its stream; a shutdown ends the ones still
// parked. Elsewhere nothing is parked and the rest still holds.
func TestIdleConnectionsParkAndResume(t *testing.T) {
	const conns = 20
	wantParked := 0
	if runtime.GOOS == "linux" {
		wantParked = conns
	}
	ln := testutil.EchoServer(t)
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf: portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: testutil.Port(ln)}},
			IdleParkAfter: 50 * time.Millisecond, DrainTimeout: 100 * time.Millisecond},
	})
	cs := make([]net.Conn, conns)
	for i := range cs {
		cs[i] = h.dial(0)
		defer cs[i].Close()
		if err := echoRoundTrip(cs[i], []byte(fmt.Sprintf("first %d", i))); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	testutil.WaitFor(t, fmt.Sprintf("%d connections parked", wantParked), 10*time.Second,
		func() bool { return h.fwd.ParkedConnections() == wantParked })

	// Every parked connection wakes for its own bytes, in both directions, and goes back to sleep.
	for round := range 3 {
		for i, c := range cs {
			msg := []byte(fmt.Sprintf("round %d connection %d %s", round, i, make([]byte, 100*i)))
			if err := echoRoundTrip(c, msg); err != nil {
				t.Fatalf("round %d, connection %d after parking: %v", round, i, err)
			}
		}
		testutil.WaitFor(t, "the connections parked again", 10*time.Second,
			func() bool { return h.fwd.ParkedConnections() == wantParked })
	}

	// The application closes half of them while they are parked: their streams end.
	for _, c := range cs[:conns/2] {
		c.Close()
	}
	testutil.WaitFor(t, "the closed connections' streams to end", 10*time.Second,
		func() bool { return openStreams(h) == conns/2 })
	if got := h.fwd.ParkedConnections(); got != wantParked/2 {
		t.Fatalf("%d parked after closing half, want %d", got, wantParked/2)
	}

	// Shutdown: the drain timeout passes with the rest parked; they are closed and Run returns.
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for i, c := range cs[conns/2:] {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := c.Read(make([]byte, 1)); err == nil || n != 0 {
			t.Fatalf("connection %d still open after shutdown: read %d bytes, err %v", conns/2+i, n, err)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection %d not closed by shutdown", conns/2+i)
		} else if err != io.EOF {
			t.Logf("connection %d ended with %v", conns/2+i, err)
		}
	}
	if got := h.fwd.ParkedConnections(); got != 0 {
		t.Fatalf("%d parked after shutdown", got)
	}
}

// A destination that speaks first while the local connection is parked: its bytes reach the application
// (the agent → local direction never needed the parked reader), and the application's answer wakes it.
func TestParkedConnectionReceivesServerPush(t *testing.T) {
	push := make(chan struct{})
	answers := make(chan string, 1)
	ln := testutil.Serve(t, func(c net.Conn) {
		defer c.Close()
		hello := make([]byte, 5)
		if _, err := io.ReadFull(c, hello); err != nil {
			return
		}
		<-push
		if _, err := c.Write([]byte("pushed")); err != nil {
			return
		}
		answer := make([]byte, 6)
		if _, err := io.ReadFull(c, answer); err != nil {
			answers <- err.Error()
			return
		}
		answers <- string(answer)
	})
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf:  portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: testutil.Port(ln)}}, IdleParkAfter: 50 * time.Millisecond},
	})
	c := h.dial(0)
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" {
		testutil.WaitFor(t, "the connection parked", 10*time.Second, func() bool { return h.fwd.ParkedConnections() == 1 })
	}
	close(push)
	got := make([]byte, 6)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "pushed" {
		t.Fatalf("read %q, %v; want \"pushed\"", got, err)
	}
	if _, err := c.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-answers:
		if a != "answer" {
			t.Fatalf("destination got %q, want \"answer\"", a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the answer did not reach the destination")
	}
}
