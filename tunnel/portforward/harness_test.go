package portforward_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/internal/testutil/emutest"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

const testInstance = emutest.Instance

// testLogger logs to stderr when SSMTUNNEL_TEST_LOG is set, and nowhere otherwise.
func testLogger() *slog.Logger {
	if os.Getenv("SSMTUNNEL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// harness is the real stack on loopback: the emulator (SSM API + message gateway + agent), the real
// aws-sdk-go-v2 SSM client pointed at it, and a Forwarder.
type harness struct {
	t      *testing.T
	emu    *emulator.Emulator
	api    session.API
	fwd    *portforward.Forwarder
	addrs  []net.Addr
	cancel context.CancelFunc
	runErr chan error
}

type harnessOpts struct {
	emu     emulator.Config
	pf      portforward.Config
	channel datachannel.Config
	wrapAPI func(session.API) session.API
}

func startHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	if len(o.emu.Instances) == 0 {
		o.emu.Instances = []emulator.Instance{{ID: testInstance}}
	}
	if o.emu.Logger == nil {
		o.emu.Logger = testLogger()
	}
	emu := emutest.Start(t, o.emu)
	var api session.API = testutil.SSMClient(emu.Endpoint())
	if o.wrapAPI != nil {
		api = o.wrapAPI(api)
	}
	client, err := session.NewClient(session.ClientConfig{
		API: api, Channel: o.channel, Logger: testLogger(),
		ResumeInitialBackoff: 20 * time.Millisecond, ResumeMaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.pf.Target == "" {
		o.pf.Target = o.emu.Instances[0].ID
	}
	if o.pf.Logger == nil {
		o.pf.Logger = testLogger()
	}
	fwd, err := portforward.New(o.pf, client)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, emu: emu, api: api, fwd: fwd, cancel: cancel, runErr: make(chan error, 1)}
	go func() { h.runErr <- fwd.Run(ctx) }()
	select {
	case <-fwd.Started():
	case err := <-h.runErr:
		cancel()
		t.Fatalf("forwarder failed to start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("forwarder did not start within 30s")
	}
	h.addrs = fwd.Addrs()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop drains the forwarder and returns Run's result (idempotent).
func (h *harness) stop() error {
	h.cancel()
	select {
	case err, ok := <-h.runErr:
		if ok {
			close(h.runErr)
			return err
		}
		return nil
	case <-time.After(60 * time.Second):
		h.t.Error("forwarder did not stop within 60s")
		return errors.New("timeout")
	}
}

func (h *harness) dial(i int) net.Conn {
	h.t.Helper()
	c, err := net.Dial("tcp", h.addrs[i].String())
	if err != nil {
		h.t.Fatalf("dial tunnel: %v", err)
	}
	return c
}

// pattern is a deterministic byte stream: both ends can generate and hash it independently.
type pattern struct{ r *rand.ChaCha8 }

func newPattern(seed uint64) *pattern {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	return &pattern{rand.NewChaCha8(s)}
}

func (p *pattern) Read(b []byte) (int, error) { return p.r.Read(b) }

// patternServer is a destination that, per connection, reads exactly n bytes (hashing them) while writing n
// bytes of pattern(seed) — no half-close needed, so it works whatever the agent does on FIN (§9.4).
type patternServer struct {
	ln       net.Listener
	n        int64
	seed     uint64
	received chan [32]byte
}

func startPatternServer(t *testing.T, n int64, seed uint64) *patternServer {
	t.Helper()
	s := &patternServer{n: n, seed: seed, received: make(chan [32]byte, 16)}
	s.ln = testutil.Serve(t, s.serve)
	return s
}

func (s *patternServer) serve(c net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.CopyN(c, newPattern(s.seed), s.n)
	}()
	h := sha256.New()
	io.CopyN(h, c, s.n)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	wg.Wait()
	s.received <- sum
}

func (s *patternServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func patternSum(seed uint64, n int64) [32]byte {
	h := sha256.New()
	io.CopyN(h, newPattern(seed), n)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// transfer writes n bytes of pattern(upSeed) to c while reading n bytes back, and returns the SHA-256 of what
// it read. progress (may be nil) is called with the running count of bytes read.
func transfer(c net.Conn, n int64, upSeed uint64, progress func(int64)) ([32]byte, error) {
	errc := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, newPattern(upSeed), n)
		errc <- err
	}()
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var got int64
	for got < n {
		m, err := c.Read(buf[:min(int64(len(buf)), n-got)])
		h.Write(buf[:m])
		got += int64(m)
		if progress != nil && m > 0 {
			progress(got)
		}
		if err != nil {
			return [32]byte{}, fmt.Errorf("read after %d of %d bytes: %w", got, n, err)
		}
	}
	if err := <-errc; err != nil {
		return [32]byte{}, fmt.Errorf("write: %w", err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// isReset reports whether err is a TCP reset seen by the client (ECONNRESET on read or write, or on connect
// when the reset arrived first).
func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

// expectReset dials addr and reads until the tunnel ends the connection; it returns nil only when that
// end is a TCP reset within d, never a clean EOF.
func expectReset(addr string, d time.Duration) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		if isReset(err) {
			return nil
		}
		return fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(d))
	n, err := io.Copy(io.Discard, c)
	switch {
	case isReset(err):
		return nil
	case err == nil:
		return fmt.Errorf("clean EOF after %d bytes, want a reset", n)
	}
	return fmt.Errorf("after %d bytes: %w, want a reset", n, err)
}

// startEmulatorOnly starts the emulator with the test instance, for tests that build their own forwarder.
func startEmulatorOnly(t *testing.T) *emulator.Emulator {
	t.Helper()
	return emutest.Start(t, emulator.Config{Pacing: emulator.PacingNone, Instances: []emulator.Instance{{ID: testInstance}}, Logger: testLogger()})
}

// newTestClient is a session client over the real SDK to emu, with the harness's short resume backoff.
func newTestClient(t *testing.T, emu *emulator.Emulator) *session.Client {
	t.Helper()
	client, err := session.NewClient(session.ClientConfig{
		API: testutil.SSMClient(emu.Endpoint()), Logger: testLogger(),
		ResumeInitialBackoff: 20 * time.Millisecond, ResumeMaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return client
}
