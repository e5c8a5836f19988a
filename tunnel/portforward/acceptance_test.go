package portforward_test

// Acceptance tests: the real stack on loopback sockets — emulator (SSM JSON 1.1 API, message gateway,
// agent), the real aws-sdk-go-v2 client, websockets, smux — with the race detector.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// body returns the deterministic body of request i: sizes from 0 to ~100 KiB.
func body(i int) []byte {
	n := (i * 7919) % (100 << 10)
	b := make([]byte, n)
	newPattern(uint64(i) + 1000).Read(b)
	return b
}

func startBodyServer(t *testing.T) int {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i, err := strconv.Atoi(r.URL.Query().Get("i"))
		if err != nil {
			http.Error(w, "bad i", http.StatusBadRequest)
			return
		}
		w.Write(body(i))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

func TestConcurrentHTTPRequestsOneSession(t *testing.T) {
	port := startBodyServer(t)
	h := startHarness(t, harnessOpts{
		emu:     emulator.Config{Pacing: emulator.PacingNone},
		pf:      portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: port}}},
		channel: datachannel.Config{MaxPayloadSize: 32 << 10},
	})
	const n = 200
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n, DisableKeepAlives: true}, Timeout: 2 * time.Minute}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := client.Get(fmt.Sprintf("http://%s/?i=%d", h.addrs[0], i))
			if err != nil {
				errs <- fmt.Errorf("request %d: %w", i, err)
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				errs <- fmt.Errorf("request %d body: %w", i, err)
				return
			}
			if want := body(i); !bytes.Equal(got, want) {
				errs <- fmt.Errorf("request %d: body of %d bytes differs from the %d bytes sent", i, len(got), len(want))
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(h.emu.Sessions()); got != 1 {
		t.Errorf("emulator saw %d sessions, want all requests through 1", got)
	}
	ss := h.fwd.Sessions()
	if ss[0].Streams != n {
		t.Errorf("streams carried = %d, want %d", ss[0].Streams, n)
	}
}

func bulk(t *testing.T, pacing emulator.Pacing, n int64, ch datachannel.Config) {
	srv := startPatternServer(t, n, 7)
	h := startHarness(t, harnessOpts{
		emu:     emulator.Config{Pacing: pacing},
		pf:      portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: srv.port()}}},
		channel: ch,
	})
	c := h.dial(0)
	defer c.Close()
	start := time.Now()
	down, err := transfer(c, n, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if want := patternSum(7, n); down != want {
		t.Errorf("downstream SHA-256 %x, want %x", down, want)
	}
	up := <-srv.received
	if want := patternSum(8, n); up != want {
		t.Errorf("upstream SHA-256 at the destination %x, want %x", up, want)
	}
	t.Logf("%d MiB each way, pacing %s: %v (%.1f MB/s per direction)", n>>20, pacing, elapsed, float64(n)/elapsed.Seconds()/1e6)
}

// TestBulk64MiBEachWayPacingNone carries 64 MiB each way. The race detector slows this path about
// eightfold, so on a loaded host 64 MiB under -race can take minutes and, together with the other tests,
// exceed go test's default 10 min package timeout: run with -timeout 30m there.
func TestBulk64MiBEachWayPacingNone(t *testing.T) {
	bulk(t, emulator.PacingNone, 64<<20, datachannel.Config{MaxPayloadSize: 32 << 10})
}

func TestBulk2MiBPacingAgent(t *testing.T) {
	// The service's defaults on our side too: 1 KiB payloads, ~1 MB/s.
	bulk(t, emulator.PacingAgent, 2<<20, datachannel.Config{MaxPayloadSize: datachannel.DefaultMaxPayloadSize, Rate: datachannel.DefaultRate})
}

func TestWebsocketDroppedFiveTimesDuringTransfer(t *testing.T) {
	const n = 32 << 20
	const drops = 5
	srv := startPatternServer(t, n, 11)
	h := startHarness(t, harnessOpts{
		emu:     emulator.Config{Pacing: emulator.PacingNone},
		pf:      portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: srv.port()}}},
		channel: datachannel.Config{MaxPayloadSize: 32 << 10},
	})
	sid := h.fwd.Sessions()[0].SessionID
	c := h.dial(0)
	defer c.Close()
	var dropped atomic.Int32
	var dropErrs []error
	sum, err := transfer(c, n, 12, func(got int64) {
		// Drop at evenly spaced points of the download; a drop that finds no websocket attached (still
		// resuming) is retried at the next read.
		k := dropped.Load()
		if k < drops && got >= int64(k+1)*n/(drops+1) {
			if err := h.emu.DropClient(sid); err == nil {
				dropped.Add(1)
			} else if !errors.Is(err, emulator.ErrNotConnected) {
				dropErrs = append(dropErrs, err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range dropErrs {
		t.Error(e)
	}
	if dropped.Load() != drops {
		t.Fatalf("dropped the websocket %d times, want %d", dropped.Load(), drops)
	}
	if want := patternSum(11, n); sum != want {
		t.Errorf("downstream SHA-256 differs after %d drops", drops)
	}
	if up, want := <-srv.received, patternSum(12, n); up != want {
		t.Errorf("upstream SHA-256 differs after %d drops", drops)
	}
	info, _ := h.emu.Session(sid)
	if info.Connects < drops+1 {
		t.Errorf("emulator saw %d websocket connects, want ≥ %d", info.Connects, drops+1)
	}
	ss := h.fwd.Sessions()[0]
	if ss.SessionID != sid || ss.Resumes < drops {
		t.Errorf("session %s with %d resumes, want the same session %s resumed ≥ %d times", ss.SessionID, ss.Resumes, sid, drops)
	}
	if got := len(h.emu.Sessions()); got != 1 {
		t.Errorf("%d sessions started, want the transfer to stay on 1", got)
	}
}

func TestResumeRefusedStartsNewSession(t *testing.T) {
	for _, refusal := range []emulator.ResumeRefusal{emulator.ResumeEmptyToken, emulator.ResumeError} {
		t.Run(fmt.Sprint(refusal), func(t *testing.T) {
			port := startBodyServer(t)
			h := startHarness(t, harnessOpts{
				emu: emulator.Config{Pacing: emulator.PacingNone},
				pf:  portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: port}}},
			})
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			get := func(i int) error {
				resp, err := client.Get(fmt.Sprintf("http://%s/?i=%d", h.addrs[0], i))
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				got, err := io.ReadAll(resp.Body)
				if err == nil && !bytes.Equal(got, body(i)) {
					err = fmt.Errorf("body %d differs", i)
				}
				return err
			}
			if err := get(1); err != nil {
				t.Fatal(err)
			}
			first := h.fwd.Sessions()[0].SessionID
			if err := h.emu.SetFaults(emulator.Faults{RefuseResume: refusal}); err != nil {
				t.Fatal(err)
			}
			if err := h.emu.DropClient(first); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, "a new session", 30*time.Second, func() bool {
				s := h.fwd.Sessions()[0]
				return s.SessionID != "" && s.SessionID != first && s.State == session.StateReady
			})
			if err := h.emu.SetFaults(emulator.Faults{}); err != nil {
				t.Fatal(err)
			}
			// The listener never closed: the same address takes new connections on the new session.
			for i := 2; i < 12; i++ {
				if err := get(i); err != nil {
					t.Fatalf("request %d after the new session: %v", i, err)
				}
			}
			if st := h.emu.Stats(); st.SessionsStarted != 2 || st.ResumesRefused < 1 {
				t.Errorf("emulator stats %+v: want 2 sessions started and ≥1 resume refused", st)
			}
		})
	}
}

func echoRoundTrip(c net.Conn, msg []byte) error {
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

func TestDestinationRefusedClosesOnlyThatConnection(t *testing.T) {
	ln := testutil.EchoServer(t)
	port := ln.Addr().(*net.TCPAddr).Port
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf:  portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: port}}},
	})
	const inFlight = 20
	conns := make([]net.Conn, inFlight)
	for i := range conns {
		conns[i] = h.dial(0)
		defer conns[i].Close()
		if err := echoRoundTrip(conns[i], []byte(fmt.Sprintf("hello %d", i))); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	// Established connections survive their listener; new dials to the port are now refused, and the
	// tunnel resets the connection that could not reach the destination, as the destination would have.
	ln.Close()
	start := time.Now()
	if err := expectReset(h.addrs[0].String(), 10*time.Second); err != nil {
		t.Fatalf("refused connection: %v", err)
	}
	t.Logf("refused connection reset after %v", time.Since(start))
	if got := h.fwd.Ports()[0].Resets["destination_refused"]; got != 1 {
		t.Errorf("destination_refused resets = %d, want 1", got)
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte(i)}, 64<<10)
			if err := echoRoundTrip(c, msg); err != nil {
				t.Errorf("connection %d after the refusal: %v", i, err)
			}
		}()
	}
	wg.Wait()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestBasicModeOldAgent(t *testing.T) {
	ln := testutil.EchoServer(t)
	port := ln.Addr().(*net.TCPAddr).Port
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone, Instances: []emulator.Instance{{ID: testInstance, AgentVersion: "3.0.196.0"}}},
		pf:  portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: port}}},
	})
	// Several connections one after the other, each with a lone "\n" (the official client rewrites it to
	// "\r", §9.3) and a larger payload, byte-exact.
	for i := range 3 {
		c := h.dial(0)
		if err := echoRoundTrip(c, []byte("\n")); err != nil {
			t.Fatalf("connection %d lone newline: %v", i, err)
		}
		msg := make([]byte, 200<<10)
		newPattern(uint64(i)).Read(msg)
		if err := echoRoundTrip(c, msg); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}
	// A basic session carries one connection (§9.3): each of the three had its own.
	if got := len(h.emu.Sessions()); got < 3 {
		t.Errorf("%d sessions, want one per connection (at least 3)", got)
	}
}

// gatedAPI holds ResumeSession calls until released, so a test can observe a session while it resumes.
type gatedAPI struct {
	session.API
	gate chan struct{}
}

func (g *gatedAPI) ResumeSession(ctx context.Context, in *ssm.ResumeSessionInput, opts ...func(*ssm.Options)) (*ssm.ResumeSessionOutput, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.API.ResumeSession(ctx, in, opts...)
}

func TestPoolSpreadsConnectionsAndSkipsResumingSession(t *testing.T) {
	ln := testutil.EchoServer(t)
	port := ln.Addr().(*net.TCPAddr).Port
	gate := make(chan struct{})
	h := startHarness(t, harnessOpts{
		emu:     emulator.Config{Pacing: emulator.PacingNone},
		pf:      portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: port}}, Sessions: 3},
		wrapAPI: func(a session.API) session.API { return &gatedAPI{API: a, gate: gate} },
	})
	if got := len(h.emu.Sessions()); got != 3 {
		t.Fatalf("%d sessions started, want 3", got)
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	open := func(k int) {
		for range k {
			c := h.dial(0)
			conns = append(conns, c)
			if err := echoRoundTrip(c, []byte("ping")); err != nil {
				t.Fatal(err)
			}
		}
	}
	open(9)
	for _, s := range h.fwd.Sessions() {
		if s.OpenStreams != 3 {
			t.Errorf("slot %d has %d open streams, want 3 (even spread): %+v", s.Slot, s.OpenStreams, h.fwd.Sessions())
		}
	}
	victim := h.fwd.Sessions()[0]
	if err := h.emu.DropClient(victim.SessionID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the dropped session to be resuming", 10*time.Second, func() bool {
		return h.fwd.Sessions()[0].State == session.StateResuming
	})
	open(6)
	ss := h.fwd.Sessions()
	if ss[0].OpenStreams != 3 || ss[0].Streams != 3 {
		t.Errorf("resuming slot took new connections: %+v", ss[0])
	}
	if ss[1].OpenStreams != 6 || ss[2].OpenStreams != 6 {
		t.Errorf("healthy slots have %d and %d streams, want 6 and 6", ss[1].OpenStreams, ss[2].OpenStreams)
	}
	close(gate)
	testutil.WaitFor(t, "the dropped session to resume", 30*time.Second, func() bool {
		return h.fwd.Sessions()[0].State == session.StateReady
	})
	// Its old streams survived the drop, and it is now the least loaded, so it takes the next ones.
	for i, c := range conns[:9] {
		if err := echoRoundTrip(c, []byte("after resume")); err != nil {
			t.Errorf("connection %d after resume: %v", i, err)
		}
	}
	open(3)
	if s := h.fwd.Sessions()[0]; s.OpenStreams != 6 || s.SessionID != victim.SessionID {
		t.Errorf("resumed slot: %+v, want session %s with 6 open streams", s, victim.SessionID)
	}
}

func TestGracefulShutdownTerminatesSessions(t *testing.T) {
	ln := testutil.EchoServer(t)
	port := ln.Addr().(*net.TCPAddr).Port
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf:  portforward.Config{Ports: []portforward.PortPair{{Local: 0, Remote: port}}, Sessions: 2, DrainTimeout: 10 * time.Second},
	})
	c := h.dial(0)
	if err := echoRoundTrip(c, []byte("x")); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- h.stop() }()
	testutil.WaitFor(t, "NotReady while draining", 10*time.Second, func() bool { return h.fwd.Ready() != nil })
	// The open connection still works during the drain; closing it lets the drain finish early.
	if err := echoRoundTrip(c, []byte("during drain")); err != nil {
		t.Errorf("open connection during drain: %v", err)
	}
	c.Close()
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Run returned %v, want nil after a graceful shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("drain did not finish after the last connection closed")
	}
	if _, err := net.Dial("tcp", h.addrs[0].String()); err == nil {
		t.Error("listener still accepting after shutdown")
	}
	st := h.emu.Stats()
	if st.APICalls["TerminateSession"] != 2 {
		t.Errorf("TerminateSession called %d times, want 2", st.APICalls["TerminateSession"])
	}
	for _, s := range h.emu.Sessions() {
		if !s.Ended {
			t.Errorf("session %s not ended", s.ID)
		}
	}
}
