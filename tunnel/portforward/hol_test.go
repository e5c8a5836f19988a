package portforward_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
)

// Head-of-line tests (§9.4, §9.7): smux v1 has one session-wide receive bucket and no per-stream
// window, so a local reader that stops can fill it and stop every stream of the session.

// holServer is a destination driven by the first byte of each connection:
//
//	'D' write endlessly (until the write fails);
//	'B' write bounded bytes, then keep the connection open until the peer closes it;
//	'F' write fixed bytes, then close;
//	'U' read until EOF and report the count on uploads.
type holServer struct {
	ln             net.Listener
	bounded, fixed int64
	uploads        chan int64
}

func startHOLServer(t *testing.T, bounded, fixed int64) *holServer {
	t.Helper()
	s := &holServer{bounded: bounded, fixed: fixed, uploads: make(chan int64, 4)}
	s.ln = testutil.Serve(t, s.serve)
	return s
}

func (s *holServer) serve(c net.Conn) {
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return
	}
	switch op[0] {
	case 'D':
		_, _ = io.Copy(c, newPattern(1))
	case 'B':
		_, _ = io.CopyN(c, newPattern(1), s.bounded)
		_, _ = io.Copy(io.Discard, c)
	case 'F':
		_, _ = io.CopyN(c, newPattern(2), s.fixed)
	case 'U':
		n, _ := io.Copy(io.Discard, c)
		s.uploads <- n
	}
}

func (s *holServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// openOp dials the tunnel and sends the destination's command byte.
func openOp(t *testing.T, h *harness, op byte) net.Conn {
	t.Helper()
	c := h.dial(0)
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte{op}); err != nil {
		t.Fatal(err)
	}
	return c
}

// stallLocally makes the test's end of c accept little before it stops reading: a small receive buffer
// keeps the kernel from absorbing what the tunnel should be holding.
func stallLocally(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
}

// downloadAll runs fixed downloads on n fresh connections at once and fails unless every one of them
// delivers all its bytes before the deadline.
func downloadAll(t *testing.T, h *harness, n int, size int64, deadline time.Duration) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		c := openOp(t, h, 'F')
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(deadline))
			got, err := io.Copy(io.Discard, c)
			if err == nil && got != size {
				err = errors.New("short download")
			}
			if err != nil {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("downloads beside the stalled stream: %v", err)
	}
}

func slotStats(h *harness) portforward.SessionStats { return h.fwd.Sessions()[0] }

// TestStalledStreamHoldsItsShareOthersFlow (a): a stream whose reader stopped holds more than the peers' 4
// MiB bucket in the client's larger session buffer, and the other streams keep moving, with no reset.
func TestStalledStreamHoldsItsShareOthersFlow(t *testing.T) {
	srv := startHOLServer(t, 16<<20, 2<<20)
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf: portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: srv.port()}},
			StreamStallTimeout: time.Hour}, // the watchdog stays out of it: the buffer alone must do
	})
	stalled := openOp(t, h, 'B')
	stallLocally(t, stalled)
	const moreThanPeerBucket = 5 << 20
	testutil.WaitFor(t, "the stalled stream to hold more than 4 MiB", 60*time.Second, func() bool {
		return slotStats(h).HeldBytes >= moreThanPeerBucket
	})
	downloadAll(t, h, 4, 2<<20, 60*time.Second)
	if st := slotStats(h); st.StalledResets != 0 {
		t.Fatalf("%d streams reset; with a stall timeout of an hour none should be", st.StalledResets)
	}
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWatchdogResetsStalledStream (b): an endless download nobody reads fills even the larger buffer; the
// watchdog resets that stream, and only that one, with a warning that says why, and the session keeps
// carrying the others.
func TestWatchdogResetsStalledStream(t *testing.T) {
	srv := startHOLServer(t, 0, 2<<20)
	var logs lockedBuffer
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf: portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: srv.port()}},
			SessionReceiveBuffer: 1 << 20, StreamStallTimeout: 2 * time.Second,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))},
	})
	stalled := openOp(t, h, 'D')
	stallLocally(t, stalled)
	testutil.WaitFor(t, "the watchdog to reset the stalled stream", 60*time.Second, func() bool {
		return slotStats(h).StalledResets >= 1
	})
	downloadAll(t, h, 4, 2<<20, 60*time.Second)
	// Only the stream whose reader stopped was reset: the downloads' copies and readers wait to be scheduled
	// on a loaded machine, yet their sockets never refuse data, so none of them may count as stalled.
	if n := slotStats(h).StalledResets; n != 1 {
		t.Fatalf("%d streams reset, want exactly the stalled one", n)
	}

	// The stalled connection ends: what the kernel holds, then EOF or a reset, not an endless stream.
	stalled.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.Copy(io.Discard, stalled)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the reset connection still delivers data after 30s")
	}
	out := logs.String()
	port := h.addrs[0].(*net.TCPAddr).Port
	for _, want := range []string{"smux v1 has no per-stream flow control", "heldBytes=", "port=" + portforward.PortPair{Local: port, Remote: srv.port()}.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("the reset's warning lacks %q:\n%s", want, out)
		}
	}
}

// TestUploadFlowsWhileSmuxIsNotReading (c): while a stalled stream has filled the session buffer, smux
// reads nothing from the data channel; acks of our own frames must still be processed, so an upload larger
// than the send window (1 MiB) completes on another stream of the same session.
func TestUploadFlowsWhileSmuxIsNotReading(t *testing.T) {
	srv := startHOLServer(t, 0, 0)
	const buf = 256 << 10
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf: portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: srv.port()}},
			SessionReceiveBuffer: buf, StreamStallTimeout: time.Hour},
	})
	stalled := openOp(t, h, 'D')
	stallLocally(t, stalled)
	testutil.WaitFor(t, "the stalled stream to fill the session buffer", 60*time.Second, func() bool {
		return slotStats(h).HeldBytes >= buf
	})
	up := openOp(t, h, 'U')
	const size = 4 << 20
	if _, err := io.CopyN(up, newPattern(3), size); err != nil {
		t.Fatalf("upload while the session's receive side is full: %v", err)
	}
	up.(*net.TCPConn).CloseWrite()
	select {
	case n := <-srv.uploads:
		if n != size {
			t.Fatalf("destination received %d bytes, want %d", n, size)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("upload did not reach the destination within 60s while smux was not reading")
	}
	if st := slotStats(h); st.HeldBytes < buf {
		t.Fatalf("held %d bytes: the session was not blocked during the upload, so the test proves nothing", st.HeldBytes)
	}
}
