package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/spf13/pflag"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
)

// Help is asked for, so it goes to stdout with exit code 0, for the root and every command.
func TestHelpExitsZero(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage:", "forward", "version", "completion"}},
		{[]string{"-h"}, []string{"Usage:", "forward"}},
		{[]string{"help"}, []string{"Usage:", "forward"}},
		{[]string{"help", "forward"}, []string{"ssmtunnel forward TARGET LOCAL:REMOTE"}},
		{[]string{"forward", "--help"}, []string{"ssmtunnel forward TARGET LOCAL:REMOTE", "--drain-timeout", "--profile", "--dry-run", "Ctrl-C"}},
		{[]string{"forward", "-h"}, []string{"ssmtunnel forward TARGET LOCAL:REMOTE"}},
		// Help wins over arguments that would be refused.
		{[]string{"forward", "i-nothex", "--sessions", "0", "--help"}, []string{"ssmtunnel forward TARGET LOCAL:REMOTE"}},
		{[]string{"version", "--help"}, []string{"ssmtunnel version"}},
		{[]string{"completion", "--help"}, []string{"bash", "zsh", "fish"}},
		{[]string{"completion"}, []string{"bash", "zsh", "fish"}},
		{[]string{"completion", "bash", "--help"}, []string{"ssmtunnel completion bash"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(context.Background(), tt.args, &out, &errb); code != exitOK {
				t.Errorf("exit code %d, want 0; stderr %q", code, errb.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, out.String())
				}
			}
			if errb.Len() > 0 {
				t.Errorf("stderr %q, want nothing", errb.String())
			}
		})
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "# bash completion V2 for ssmtunnel",
		"zsh":  "#compdef ssmtunnel",
		"fish": "# fish completion for ssmtunnel",
	} {
		t.Run(shell, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(context.Background(), []string{"completion", shell}, &out, &errb); code != exitOK || !strings.HasPrefix(out.String(), want) {
				t.Errorf("exit %d, stdout starts %q, want 0 and %q; stderr %q", code, firstLine(out.String()), want, errb.String())
			}
		})
	}
}

// Unknown flags and commands: exit code 2 and one line that names what was wrong and where help is.
func TestUsageErrorsAreOneLine(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"forward", "--bogus"}, []string{"unknown flag: --bogus", "'ssmtunnel forward --help'"}},
		{[]string{"forward", instance, "80", "--bogus=1"}, []string{"unknown flag: --bogus", "'ssmtunnel forward --help'"}},
		{[]string{"forward", "-x"}, []string{"unknown shorthand flag: 'x'", "'ssmtunnel forward --help'"}},
		{[]string{"--bogus"}, []string{"unknown flag: --bogus", "'ssmtunnel --help'"}},
		{[]string{"fwd"}, []string{`unknown command "fwd"`, "'ssmtunnel --help'"}},
		{[]string{"forwrd", instance, "80"}, []string{`unknown command "forwrd", did you mean "forward"?`}},
		{[]string{"version", "extra"}, []string{`takes no arguments, got "extra"`, "'ssmtunnel version --help'"}},
		{[]string{"completion", "tcsh"}, []string{`unknown command "tcsh"`, "'ssmtunnel completion --help'"}},
		{[]string{"forward", instance, "80", "--sessions", "many"}, []string{`invalid argument "many" for "--sessions" flag`}},
		{[]string{"forward", instance, "80", "--sessions", "0"}, []string{"--sessions must be between 1 and"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb)
			if code != exitUsage {
				t.Errorf("exit code %d, want %d", code, exitUsage)
			}
			s := errb.String()
			if strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "ssmtunnel: ") {
				t.Errorf("stderr %q, want one line starting ssmtunnel: ", s)
			}
			for _, w := range tt.want {
				if !strings.Contains(s, w) {
					t.Errorf("stderr %q lacks %q", s, w)
				}
			}
			if out.Len() > 0 {
				t.Errorf("stdout %q, want nothing", out.String())
			}
		})
	}
}

// The operator builds tunnel pods' command lines from these flags (controllers/builders.go): their names
// and defaults are a contract.
func TestForwardFlagsKeepNamesAndDefaults(t *testing.T) {
	want := map[string]string{
		"remote-host": "", "address": "127.0.0.1", "region": "", "document": "", "sessions": "1", "role-arn": "",
		"reason": "", "health-addr": "", "metrics-addr": "", "drain-timeout": "20s", "max-payload-size": "1024",
		"rate": "1000000", "session-receive-buffer": "16Mi", "stream-stall-timeout": "10s", "reconnect": "lazy",
		"retry-start": "false", "max-connections": "0", "max-basic-sessions": "8", "stall-timeout": "15s",
		"partition-timeout": "1m0s", "role-session-name": "", "allow-insecure-stream": "false", "dry-run": "false",
		"probe-interval": "0s", "log-level": "info", "profile": "",
	}
	fs := pflag.NewFlagSet("forward", pflag.ContinueOnError)
	addForwardFlags(fs, &forwardOptions{})
	got := map[string]string{}
	fs.VisitAll(func(f *pflag.Flag) { got[f.Name] = f.DefValue })
	for name, def := range want {
		if g, ok := got[name]; !ok || g != def {
			t.Errorf("--%s: default %q (declared %t), want %q", name, g, ok, def)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("--%s is new: add it to this contract", name)
		}
	}
}

// The libraries' validation errors describe fields; the CLI's name the flag.
func TestFlagErrorsNameTheFlag(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--remote-host", "169.254.169.254"}, "--remote-host: remote host is denied"},
		{[]string{"--remote-host", "a b"}, "--remote-host: remote host \"a b\""},
		{[]string{"--document", "AWS-StartSSHSession"}, "--document: document does not forward ports"},
		{[]string{"--document", "x"}, "--document: document name must be"},
		{[]string{"--reason", "a\nb"}, "--reason: reason must be"},
		{[]string{"--region", "europe"}, "--region: region must be an AWS region code"},
		{[]string{"--role-arn", "arn:aws:iam::123456789012:user/u"}, "--role-arn: role ARN must be"},
		{[]string{"--role-arn", "arn:aws:iam::123456789012:role/r", "--role-session-name", "x"}, "--role-session-name: role session name"},
		{[]string{"--stream-stall-timeout", "-1s"}, "--stream-stall-timeout: "},
		{[]string{"--probe-interval", "10ms"}, "--probe-interval must be at least 1s"},
		{[]string{"--max-connections", "-1"}, "--max-connections must not be negative"},
		{[]string{"--session-receive-buffer", "1"}, "--session-receive-buffer must be between"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var errb bytes.Buffer
			code := run(context.Background(), append([]string{"forward", instance, "80", "--dry-run"}, tt.args...), &bytes.Buffer{}, &errb)
			if code != exitUsage || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errb.String(), tt.want)
			}
		})
	}
}

// --profile picks a shared-config profile's credentials; credentials in the environment, which the SDK
// would prefer, are refused rather than silently used.
func TestProfile(t *testing.T) {
	emulatorEnv(t, emulator.Config{Pacing: emulator.PacingNone, Faults: emulator.Faults{DeniedAccessKeys: []string{"AKIDDEFAULT"}}})
	creds := filepath.Join(t.TempDir(), "credentials")
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s\n\n"+
		"[dev]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	port := echoPort(t)

	t.Run("environment credentials win over a profile", func(t *testing.T) {
		var errb bytes.Buffer
		code := run(context.Background(), []string{"forward", instance, "0:" + port, "--profile", "dev"}, &bytes.Buffer{}, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), "--profile dev: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set") {
			t.Errorf("exit %d, stderr %q", code, errb.String())
		}
	})
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Run("without --profile the default profile is refused", func(t *testing.T) {
		var errb bytes.Buffer
		code := run(context.Background(), []string{"forward", instance, "0:" + port}, &bytes.Buffer{}, &errb)
		if code != exitFailure || !strings.Contains(errb.String(), "access denied") {
			t.Errorf("exit %d, stderr %q", code, errb.String())
		}
	})
	t.Run("no such profile", func(t *testing.T) {
		var errb bytes.Buffer
		code := run(context.Background(), []string{"forward", instance, "0:" + port, "--profile", "nope"}, &bytes.Buffer{}, &errb)
		if code != exitFailure || !strings.Contains(errb.String(), "--profile nope: no such profile") {
			t.Errorf("exit %d, stderr %q", code, errb.String())
		}
	})
	t.Run("--profile dev forwards", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out, errb, done := runAsync(ctx, []string{"forward", instance, "0:" + port, "--profile", "dev"})
		local := forwardingAddr(t, out, errb, done)
		if err := echoOnce(local, "through the profile"); err != nil {
			t.Fatal(err)
		}
		cancel()
		if code := waitExit(t, done, 30*time.Second, errb); code != exitOK {
			t.Errorf("exit %d; stderr:\n%s", code, errb.String())
		}
	})
}

// Before the first session the CLI says which endpoint it calls; one it cannot reach gets one line that
// names it and AWS_ENDPOINT_URL_SSM.
func TestStartingSessionLine(t *testing.T) {
	emu := emulatorEnv(t, emulator.Config{Pacing: emulator.PacingNone})
	port := echoPort(t)
	t.Run("emulator", func(t *testing.T) {
		for _, tt := range []struct {
			args []string
			want string
		}{
			{[]string{"0:" + port}, "Starting session on " + instance + " via " + emu.Endpoint()},
			{[]string{"0:" + port, "0:" + port, "--sessions", "2"}, "Starting 4 sessions on " + instance + " via " + emu.Endpoint()},
		} {
			ctx, cancel := context.WithCancel(context.Background())
			out, errb, done := runAsync(ctx, append([]string{"forward", instance}, tt.args...))
			forwardingAddr(t, out, errb, done)
			cancel()
			waitExit(t, done, 30*time.Second, errb)
			if !strings.Contains(errb.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, errb.String())
			}
		}
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String()
	l.Close()
	// Accepts connections and never answers.
	silent := testutil.Serve(t, func(c net.Conn) { _, _ = c.Read(make([]byte, 1)); <-t.Context().Done() })
	defer func(d time.Duration) { sdkCallTimeout = d }(sdkCallTimeout)
	for _, tt := range []struct {
		name, endpoint string
		timeout        time.Duration
		want           string
	}{
		// The SDK's retries of a refused connection take a few seconds at most.
		{"refused", refused, 20 * time.Second, "cannot reach the SSM endpoint " + refused + " (from AWS_ENDPOINT_URL_SSM): dial tcp"},
		{"silent", "http://" + silent.Addr().String(), 2 * time.Second, "no answer from the SSM endpoint http://" + silent.Addr().String() + " (from AWS_ENDPOINT_URL_SSM) within 2s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("AWS_ENDPOINT_URL_SSM", tt.endpoint)
			sdkCallTimeout = tt.timeout
			var errb bytes.Buffer
			code := run(context.Background(), []string{"forward", instance, "0:" + port}, &bytes.Buffer{}, &errb)
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			last := lines[len(lines)-1]
			if code != exitFailure || !strings.HasPrefix(last, "ssmtunnel: ") || !strings.Contains(last, tt.want) {
				t.Errorf("exit %d, last line %q; want 1 and %q", code, last, tt.want)
			}
			if !strings.Contains(errb.String(), "Starting session on "+instance+" via "+tt.endpoint) {
				t.Errorf("no Starting line for %s:\n%s", tt.endpoint, errb.String())
			}
		})
	}
}

func TestDefaultEndpoint(t *testing.T) {
	t.Setenv("AWS_ENDPOINT_URL_SSM", "")
	t.Setenv("AWS_ENDPOINT_URL", "")
	ep := ssmEndpoint(context.Background(), ssm.NewFromConfig(aws.Config{Region: "eu-west-1"}))
	if !strings.HasPrefix(ep.url, "https://ssm.eu-west-1.") || ep.source != "the default for eu-west-1; AWS_ENDPOINT_URL_SSM overrides it" {
		t.Errorf("endpoint %+v", ep)
	}
}

// The first Ctrl-C drains (5 s unless --drain-timeout is given) and says so; a second one exits at once.
// SIGTERM drains for the whole --drain-timeout. Signals come on run's channel, as signal.Notify delivers them.
func TestSignals(t *testing.T) {
	emu := emulatorEnv(t, emulator.Config{Pacing: emulator.PacingNone})
	port := echoPort(t)
	defer func(d time.Duration) { interactiveDrain = d }(interactiveDrain)
	tests := []struct {
		name      string
		flags     []string
		intDrain  time.Duration
		noConn    bool
		signals   []os.Signal
		wantLines []string // on stderr, once the signals are handled
		// closeConn: the test closes its connection, which ends the drain; otherwise the drain has to end
		// on its own (before the forwarder's 20 s).
		closeConn bool
		wantCode  int
		notWant   []string
	}{
		{name: "Ctrl-C drains for 5s", intDrain: 5 * time.Second, signals: []os.Signal{os.Interrupt},
			wantLines: []string{"Draining 1 connection for up to 5s; Ctrl-C again to exit now"}, closeConn: true,
			notWant: []string{drainingMessage}},
		{name: "Ctrl-C with --drain-timeout", flags: []string{"--drain-timeout", "7s"}, intDrain: 5 * time.Second,
			signals: []os.Signal{os.Interrupt}, wantLines: []string{"Draining 1 connection for up to 7s; Ctrl-C again"}, closeConn: true},
		{name: "Ctrl-C drain runs out", intDrain: 300 * time.Millisecond, signals: []os.Signal{os.Interrupt},
			wantLines: []string{"Draining 1 connection for up to 300ms; Ctrl-C again to exit now"}},
		{name: "second Ctrl-C exits now", flags: []string{"--drain-timeout", "1m"}, intDrain: 5 * time.Second, signals: []os.Signal{os.Interrupt, os.Interrupt},
			wantLines: []string{"Draining 1 connection for up to 1m0s; Ctrl-C again to exit now", "Exiting now without draining"},
			wantCode:  exitInterrupted},
		{name: "Ctrl-C without connections", intDrain: time.Minute, noConn: true, signals: []os.Signal{os.Interrupt},
			wantLines: []string{"Closing the sessions; Ctrl-C again to exit now"}},
		{name: "SIGTERM drains for --drain-timeout", intDrain: 300 * time.Millisecond, signals: []os.Signal{syscall.SIGTERM},
			wantLines: []string{`msg="Shutting down: draining connections" timeout=20s`}, closeConn: true,
			notWant: []string{"Draining", "Ctrl-C"}},
		{name: "SIGTERM then Ctrl-C exits now", signals: []os.Signal{syscall.SIGTERM, os.Interrupt}, intDrain: time.Minute,
			wantLines: []string{"Exiting now without draining"}, wantCode: exitInterrupted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			interactiveDrain = tt.intDrain
			sigs := make(chan os.Signal, len(tt.signals))
			out, errb := &syncBuffer{}, &syncBuffer{}
			done := make(chan int, 1)
			args := append([]string{"forward", instance, "0:" + port}, tt.flags...)
			go func() { done <- runSignals(context.Background(), args, out, errb, sigs) }()
			local := forwardingAddr(t, out, errb, done)
			var c net.Conn
			if !tt.noConn {
				var err error
				if c, err = net.Dial("tcp", local); err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				echo(t, c, "before the signal")
			}
			terminated := emu.Stats().APICalls["TerminateSession"]
			for _, s := range tt.signals {
				sigs <- s
			}
			for _, w := range tt.wantLines {
				testutil.WaitFor(t, "stderr to say "+w, 20*time.Second, func() bool { return strings.Contains(errb.String(), w) })
			}
			if tt.closeConn {
				c.Close()
			}
			// Well within the forwarder's 20 s drain: only the Ctrl-C's own drain, or the test's close, ends it.
			if code := waitExit(t, done, 15*time.Second, errb); code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, errb.String())
			}
			t.Logf("stderr:\n%s", errb.String())
			for _, nw := range tt.notWant {
				if strings.Contains(errb.String(), nw) {
					t.Errorf("stderr says %q:\n%s", nw, errb.String())
				}
			}
			if tt.wantCode == exitOK {
				if n := emu.Stats().APICalls["TerminateSession"] - terminated; n < 1 {
					t.Errorf("%d TerminateSession calls at shutdown, want the session ended", n)
				}
			}
			if tt.name == "Ctrl-C drain runs out" {
				// The session that carried the connection ended, and the connection with it.
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Error("the connection is still open after the drain ran out")
				}
			}
		})
	}
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo %q, %v", buf, err)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
