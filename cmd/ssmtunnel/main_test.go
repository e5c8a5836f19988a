package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/internal/testutil/emutest"
	"github.com/ssmtunnel/ssmtunnel/tunnel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
)

const instance = emutest.Instance

// syncBuffer is a bytes.Buffer safe for the concurrent writes of run's goroutines and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestBadArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage:"},
		{"unknown command", []string{"fwd"}, `unknown command "fwd"`},
		{"no target", []string{"forward"}, "forward needs TARGET and at least one LOCAL:REMOTE"},
		{"no ports", []string{"forward", instance}, "forward needs TARGET and at least one LOCAL:REMOTE"},
		{"malformed target", []string{"forward", "i-nothex", "80"}, "target must be an instance ID"},
		{"bad port pair", []string{"forward", instance, "80:x"}, "port pair must be LOCAL:REMOTE"},
		{"remote port 0", []string{"forward", instance, "80:0"}, "port pair must be LOCAL:REMOTE"},
		{"duplicate local port", []string{"forward", instance, "8080:80", "8080:443"}, "local port 8080 is used twice"},
		{"unknown flag", []string{"forward", instance, "80", "--bogus"}, "unknown flag: --bogus"},
		{"bad sessions", []string{"forward", instance, "80", "--sessions", "0"}, "--sessions must be between 1 and"},
		{"bad rate", []string{"forward", instance, "80", "--rate", "fast"}, "--rate \"fast\" must be"},
		{"bad payload", []string{"forward", instance, "80", "--max-payload-size", "0"}, "--max-payload-size must be between 1"},
		{"bad log level", []string{"forward", instance, "80", "--log-level", "loud"}, "--log-level \"loud\""},
		{"bad reason", []string{"forward", instance, "80", "--reason", "a\nb"}, "reason must be 1-256 printable characters"},
		{"bad address", []string{"forward", instance, "80", "--address", "127.0.0.1:99"}, "--address \"127.0.0.1:99\" must be an IP address"},
		{"bad drain", []string{"forward", instance, "80", "--drain-timeout", "soon"}, "invalid argument \"soon\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr %q does not say %q", errb.String(), tt.want)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1000000": 1e6, "2M": 2e6, "512k": 512e3, "1Mi": 1 << 20, "10MB": 10e6, "3MB/s": 3e6} {
		got, err := parseRate(in)
		if err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "x", "1T"} {
		if _, err := parseRate(in); err == nil {
			t.Errorf("parseRate(%q) accepted", in)
		}
	}
}

func TestParseBufferSize(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "16Mi": 16 << 20, "4194304": 4 << 20, "32M": 32e6, "1Gi": 1 << 30} {
		got, err := parseBufferSize(in)
		if err != nil || got != want {
			t.Errorf("parseBufferSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "2Gi", "lots"} {
		if _, err := parseBufferSize(in); err == nil || !strings.Contains(err.Error(), "--session-receive-buffer") {
			t.Errorf("parseBufferSize(%q) = %v, want an error naming the flag", in, err)
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, io.Discard); code != exitOK || !strings.HasPrefix(out.String(), "ssmtunnel ") {
		t.Errorf("version: exit %d, output %q", code, out.String())
	}

	// As hack/release.sh stamps them, and as it checks the line.
	defer func(v, c, d string) { tunnel.Version, tunnel.Commit, tunnel.Date = v, c, d }(tunnel.Version, tunnel.Commit, tunnel.Date)
	tunnel.Version, tunnel.Commit, tunnel.Date = "v0.2.0", "0123456789ab", "2026-05-01T10:00:00Z"
	want := "ssmtunnel v0.2.0 (commit 0123456789ab, 2026-05-01T10:00:00Z, data channel client " + datachannel.ClientVersion + ")\n"
	for _, arg := range []string{"version", "--version", "-v"} {
		out.Reset()
		if code := run(context.Background(), []string{arg}, &out, io.Discard); code != exitOK || out.String() != want {
			t.Errorf("%s: exit %d, output %q, want %q", arg, code, out.String(), want)
		}
	}
}

// emulatorEnv starts an emulator and points the SDK's standard configuration at it through the environment,
// as a pod or a laptop would be configured.
func emulatorEnv(t *testing.T, cfg emulator.Config) *emulator.Emulator {
	t.Helper()
	emu := emutest.Start(t, cfg)
	t.Setenv("AWS_ENDPOINT_URL_SSM", emu.Endpoint())
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	return emu
}

func echoPort(t *testing.T) string {
	t.Helper()
	return strconv.Itoa(testutil.Port(testutil.EchoServer(t)))
}

func runAsync(ctx context.Context, args []string) (*syncBuffer, *syncBuffer, chan int) {
	out, errb := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, args, out, errb) }()
	return out, errb, done
}

func waitExit(t *testing.T, done chan int, d time.Duration, errb *syncBuffer) int {
	t.Helper()
	select {
	case code := <-done:
		return code
	case <-time.After(d):
		t.Fatalf("ssmtunnel did not exit within %v; stderr:\n%s", d, errb.String())
		return -1
	}
}

// forwardingAddr waits for the "Forwarding from ADDR -> ..." line and returns ADDR.
func forwardingAddr(t *testing.T, out, errb *syncBuffer, done chan int) string {
	t.Helper()
	var local string
	testutil.WaitFor(t, "the Forwarding line", 30*time.Second, func() bool {
		select {
		case code := <-done:
			t.Fatalf("exited early with %d: %s", code, errb.String())
		default:
		}
		s := out.String()
		if i := strings.Index(s, "Forwarding from "); i >= 0 {
			if j := strings.Index(s[i:], " -> "); j >= 0 {
				local = s[i+len("Forwarding from ") : i+j]
				return true
			}
		}
		return false
	})
	return local
}

func echoOnce(addr, msg string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// The service ends idle sessions (here every second): a tunnel pod (--reconnect eager) keeps running and
// starts a new session each time, and the listener answers throughout.
func TestIdleTimeoutEagerReconnectKeepsRunning(t *testing.T) {
	emu := emulatorEnv(t, emulator.Config{Pacing: emulator.PacingNone, Faults: emulator.Faults{IdleTimeout: time.Second}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	health := freeAddr(t)
	out, errb, done := runAsync(ctx, []string{"forward", instance, "0:" + echoPort(t), "--reconnect", "eager",
		"--health-addr", health, "--log-level", "error"})
	local := forwardingAddr(t, out, errb, done)
	for round := range 3 {
		started := len(emu.Sessions())
		// The session ended at the emulator and the tunnel already started its replacement: the end has
		// reached the tunnel, so a connection now cannot land on the ended session.
		testutil.WaitFor(t, "the idle timeout to end a session and a new one to start", 30*time.Second, func() bool {
			return countEnded(emu) >= started && len(emu.Sessions()) > started
		})
		// A connection that meets the next idle close of a 1 s timeout is reset, as it must be; a client
		// reconnects once then. Two resets in a row would mean the tunnel does not heal.
		err := echoOnce(local, fmt.Sprintf("round %d", round))
		if err != nil && errors.Is(err, syscall.ECONNRESET) {
			t.Logf("round %d: reset (%v); reconnecting", round, err)
			err = echoOnce(local, fmt.Sprintf("round %d again", round))
		}
		if err != nil {
			t.Fatalf("round %d after an idle close: %v; stderr:\n%s", round, err, errb.String())
		}
	}
	select {
	case code := <-done:
		t.Fatalf("exited with %d after idle closes; stderr:\n%s", code, errb.String())
	default:
	}
	testutil.WaitFor(t, "/readyz 200", 10*time.Second, func() bool { return httpStatus(health, "/readyz") == 200 })
	if n := len(emu.Sessions()); n < 4 {
		t.Errorf("%d sessions, want the first and one per idle close (at least 4)", n)
	}
	cancel()
	if code := waitExit(t, done, 30*time.Second, errb); code != exitOK {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// On a laptop (--reconnect lazy, the default) an idle-closed session is replaced only when the next
// connection arrives, and that connection is carried.
func TestIdleTimeoutLazyReconnectOnNextConnection(t *testing.T) {
	emu := emulatorEnv(t, emulator.Config{Pacing: emulator.PacingNone, Faults: emulator.Faults{IdleTimeout: time.Second}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	health := freeAddr(t)
	out, errb, done := runAsync(ctx, []string{"forward", instance, "0:" + echoPort(t), "--health-addr", health, "--log-level", "error"})
	local := forwardingAddr(t, out, errb, done)
	testutil.WaitFor(t, "the idle timeout to end the session", 30*time.Second, func() bool { return countEnded(emu) == 1 })
	// The session ended for nobody: the slot waits for a connection (state "idle", still ready) and no
	// new session is started.
	testutil.WaitFor(t, "the slot to wait idle", 30*time.Second, func() bool {
		code, b := httpStatusBody(health, "/readyz")
		return code == 200 && strings.Contains(b, `"sessions":["idle"]`)
	})
	if n := len(emu.Sessions()); n != 1 {
		t.Fatalf("%d sessions right after the idle close, want 1 (lazy)", n)
	}
	if err := echoOnce(local, "after idle"); err != nil {
		t.Fatalf("connection after an idle close: %v; stderr:\n%s", err, errb.String())
	}
	if n := len(emu.Sessions()); n != 2 {
		t.Errorf("%d sessions after the next connection, want 2", n)
	}
	select {
	case code := <-done:
		t.Fatalf("exited with %d; stderr:\n%s", code, errb.String())
	default:
	}
}

// A tunnel pod (--retry-start) whose target is not connected keeps running NotReady, says why on /readyz,
// and becomes ready once the instance connects; a laptop run exits at once (TestUnknownTargetAndRefusedCredentials).
func TestRetryStartWaitsForTarget(t *testing.T) {
	emu := emulatorEnv(t, emulator.Config{Pacing: emulator.PacingNone})
	const late = "i-0aaaaaaaaaaaaaaa1"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	health := freeAddr(t)
	out, errb, done := runAsync(ctx, []string{"forward", late, "0:" + echoPort(t), "--retry-start", "--reconnect", "eager",
		"--health-addr", health, "--log-level", "error"})
	local := forwardingAddr(t, out, errb, done)
	var body string
	testutil.WaitFor(t, "/readyz to name the reason", 30*time.Second, func() bool {
		code, b := httpStatusBody(health, "/readyz")
		body = b
		return code == 503 && strings.Contains(b, `"reason":"TargetNotConnected"`)
	})
	if httpStatus(health, "/healthz") != 200 {
		t.Error("/healthz not 200 while waiting for the target: the kubelet would restart a healthy pod")
	}
	t.Logf("/readyz while the target is offline: %s", body)
	if err := emu.AddInstance(emulator.Instance{ID: late}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "/readyz 200 once the target connects", 90*time.Second, func() bool { return httpStatus(health, "/readyz") == 200 })
	if err := echoOnce(local, "late target"); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		t.Fatalf("exited with %d; stderr:\n%s", code, errb.String())
	default:
	}
}

func countEnded(emu *emulator.Emulator) int {
	n := 0
	for _, s := range emu.Sessions() {
		if s.Ended {
			n++
		}
	}
	return n
}

func httpStatusBody(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestUnknownTargetAndRefusedCredentials(t *testing.T) {
	emu := emulatorEnv(t, emulator.Config{Faults: emulator.Faults{DeniedAccessKeys: []string{"AKIDDENIED"}}})
	_ = emu
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"forward", "i-0fedcba9876543210", "0:80"}, &out, &errb)
	if code != exitFailure || !strings.Contains(errb.String(), "instance i-0fedcba9876543210 is not connected to Systems Manager (check the SSM Agent and the instance's IAM role)") {
		t.Errorf("unknown target: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDDENIED")
	code = run(context.Background(), []string{"forward", instance, "0:80"}, &out, &errb)
	if code != exitFailure || !strings.Contains(errb.String(), "access denied: the credentials were refused") {
		t.Errorf("denied credentials: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	code = run(context.Background(), []string{"forward", instance, "0:80"}, &out, &errb)
	if code != exitFailure || !strings.Contains(errb.String(), "no AWS credentials") {
		t.Errorf("no credentials: exit %d, stderr %q", code, errb.String())
	}
}

func TestForwardServesHealthMetricsAndShutsDownCleanly(t *testing.T) {
	emu := emulatorEnv(t, emulator.Config{Pacing: emulator.PacingNone})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	health, metrics := freeAddr(t), freeAddr(t)
	out, errb, done := runAsync(ctx, []string{"forward", instance, "0:" + echoPort(t), "--health-addr", health,
		"--metrics-addr", metrics, "--sessions", "2", "--rate", "0", "--reason", "acceptance test"})
	local := forwardingAddr(t, out, errb, done)
	testutil.WaitFor(t, "/readyz 200", 10*time.Second, func() bool { return httpStatus(health, "/readyz") == 200 })
	if httpStatus(health, "/healthz") != 200 {
		t.Error("/healthz not 200")
	}
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the CLI: %q %v", buf, err)
	}
	c.Close()
	body := httpGet(t, metrics, "/metrics")
	for _, want := range []string{"ssmtunnel_ready 1", "ssmtunnel_streams_total{", "ssmtunnel_bytes_total{", "ssmtunnel_rtt_seconds{",
		"ssmtunnel_resumes_total{", "ssmtunnel_retransmits_total{", "ssmtunnel_frames_dropped_total{", `session="1"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if rs := emu.Stats().Reasons; len(rs) != 2 || rs[0] != "acceptance test" {
		t.Errorf("reasons %q", rs)
	}
	cancel() // SIGTERM
	if code := waitExit(t, done, 30*time.Second, errb); code != exitOK {
		t.Errorf("exit code %d after SIGTERM, want 0; stderr:\n%s", code, errb.String())
	}
	if n := emu.Stats().APICalls["TerminateSession"]; n != 2 {
		t.Errorf("TerminateSession called %d times, want 2", n)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpStatus(addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func httpGet(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
