package portforward_test

// Reliability acceptance tests: how sessions end and heal, and how connections end (a FIN only after the
// destination's own clean close, a reset otherwise), on the real stack through the emulator.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

func waitReady(t *testing.T, h *harness, what string) {
	t.Helper()
	testutil.WaitFor(t, what, 30*time.Second, func() bool { return h.fwd.Ready() == nil })
}

func emuEnded(emu *emulator.Emulator) int {
	n := 0
	for _, s := range emu.Sessions() {
		if s.Ended {
			n++
		}
	}
	return n
}

func assertRunning(t *testing.T, h *harness) {
	t.Helper()
	select {
	case err := <-h.runErr:
		h.runErr <- err
		t.Fatalf("Run returned %v; want the forwarder to keep serving", err)
	default:
	}
}

// Every way the service ends a session leaves the listener up and a new session in place.
func TestServiceEndedSessionIsReplaced(t *testing.T) {
	for _, tc := range []struct {
		name   string
		faults emulator.Faults
		end    func(h *harness, id string) error
		reason string
	}{
		{name: "idle timeout", faults: emulator.Faults{IdleTimeout: 500 * time.Millisecond}, reason: "idle_timeout"},
		{name: "maximum duration", faults: emulator.Faults{MaxSessionDuration: time.Second}, reason: "max_duration"},
		{name: "administrator", end: func(h *harness, id string) error { return h.emu.TerminateSession(id) }, reason: "terminated"},
		{name: "refused resume", faults: emulator.Faults{RefuseResume: emulator.ResumeEmptyToken},
			end: func(h *harness, id string) error { return h.emu.DropClient(id) }, reason: "not_resumable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := testutil.EchoServer(t)
			h := startHarness(t, harnessOpts{
				emu: emulator.Config{Pacing: emulator.PacingNone, Faults: tc.faults},
				pf:  portforward.Config{Ports: []portforward.PortPair{{Remote: testutil.Port(ln)}}, ReconnectJitter: -1},
			})
			for round := range 3 {
				first := h.fwd.Sessions()[0].SessionID
				if tc.end != nil {
					if err := tc.end(h, first); err != nil {
						t.Fatal(err)
					}
				}
				testutil.WaitFor(t, "a new session", 30*time.Second, func() bool {
					s := h.fwd.Sessions()[0]
					return s.SessionID != "" && s.SessionID != first && s.State == session.StateReady
				})
				// A connection that meets the next end (these faults come every half second) is reset, as it
				// must be; the client reconnects once. Two resets in a row would mean the port does not heal.
				err := echoOnce(h, fmt.Sprintf("round %d", round))
				if isReset(err) {
					t.Logf("round %d: reset (%v); reconnecting", round, err)
					err = echoOnce(h, fmt.Sprintf("round %d again", round))
				}
				if err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
				assertRunning(t, h)
			}
			// The emulator may close the websocket of an administrator's TerminateSession before the client
			// reads its channel_closed; the session then ends as not resumable. Either is the service's end.
			ends := h.fwd.Ports()[0].SessionEnds
			total := uint64(0)
			for _, n := range ends {
				total += n
			}
			if ends[tc.reason] < 1 || total < 3 {
				t.Errorf("session ends %v, want 3 or more, %s among them", ends, tc.reason)
			}
		})
	}
}

// streamServer sends n bytes of pattern(seed) on every connection and then closes it cleanly.
func streamServer(t *testing.T, n int64, seed uint64) int {
	t.Helper()
	return testutil.Port(testutil.Serve(t, func(c net.Conn) {
		io.CopyN(c, newPattern(seed), n)
		c.Close()
	}))
}

// A download whose session is lost (websocket dropped, resume refused) ends with a reset, never a FIN.
func TestLostStreamIsReset(t *testing.T) {
	const n = 8 << 20
	port := streamServer(t, n, 3)
	const after = 1 << 20
	h := startHarness(t, harnessOpts{
		// The agent's pace (~1 MB/s) keeps most of the download in flight when the drop comes.
		emu: emulator.Config{Pacing: emulator.PacingAgent, Faults: emulator.Faults{RefuseResume: emulator.ResumeError}},
		pf:  portforward.Config{Ports: []portforward.PortPair{{Remote: port}}},
	})
	c := h.dial(0)
	defer c.Close()
	id := h.fwd.Sessions()[0].SessionID
	buf := make([]byte, 32<<10)
	var got int64
	dropped := false
	var err error
	for {
		var m int
		m, err = c.Read(buf)
		got += int64(m)
		if err != nil {
			break
		}
		if !dropped && got >= after {
			dropped = true
			if derr := h.emu.DropClient(id); derr != nil {
				t.Fatal(derr)
			}
		}
	}
	if got >= n {
		t.Fatalf("the whole download (%d bytes) arrived before the drop took effect", got)
	}
	if !isReset(err) {
		t.Fatalf("after %d of %d bytes the connection ended with %v, want a reset", got, n, err)
	}
	// The port heals: a new session carries the next download from its first byte.
	waitReady(t, h, "a replacement session")
	c2 := h.dial(0)
	defer c2.Close()
	c2.SetReadDeadline(time.Now().Add(30 * time.Second))
	head := make([]byte, 64<<10)
	if _, err := io.ReadFull(c2, head); err != nil {
		t.Fatalf("download after the loss: %v", err)
	}
	want := make([]byte, len(head))
	newPattern(3).Read(want)
	if !bytes.Equal(head, want) {
		t.Error("download after the loss does not start with the destination's first bytes")
	}
	if r := h.fwd.Ports()[0].Resets["session_lost"]; r < 1 {
		t.Errorf("session_lost resets = %d, want at least 1", r)
	}
}

// The drain deadline resets connections still open, instead of closing them as complete.
func TestDrainDeadlineResets(t *testing.T) {
	ln := testutil.EchoServer(t)
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf:  portforward.Config{Ports: []portforward.PortPair{{Remote: testutil.Port(ln)}}, DrainTimeout: 200 * time.Millisecond},
	})
	c := h.dial(0)
	defer c.Close()
	if err := echoRoundTrip(c, []byte("open")); err != nil {
		t.Fatal(err)
	}
	go h.stop()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if !isReset(err) {
		t.Fatalf("open connection at the drain deadline ended with %v, want a reset", err)
	}
}

// Connections over --max-connections are reset at once and counted; the others are untouched.
func TestConnectionLimitResetsExcess(t *testing.T) {
	ln := testutil.EchoServer(t)
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf:  portforward.Config{Ports: []portforward.PortPair{{Remote: testutil.Port(ln)}}, MaxConnections: 3},
	})
	var open []net.Conn
	for i := range 3 {
		c := h.dial(0)
		defer c.Close()
		if err := echoRoundTrip(c, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	if err := expectReset(h.addrs[0].String(), 10*time.Second); err != nil {
		t.Fatalf("fourth connection: %v", err)
	}
	for i, c := range open {
		if err := echoRoundTrip(c, []byte("still here")); err != nil {
			t.Errorf("connection %d after the limit was hit: %v", i, err)
		}
	}
	if got := h.fwd.Ports()[0].Resets["connection_limit"]; got != 1 {
		t.Errorf("connection_limit resets = %d, want 1", got)
	}
	open[0].Close()
	testutil.WaitFor(t, "the closed connection to be released", 10*time.Second, func() bool { return h.fwd.Ports()[0].OpenConnections == 2 })
	c := h.dial(0)
	defer c.Close()
	if err := echoRoundTrip(c, []byte("below the limit again")); err != nil {
		t.Fatal(err)
	}
}

// idServer is a destination that gives every connection its own identity: it first sends an 8-byte
// connection number (when greet is set, before reading anything, like MySQL, SSH and SMTP greetings), then
// streams pattern(number) until the client goes away.
type idServer struct {
	mu   sync.Mutex
	next uint64
}

func startIDServer(t *testing.T, greet bool) int {
	s := &idServer{next: 1}
	return testutil.Port(testutil.Serve(t, func(c net.Conn) {
		s.mu.Lock()
		id := s.next
		s.next++
		s.mu.Unlock()
		if !greet {
			var b [1]byte
			if _, err := c.Read(b[:]); err != nil {
				return
			}
		}
		var hdr [8]byte
		binary.BigEndian.PutUint64(hdr[:], id)
		if _, err := c.Write(hdr[:]); err != nil {
			return
		}
		io.Copy(c, newPattern(id))
	}))
}

// readIdentity reads the connection number and then k bytes, and checks that they are that connection's.
func readIdentity(c net.Conn, k int) (uint64, error) {
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return 0, fmt.Errorf("greeting: %w", err)
	}
	id := binary.BigEndian.Uint64(hdr[:])
	got := make([]byte, k)
	if _, err := io.ReadFull(c, got); err != nil {
		return id, fmt.Errorf("body of connection %d: %w", id, err)
	}
	want := make([]byte, k)
	newPattern(id).Read(want)
	if !bytes.Equal(got, want) {
		return id, fmt.Errorf("connection %d received bytes that are not its own", id)
	}
	return id, nil
}

func basicHarness(t *testing.T, port int, pf portforward.Config) *harness {
	pf.Ports = []portforward.PortPair{{Remote: port}}
	return startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone, Instances: []emulator.Instance{{ID: testInstance, AgentVersion: "3.0.196.0"}}},
		pf:  pf,
	})
}

// Basic mode never hands one connection's bytes to the next: A reads part of its stream and closes, B
// connects at once and must see only its own.
func TestBasicModeNeverMixesConnections(t *testing.T) {
	h := basicHarness(t, startIDServer(t, false), portforward.Config{})
	seen := map[uint64]bool{}
	for round := range 6 {
		a := h.dial(0)
		a.Write([]byte{'a'})
		idA, err := readIdentity(a, 64<<10)
		if err != nil {
			t.Fatalf("round %d, A: %v", round, err)
		}
		a.Close()
		b := h.dial(0)
		b.Write([]byte{'b'})
		idB, err := readIdentity(b, 64<<10)
		b.Close()
		if err != nil {
			t.Fatalf("round %d, B (after A %d): %v", round, idA, err)
		}
		if idA == idB || seen[idA] || seen[idB] {
			t.Fatalf("round %d: connections %d and %d, seen before %v: two clients shared a destination connection", round, idA, idB, seen)
		}
		seen[idA], seen[idB] = true, true
	}
}

// Basic mode delivers what the destination says first to a client that sends nothing.
func TestBasicModeDeliversGreeting(t *testing.T) {
	h := basicHarness(t, startIDServer(t, true), portforward.Config{})
	for round := range 3 {
		c := h.dial(0)
		if _, err := readIdentity(c, 1024); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		c.Close()
	}
}

// Basic mode serves parallel connections while one idle keep-alive connection holds a session.
func TestBasicModeServesParallelConnections(t *testing.T) {
	ln := testutil.EchoServer(t)
	h := basicHarness(t, testutil.Port(ln), portforward.Config{})
	idle := h.dial(0)
	defer idle.Close()
	if err := echoRoundTrip(idle, []byte("keep-alive")); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", h.addrs[0].String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			msg := bytes.Repeat([]byte{byte('0' + i)}, 32<<10)
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := echoRoundTrip(c, msg); err != nil {
				errs <- fmt.Errorf("parallel connection %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := echoRoundTrip(idle, []byte("still alive")); err != nil {
		t.Errorf("idle connection after the others: %v", err)
	}
}

// A session that keeps resuming (here: ResumeSession never answers) is given up after PartitionTimeout:
// its connections are reset so clients reconnect, and a new session serves the port.
func TestPartitionResetsConnectionsAndReplacesSession(t *testing.T) {
	ln := testutil.EchoServer(t)
	gate := make(chan struct{}) // never opened: every ResumeSession hangs until its context ends
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf: portforward.Config{Ports: []portforward.PortPair{{Remote: testutil.Port(ln)}}, PartitionTimeout: time.Second,
			ReconnectJitter: -1},
		wrapAPI: func(a session.API) session.API { return &gatedAPI{API: a, gate: gate} },
	})
	c := h.dial(0)
	defer c.Close()
	if err := echoRoundTrip(c, []byte("before")); err != nil {
		t.Fatal(err)
	}
	first := h.fwd.Sessions()[0].SessionID
	if err := h.emu.DropClient(first); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, c); !isReset(err) {
		t.Fatalf("connection on the partitioned session ended with %v, want a reset", err)
	}
	testutil.WaitFor(t, "a new session", 30*time.Second, func() bool {
		s := h.fwd.Sessions()[0]
		return s.SessionID != first && s.State == session.StateReady
	})
	c2 := h.dial(0)
	defer c2.Close()
	if err := echoRoundTrip(c2, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := h.fwd.Ports()[0].SessionEnds["partition"]; got != 1 {
		t.Errorf("partition ends = %d, want 1 (%v)", got, h.fwd.Ports()[0].SessionEnds)
	}
}

// A session that stops working while its transport looks up — the agent stops acknowledging, the service
// keeps publication paused, or the agent's smux stream turns to garbage — is replaced: readiness is false
// meanwhile, new connections go to the healthy session of the pool, and the port heals.
func TestBrokenSessionIsReplaced(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(emu *emulator.Emulator, id string) error
		reason string
	}{
		{name: "agent stops acknowledging", break_: func(emu *emulator.Emulator, id string) error { return emu.StopAcking(id, true) }, reason: "stalled"},
		{name: "publication paused for good", break_: func(emu *emulator.Emulator, id string) error { return emu.PausePublication(id, -1) }, reason: "stalled"},
		{name: "smux protocol error", break_: func(emu *emulator.Emulator, id string) error { return emu.CorruptMux(id) }, reason: "mux_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := testutil.EchoServer(t)
			h := startHarness(t, harnessOpts{
				emu: emulator.Config{Pacing: emulator.PacingNone},
				pf: portforward.Config{Ports: []portforward.PortPair{{Remote: testutil.Port(ln)}}, Sessions: 2,
					StallTimeout: time.Second, ReconnectJitter: -1},
			})
			victim := h.fwd.Sessions()[0].SessionID
			c := h.dial(0)
			defer c.Close()
			if err := echoRoundTrip(c, []byte("before")); err != nil {
				t.Fatal(err)
			}
			if err := tc.break_(h.emu, victim); err != nil {
				t.Fatal(err)
			}
			// Data sent now finds the session broken: nothing comes back on it.
			c.Write([]byte("into the void"))
			testutil.WaitFor(t, "the broken session to be replaced", 30*time.Second, func() bool {
				for _, s := range h.fwd.Sessions() {
					if s.SessionID == victim {
						return false
					}
				}
				return h.fwd.Ports()[0].SessionEnds[tc.reason] >= 1
			})
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.Copy(io.Discard, c); !isReset(err) {
				t.Errorf("connection on the broken session ended with %v, want a reset", err)
			}
			waitReady(t, h, "the port to heal")
			for i := range 4 {
				c := h.dial(0)
				if err := echoRoundTrip(c, []byte(fmt.Sprintf("after %d", i))); err != nil {
					t.Errorf("connection %d after the replacement: %v", i, err)
				}
				c.Close()
			}
		})
	}
}

// Overlapping basic-mode clients each get their own destination connection's bytes and nobody else's.
func TestBasicModeOverlappingClientsGetTheirOwnBytes(t *testing.T) {
	h := basicHarness(t, startIDServer(t, false), portforward.Config{})
	var wg sync.WaitGroup
	ids := make(chan uint64, 6)
	errs := make(chan error, 6)
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", h.addrs[0].String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.Write([]byte{byte(i)})
			id, err := readIdentity(c, 128<<10)
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			ids <- id
		}()
	}
	wg.Wait()
	close(errs)
	close(ids)
	for err := range errs {
		t.Error(err)
	}
	seen := map[uint64]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("two clients received destination connection %d", id)
		}
		seen[id] = true
	}
}

// echoOnce dials the tunnel's first port and echoes msg once.
func echoOnce(h *harness, msg string) error {
	c, err := net.Dial("tcp", h.addrs[0].String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return echoRoundTrip(c, []byte(msg))
}
