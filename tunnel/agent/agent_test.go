package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xtaci/smux"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// echoServer is a real loopback TCP destination that echoes and counts connections.
type echoServer struct {
	ln    net.Listener
	conns atomic.Int64
}

func newEcho(t *testing.T) *echoServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.conns.Add(1)
			go func() { _, _ = io.Copy(c, c); _ = c.Close() }()
		}
	}()
	return e
}

func (e *echoServer) port() string { return strconv.Itoa(e.ln.Addr().(*net.TCPAddr).Port) }

// refusedPort returns a loopback port with nothing listening.
func refusedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close()
	return p
}

type harness struct {
	t      *testing.T
	ctx    context.Context
	client *datachannel.Channel
	agent  *datachannel.Channel
	served chan error
	res    datachannel.HandshakeResult
}

// start runs Serve on an agent channel and ClientHandshake on a client channel joined by a Pipe.
func start(t *testing.T, cfg Config, clientVersion string) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	c, err := datachannel.New(datachannel.Config{Role: datachannel.RoleClient})
	if err != nil {
		t.Fatal(err)
	}
	a, err := datachannel.New(datachannel.Config{Role: datachannel.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); _ = a.Close() })
	x, y := datachannel.Pipe(0)
	c.Attach(x)
	a.Attach(y)
	h := &harness{t: t, ctx: ctx, client: c, agent: a, served: make(chan error, 1)}
	go func() { h.served <- Serve(ctx, a, cfg) }()
	h.res, err = datachannel.ClientHandshake(ctx, c, clientVersion)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return h
}

// muxClient is a minimal smux client over the channel, as tunnel/portforward does.
type muxClient struct {
	sess  *smux.Session
	flags chan message.Flag
}

func (h *harness) mux() *muxClient {
	local, remote := net.Pipe()
	conf := smux.DefaultConfig()
	conf.Version = 1
	conf.KeepAliveDisabled = true
	sess, err := smux.Client(remote, conf)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = sess.Close(); _ = local.Close() })
	m := &muxClient{sess: sess, flags: make(chan message.Flag, 16)}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := local.Read(buf)
			if n > 0 && h.client.Send(h.ctx, message.PayloadOutput, buf[:n]) != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			pt, p, err := h.client.Receive(h.ctx)
			if err != nil {
				return
			}
			switch pt {
			case message.PayloadOutput:
				if _, err := local.Write(p); err != nil {
					return
				}
			case message.PayloadFlag:
				f, _ := message.DecodeFlag(p)
				m.flags <- f
			}
		}
	}()
	return m
}

// echo writes n random bytes on a new stream and checks they come back.
func (m *muxClient) echo(t *testing.T, n int) error {
	st, err := m.sess.OpenStream()
	if err != nil {
		return err
	}
	defer st.Close()
	return echoOn(st, n)
}

func echoOn(st io.ReadWriter, n int) error {
	data := make([]byte, n)
	_, _ = rand.Read(data)
	errc := make(chan error, 1)
	go func() { _, err := st.Write(data); errc <- err }()
	got := make([]byte, n)
	if _, err := io.ReadFull(st, got); err != nil {
		return err
	}
	if err := <-errc; err != nil {
		return err
	}
	if !bytes.Equal(got, data) {
		return errors.New("echo mismatch")
	}
	return nil
}

func (h *harness) terminate() {
	h.t.Helper()
	if err := h.client.Send(h.ctx, message.PayloadFlag, message.FlagTerminateSession.Payload()); err != nil {
		h.t.Fatal(err)
	}
	select {
	case err := <-h.served:
		if err != nil {
			h.t.Fatalf("Serve after TerminateSession = %v, want nil", err)
		}
	case <-h.ctx.Done():
		_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
		h.t.Fatal("Serve did not end on TerminateSession")
	}
}

func lpf(port string) message.PortParameters {
	return message.PortParameters{PortNumber: port, LocalPortNumber: "0", Type: message.LocalPortForwarding}
}

func TestMuxConcurrentStreams(t *testing.T) {
	e := newEcho(t)
	h := start(t, Config{Properties: lpf(e.port()), CustomerMessage: "welcome"}, "")
	if h.res.AgentVersion != message.MustParseVersion(DefaultAgentVersion) || h.res.Properties != lpf(e.port()) || h.res.CustomerMessage != "welcome" {
		t.Fatalf("handshake result %+v", h.res)
	}
	m := h.mux()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- m.echo(t, 128<<10) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := e.conns.Load(); got != 8 {
		t.Fatalf("destination saw %d connections, want 8", got)
	}
	h.terminate()
}

func TestConnectToPortErrorOtherStreamsContinue(t *testing.T) {
	e := newEcho(t)
	refused := refusedPort(t)
	var dials atomic.Int64
	d := dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) == 2 {
			addr = "127.0.0.1:" + refused // a real refused connection for the second stream
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	})
	h := start(t, Config{Properties: lpf(e.port()), Dialer: d}, "")
	m := h.mux()
	first, err := m.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if err := echoOn(first, 1000); err != nil {
		t.Fatal(err)
	}
	bad, err := m.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(bad); err != nil {
		t.Fatalf("refused stream: %v, want EOF", err)
	}
	select {
	case f := <-m.flags:
		if f != message.FlagConnectToPortError {
			t.Fatalf("flag %v", f)
		}
	case <-h.ctx.Done():
		t.Fatal("no ConnectToPortError")
	}
	for range 4 {
		if err := m.echo(t, 10_000); err != nil {
			t.Fatal(err)
		}
	}
	if err := echoOn(first, 1000); err != nil {
		t.Fatalf("first stream after the failure: %v", err)
	}
	h.terminate()
}

type dialerFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialerFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// TestDialTimeoutDoesNotBlockOtherStreams: a black-holed dial occupies only its own stream (§9.4 step 3 is
// the real agent's bug), and ends in ConnectToPortError after DialTimeout.
func TestDialTimeoutDoesNotBlockOtherStreams(t *testing.T) {
	e := newEcho(t)
	var dials atomic.Int64
	var blackHolePending atomic.Bool
	entered := make(chan struct{})
	d := dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) == 1 {
			blackHolePending.Store(true)
			close(entered)
			<-ctx.Done() // a destination that never answers SYN
			blackHolePending.Store(false)
			return nil, ctx.Err()
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	})
	h := start(t, Config{Properties: lpf(e.port()), Dialer: d, DialTimeout: 4 * time.Second}, "")
	m := h.mux()
	hole, err := m.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	for range 3 {
		if err := m.echo(t, 5000); err != nil {
			t.Fatal(err)
		}
	}
	if !blackHolePending.Load() {
		t.Fatal("the other streams only completed after the black-holed dial gave up")
	}
	select {
	case f := <-m.flags:
		if f != message.FlagConnectToPortError {
			t.Fatalf("flag %v", f)
		}
	case <-h.ctx.Done():
		t.Fatal("no ConnectToPortError after the dial timeout")
	}
	if _, err := io.ReadAll(hole); err != nil {
		t.Fatalf("black-holed stream: %v, want EOF", err)
	}
	h.terminate()
}

func TestDestinationPolicy(t *testing.T) {
	any4 := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	for _, tc := range []struct {
		host    string
		allowed []netip.Prefix
		ok      bool
	}{
		{"169.254.169.254", nil, false},
		{"169.254.169.254", any4, false},
		{"169.254.169.123", any4, false},
		{"fd00:ec2::254", any4, false},
		{"::ffff:169.254.169.254", any4, false},
		{"10.0.0.1", nil, false},
		{"10.0.0.1", any4, true},
		{"127.0.0.1", nil, true},
		{"::1", nil, true},
		{"", nil, true}, // localhost
	} {
		cfg := Config{Properties: message.PortParameters{PortNumber: "80", Host: tc.host}, AllowedDestinations: tc.allowed}.withDefaults()
		_, err := resolveDestination(context.Background(), cfg)
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrDestinationForbidden)) {
			t.Errorf("host %q allowed %v: err %v, want ok=%v", tc.host, tc.allowed, err, tc.ok)
		}
	}
	// Serve refuses the metadata address before any handshake, like the real agent (§9.1).
	a, err := datachannel.New(datachannel.Config{Role: datachannel.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	err = Serve(context.Background(), a, Config{Properties: message.PortParameters{PortNumber: "80", Host: "169.254.169.254", Type: message.LocalPortForwarding}, AllowedDestinations: any4})
	if !errors.Is(err, ErrDestinationForbidden) {
		t.Fatalf("Serve = %v, want ErrDestinationForbidden", err)
	}
}

func TestBasicMode(t *testing.T) {
	e := newEcho(t)
	h := start(t, Config{Properties: lpf(e.port()), AgentVersion: "3.0.196.0"}, "")
	if h.res.AgentVersion.Compare(message.LastBasicAgentVersion) > 0 {
		t.Fatalf("agent version %v should select basic mode", h.res.AgentVersion)
	}
	roundTrip := func(s string) {
		t.Helper()
		if err := h.client.Send(h.ctx, message.PayloadOutput, []byte(s)); err != nil {
			t.Fatal(err)
		}
		var got []byte
		for len(got) < len(s) {
			pt, p, err := h.client.Receive(h.ctx)
			if err != nil {
				t.Fatal(err)
			}
			if pt != message.PayloadOutput {
				t.Fatalf("payload type %v", pt)
			}
			got = append(got, p...)
		}
		if string(got) != s {
			t.Fatalf("echo %q, want %q", got, s)
		}
	}
	roundTrip("hello\n")
	roundTrip("\n") // never rewritten (§9.3 plugin bug)
	if err := h.client.Send(h.ctx, message.PayloadFlag, message.FlagDisconnectToPort.Payload()); err != nil {
		t.Fatal(err)
	}
	roundTrip("again") // redialled on the next Output
	if got := e.conns.Load(); got != 2 {
		t.Fatalf("destination saw %d connections, want 2 (dial at start, redial after DisconnectToPort)", got)
	}
	h.terminate()
}

func TestHandshakeTimeout(t *testing.T) {
	e := newEcho(t)
	a, err := datachannel.New(datachannel.Config{Role: datachannel.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	err = Serve(context.Background(), a, Config{Properties: lpf(e.port()), HandshakeTimeout: 200 * time.Millisecond})
	if !errors.Is(err, ErrHandshakeTimeout) {
		t.Fatalf("Serve = %v, want ErrHandshakeTimeout", err)
	}
}

func TestSelectMode(t *testing.T) {
	v := message.MustParseVersion
	for _, tc := range []struct {
		typ           string
		agent, client string
		mode          Mode
		keepAliveOff  bool
	}{
		{message.LocalPortForwarding, "3.3.987.0", "1.2.764.0", ModeMux, true},
		{message.LocalPortForwarding, "3.3.987.0", "1.2.0.0", ModeMux, false}, // source-built plugin: aws/session-manager-plugin#93
		{message.LocalPortForwarding, "3.3.987.0", "1.2.331.0", ModeMux, false},
		{message.LocalPortForwarding, "3.0.222.0", "1.1.70.0", ModeMux, false},
		{message.LocalPortForwarding, "3.0.196.0", "1.2.764.0", ModeBasic, true},
		{message.LocalPortForwarding, "3.3.987.0", "1.1.69.0", ModeBasic, false},
		{"", "3.3.987.0", "1.2.764.0", ModeBasic, true},
	} {
		mode, ka := SelectMode(message.PortParameters{Type: tc.typ}, v(tc.agent), v(tc.client))
		if mode != tc.mode || ka != tc.keepAliveOff {
			t.Errorf("%q agent %s client %s: mode %v keepAliveOff %v, want %v %v", tc.typ, tc.agent, tc.client, mode, ka, tc.mode, tc.keepAliveOff)
		}
	}
	if lenientVersion("") != (message.Version{}) || lenientVersion("1.1.70") != v("1.1.70.0") || lenientVersion("x") != (message.Version{}) {
		t.Fatal("lenientVersion")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("missing portNumber: %v", err)
	}
	if err := (Config{Properties: lpf("80"), AgentVersion: "3.3"}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("bad agent version: %v", err)
	}
}

// TestSmuxFrameSize: the official 32768-byte smux frame with the service's 1 KiB payloads; with payloads
// that hold a whole frame, one header less, so a frame is one data frame.
func TestSmuxFrameSize(t *testing.T) {
	for _, tc := range []struct{ payload, want int }{{1024, 32768}, {32767, 32768}, {32768, 32760}, {256 << 10, 32760}} {
		if got := smuxFrameSize(tc.payload); got != tc.want {
			t.Errorf("smuxFrameSize(%d) = %d, want %d", tc.payload, got, tc.want)
		}
	}
}

// staticResolver answers every lookup with the same addresses, so tests do not depend on /etc/hosts.
type staticResolver []netip.Addr

func (r staticResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return r, nil
}

// TestRemoteHostDenylist: agents from 3.3.4851.0 on refuse loopback (by any notation or as the name
// localhost) and the ECS/EKS container credential endpoints as the host parameter, whatever the allow list
// says (§14); the plain document's localhost stays allowed, and older agents allow what the list allows.
func TestRemoteHostDenylist(t *testing.T) {
	anyAddr := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	loop := staticResolver{netip.MustParseAddr("127.0.0.1")}
	for _, tc := range []struct {
		agent, host string
		resolver    staticResolver
		ok          bool
	}{
		{RemoteHostDenylistAgentVersion, "127.0.0.1", nil, false},
		{RemoteHostDenylistAgentVersion, "127.9.8.7", nil, false},
		{RemoteHostDenylistAgentVersion, "::1", nil, false},
		{RemoteHostDenylistAgentVersion, "[::1]", nil, false},
		{RemoteHostDenylistAgentVersion, "::ffff:127.0.0.1", nil, false},
		{RemoteHostDenylistAgentVersion, "127.1", nil, false},
		{RemoteHostDenylistAgentVersion, "0x7f000001", nil, false},
		{RemoteHostDenylistAgentVersion, "2130706433", nil, false},
		{RemoteHostDenylistAgentVersion, "0177.0.0.1", nil, false},
		{RemoteHostDenylistAgentVersion, "localhost", nil, false},
		{RemoteHostDenylistAgentVersion, "LocalHost.", nil, false},
		{RemoteHostDenylistAgentVersion, "app.localhost", nil, false},
		{RemoteHostDenylistAgentVersion, "loopback.example", loop, false}, // a name that resolves to loopback
		{RemoteHostDenylistAgentVersion, "169.254.170.2", nil, false},
		{RemoteHostDenylistAgentVersion, "169.254.170.23", nil, false},
		{RemoteHostDenylistAgentVersion, "fd00:ec2::23", nil, false},
		{RemoteHostDenylistAgentVersion, "169.254.169.254", nil, false}, // metadata: denied by every agent
		{RemoteHostDenylistAgentVersion, "10.0.0.1", nil, true},
		{RemoteHostDenylistAgentVersion, "", loop, true}, // AWS-StartPortForwardingSession: localhost by design
		{"3.3.5000.0", "127.0.0.1", nil, false},
		{DefaultAgentVersion, "127.0.0.1", nil, true},
		{DefaultAgentVersion, "127.1", nil, true}, // normalised, then allowed as before
		{DefaultAgentVersion, "localhost", loop, true},
		{DefaultAgentVersion, "169.254.170.2", nil, true},
		{"3.3.4850.0", "fd00:ec2::23", nil, true},
	} {
		cfg := Config{AgentVersion: tc.agent, Properties: message.PortParameters{PortNumber: "80", Host: tc.host}, AllowedDestinations: anyAddr}
		if tc.resolver != nil {
			cfg.Resolver = tc.resolver
		}
		cfg = cfg.withDefaults()
		addrs, err := resolveDestination(context.Background(), cfg)
		if tc.ok != (err == nil) || (!tc.ok && !errors.Is(err, ErrDestinationForbidden)) {
			t.Errorf("agent %s host %q: addrs %v err %v, want ok=%v", tc.agent, tc.host, addrs, err, tc.ok)
		}
		if !tc.ok && err != nil && tc.host != "169.254.169.254" && !strings.Contains(err.Error(), RemoteHostDenylistAgentVersion) {
			t.Errorf("agent %s host %q: error %q does not say which agents refuse it", tc.agent, tc.host, err)
		}
	}
	if addrs, err := resolveDestination(context.Background(), Config{Properties: message.PortParameters{PortNumber: "80", Host: "0x7f.1"}}.withDefaults()); err != nil || len(addrs) != 1 || addrs[0] != "127.0.0.1:80" {
		t.Errorf("old agent, host 0x7f.1: %v %v, want a dial of 127.0.0.1:80", addrs, err)
	}
}

// TestRemoteHostDenylistServe: through a real channel pair, a new agent fails the session before the
// handshake for a loopback host, as the real agent reports a forbidden destination (§9.1), while the same
// agent forwards the plain document's localhost.
func TestRemoteHostDenylistServe(t *testing.T) {
	e := newEcho(t)
	a, err := datachannel.New(datachannel.Config{Role: datachannel.RoleAgent})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	props := lpf(e.port())
	props.Host = "127.0.0.1"
	err = Serve(context.Background(), a, Config{AgentVersion: RemoteHostDenylistAgentVersion, Properties: props})
	if !errors.Is(err, ErrDestinationForbidden) || !strings.Contains(err.Error(), "127.0.0.1") {
		t.Fatalf("Serve = %v, want ErrDestinationForbidden naming 127.0.0.1", err)
	}
	h := start(t, Config{AgentVersion: RemoteHostDenylistAgentVersion, Properties: lpf(e.port())}, "")
	if err := h.mux().echo(t, 4096); err != nil {
		t.Fatalf("plain document's localhost on a new agent: %v", err)
	}
	h.terminate()
}

// TestInjectorCorruptsMux: bytes injected into a running mux session reach the client's smux between the
// server's frames, so a frame with version 9 is a protocol error for the client's smux session; outside mux
// mode Inject reports ErrNotMultiplexed.
func TestInjectorCorruptsMux(t *testing.T) {
	var idle Injector
	if err := idle.Inject([]byte{9, 3, 0, 0, 0, 0, 0, 0}); !errors.Is(err, ErrNotMultiplexed) {
		t.Fatalf("Inject before a session = %v, want ErrNotMultiplexed", err)
	}
	e := newEcho(t)
	inj := &Injector{}
	h := start(t, Config{Properties: lpf(e.port()), Injector: inj}, "")
	m := h.mux()
	st, err := m.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// A stream streaming data while the frame is injected: it must land between frames, not inside one.
	errc := make(chan error, 1)
	go func() { errc <- echoOn(st, 512<<10) }()
	accepted := make(chan error, 1)
	go func() { _, err := m.sess.AcceptStream(); accepted <- err }()
	if err := inj.Inject([]byte{9, 3, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, smux.ErrInvalidProtocol) {
			t.Fatalf("client smux after the injected frame: %v, want %v", err, smux.ErrInvalidProtocol)
		}
	case <-h.ctx.Done():
		t.Fatal("the client's smux saw no protocol error")
	}
	_ = st.Close()
	<-errc
	h.terminate()
	if err := inj.Inject([]byte{9}); !errors.Is(err, ErrNotMultiplexed) {
		t.Fatalf("Inject after the session = %v, want ErrNotMultiplexed", err)
	}

	b := &Injector{}
	hb := start(t, Config{Properties: lpf(e.port()), AgentVersion: "3.0.196.0", Injector: b}, "")
	if err := b.Inject([]byte{9}); !errors.Is(err, ErrNotMultiplexed) {
		t.Fatalf("Inject in basic mode = %v, want ErrNotMultiplexed", err)
	}
	hb.terminate()
}
