package portforward_test

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// Stats is what the CLI's metrics read at scrape time: per port the open connections, resets and session
// ends by reason, the destination and the connect-latency buckets; per slot the session and counters that
// carry over when the slot's session is replaced.
func TestStatsSnapshot(t *testing.T) {
	echo := testutil.EchoServer(t)
	closed := testutil.EchoServer(t)
	closedPort := testutil.Port(closed)
	closed.Close() // the agent's dial to it is refused
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone},
		pf: portforward.Config{Ports: []portforward.PortPair{{Remote: testutil.Port(echo)}, {Remote: closedPort}},
			Sessions: 2, ReconnectJitter: -1},
	})
	testutil.WaitFor(t, "Stats().Ready", 10*time.Second, func() bool { return h.fwd.Stats().Ready })

	c := h.dial(0)
	defer c.Close()
	if err := echoRoundTrip(c, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	st := h.fwd.Stats()
	if len(st.Ports) != 2 {
		t.Fatalf("%d ports, want 2: %+v", len(st.Ports), st)
	}
	for i, p := range st.Ports {
		if bound := h.addrs[i].(*net.TCPAddr).Port; p.Port.Local != bound {
			t.Errorf("port %d is %s, want the bound local port %d", i, p.Port, bound)
		}
		if len(p.Sessions) != 2 || p.Sessions[0].Slot != 0 || p.Sessions[1].Slot != 1 {
			t.Errorf("port %d slots %+v, want slots 0 and 1", i, p.Sessions)
		}
		if p.LastErrorReason != "" {
			t.Errorf("port %d LastErrorReason %q while ready", i, p.LastErrorReason)
		}
	}
	if p := st.Ports[0]; p.OpenConnections != 1 || portOpenStreams(p) != 1 || p.Destination != portforward.DestinationReachable {
		t.Errorf("port 0 with a connection open: %d open connections, %d open streams, destination %s; want 1, 1, reachable",
			p.OpenConnections, portOpenStreams(p), p.Destination)
	}

	if err := expectReset(h.addrs[1].String(), 10*time.Second); err != nil {
		t.Fatalf("connection to the refused destination: %v", err)
	}
	testutil.WaitFor(t, "the refusal counted", 10*time.Second, func() bool {
		p := h.fwd.Stats().Ports[1]
		return p.Resets["destination_refused"] == 1 && p.Destination == portforward.DestinationUnreachable
	})
	p1 := h.fwd.Stats().Ports[1]
	if errs := p1.Sessions[0].ConnectErrors + p1.Sessions[1].ConnectErrors; errs != 1 {
		t.Errorf("port 1 ConnectErrors %d, want 1", errs)
	}
	if len(p1.Resets) != 1 {
		t.Errorf("port 1 resets %v, want only the refusal (a reason without resets is absent)", p1.Resets)
	}

	c.Close()
	testutil.WaitFor(t, "the connection to end", 10*time.Second, func() bool {
		p := h.fwd.Stats().Ports[0]
		return p.OpenConnections == 0 && portOpenStreams(p) == 0
	})
	p0 := h.fwd.Stats().Ports[0]
	hist := p0.ConnectSeconds
	if !slices.Equal(hist.Bounds, []float64{0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30}) ||
		len(hist.Counts) != len(hist.Bounds)+1 {
		t.Errorf("ConnectSeconds bounds %v with %d counts, want the 11 bounds and 12 counts", hist.Bounds, len(hist.Counts))
	}
	var n uint64
	for _, k := range hist.Counts {
		n += k
	}
	if hist.Count != 1 || n != 1 || hist.Sum <= 0 || hist.Sum > 30 {
		t.Errorf("ConnectSeconds of one connection to a ready session: count %d, bucket total %d, sum %v", hist.Count, n, hist.Sum)
	}
	slot := -1
	for i, s := range p0.Sessions {
		if !s.HasSession || s.SessionID == "" || s.State != session.StateReady || s.Starts != 1 || s.TotalResumes != 0 {
			t.Errorf("port 0 slot %d: %+v, want a ready session, started once, never resumed", i, s)
		}
		if s.Streams == 1 {
			slot = i
		}
	}
	if slot < 0 {
		t.Fatalf("no slot of port 0 carried the connection: %+v", p0.Sessions)
	}
	carried := p0.Sessions[slot]
	if ch := carried.Channel; ch.BytesSent < 5 || ch.BytesReceived < 5 || ch.FramesSent < 1 {
		t.Errorf("the carrying slot's channel: %d bytes sent, %d received, %d frames sent; want the echo's 5 each way",
			ch.BytesSent, ch.BytesReceived, ch.FramesSent)
	}

	// The slot's counters are cumulative over its sessions; the gauges are the new session's.
	if err := h.emu.TerminateSession(carried.SessionID); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "the slot's new session", 30*time.Second, func() bool {
		s := h.fwd.Stats().Ports[0].Sessions[slot]
		return s.HasSession && s.SessionID != carried.SessionID && s.State == session.StateReady
	})
	p0 = h.fwd.Stats().Ports[0]
	s := p0.Sessions[slot]
	if s.Starts != 2 || s.Streams != 1 || s.Channel.BytesSent < carried.Channel.BytesSent ||
		s.Channel.BytesReceived < carried.Channel.BytesReceived || s.Channel.FramesSent < carried.Channel.FramesSent {
		t.Errorf("slot after its session was replaced: %+v, want 2 starts and the first session's counters kept (%+v)", s, carried)
	}
	ends := p0.SessionEnds["terminated"] + p0.SessionEnds["not_resumable"]
	if ends != 1 || len(p0.SessionEnds) != 1 {
		t.Errorf("port 0 session ends %v, want the one administrator's end", p0.SessionEnds)
	}
	if got := h.fwd.Sessions(); len(got) != 4 || got[slot].SessionID != s.SessionID {
		t.Errorf("Sessions() %+v, want the 4 slots of Stats in port order", got)
	}
}

// A port without a ready session reports why in LastErrorReason, and its slots hold no session.
func TestStatsLastErrorReason(t *testing.T) {
	h := startHarness(t, harnessOpts{
		emu: emulator.Config{Pacing: emulator.PacingNone,
			Instances: []emulator.Instance{{ID: testInstance, PingStatus: emulator.PingConnectionLost}}},
		pf: portforward.Config{Ports: []portforward.PortPair{{Remote: 80}}, RetryStart: true},
	})
	testutil.WaitFor(t, "LastErrorReason", 30*time.Second, func() bool { return h.fwd.Stats().Ports[0].LastErrorReason != "" })
	st := h.fwd.Stats()
	p := st.Ports[0]
	if want := h.fwd.Status().Ports[0].Reason; p.LastErrorReason != want {
		t.Errorf("LastErrorReason %q, want Status's reason %q", p.LastErrorReason, want)
	}
	if st.Ready || len(p.Sessions) != 1 || p.Sessions[0].HasSession || p.Sessions[0].State != session.StateClosed ||
		p.Destination != portforward.DestinationUnknown {
		t.Errorf("offline target: %+v, want not ready, one slot without a session, destination unknown", st)
	}
}

func portOpenStreams(p portforward.PortStats) int {
	n := 0
	for _, s := range p.Sessions {
		n += s.OpenStreams
	}
	return n
}
