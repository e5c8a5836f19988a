package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
)

func TestVersion(t *testing.T) {
	// As hack/release.sh stamps them, and as it checks the line.
	defer func(v, c, d string) { tunnel.Version, tunnel.Commit, tunnel.Date = v, c, d }(tunnel.Version, tunnel.Commit, tunnel.Date)
	tunnel.Version, tunnel.Commit, tunnel.Date = "v0.2.0", "0123456789ab", "2026-05-01T10:00:00Z"
	var out bytes.Buffer
	const want = "ssm-emulator v0.2.0 (commit 0123456789ab, 2026-05-01T10:00:00Z)\n"
	if code := run(context.Background(), []string{"--version"}, &out, io.Discard); code != 0 || out.String() != want {
		t.Errorf("--version: exit %d, output %q, want %q", code, out.String(), want)
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	badFile := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badFile, []byte("- id: i-nothex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{nil, "no instances"},
		{[]string{"--instance", "i-123"}, `instance ID "i-123"`},
		{[]string{"--instance", "i-0123456789abcdef0,agent=3.3"}, "four numeric parts"},
		{[]string{"--instance", "i-0123456789abcdef0,colour=red"}, `unknown key "colour"`},
		{[]string{"--instance", "i-0123456789abcdef0,tag=novalue"}, "tag=KEY=VALUE"},
		{[]string{"--instance", "i-0123456789abcdef0", "--pacing", "fast"}, `pacing "fast"`},
		{[]string{"--instance", "i-0123456789abcdef0", "--listen", "nowhere"}, "must be HOST:PORT"},
		{[]string{"--instance", "i-0123456789abcdef0", "--allow-destinations", "10.0.0.0/99"}, "not a CIDR"},
		{[]string{"--instance", "i-0123456789abcdef0", "--refuse-resume", "maybe"}, "--refuse-resume"},
		{[]string{"--instance", "i-0123456789abcdef0", "--resend-order", "shuffled"}, `--resend-order: invalid emulator config: resend order "shuffled"`},
		{[]string{"--instance", "i-0123456789abcdef0", "--serve-http", "127.0.0.1:0"}, "ADDR=DIR"},
		{[]string{"--instances-file", badFile}, "instance 0"},
		{[]string{"--instances-file", filepath.Join(dir, "missing.json")}, "no such file"},
		{[]string{"--instance", "i-0123456789abcdef0", "extra"}, `unexpected argument "extra"`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus (see 'ssm-emulator --help')"},
		{[]string{"-x", "--instance", "i-0123456789abcdef0"}, "flag provided but not defined: -x"},
		{[]string{"--dial-timeout", "soon"}, `invalid value "soon" for flag -dial-timeout`},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
		// One line: the error, not the whole usage after it.
		if n := strings.Count(stderr.String(), "\n"); n != 1 || stdout.Len() > 0 {
			t.Errorf("%q: %d lines on stderr, stdout %q; want one line and nothing", tc.args, n, stdout.String())
		}
	}
}

// Help is asked for: the usage on stdout, exit code 0, even beside flags that would be refused.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}, {"--instance", "i-123", "--help"}} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, &stdout, &stderr)
		out := stdout.String()
		if code != 0 || !strings.HasPrefix(out, "Usage: ssm-emulator [flags]") || !strings.Contains(out, "-listen") || !strings.Contains(out, "-version") {
			t.Errorf("%q: exit %d, stdout %q", args, code, out)
		}
		if stderr.Len() > 0 {
			t.Errorf("%q: stderr %q, want nothing", args, stderr.String())
		}
	}
}

func TestParseInstancesAndFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "instances.yaml")
	if err := os.WriteFile(f, []byte("instances:\n- id: mi-0123456789abcdef0\n  agentVersion: 3.0.196.0\n  tags: {env: dev}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := parse([]string{"--instances-file", f, "--instance", "i-01234567,ping=ConnectionLost,tag=env=prod,tag=team=a,allow=10.0.0.0/8;192.168.1.1",
		"--allow-destinations", "any", "--pacing", "none", "--idle-timeout", "0", "--refuse-resume", "empty", "--resend-order", "random"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.cfg.Instances) != 2 {
		t.Fatalf("instances %+v", o.cfg.Instances)
	}
	mi, i := o.cfg.Instances[0], o.cfg.Instances[1]
	if mi.AgentVersion != "3.0.196.0" || mi.Tags["env"] != "dev" || i.PingStatus != "ConnectionLost" || i.Tags["team"] != "a" || len(i.AllowedDestinations) != 2 {
		t.Errorf("parsed %+v %+v", mi, i)
	}
	if o.cfg.Pacing != emulator.PacingNone || o.cfg.Faults.IdleTimeout != 0 || o.cfg.Faults.RefuseResume != emulator.ResumeEmptyToken || o.cfg.AllowedDestinations[0] != "any" || o.cfg.Faults.ResendOrder != emulator.ResendRandom {
		t.Errorf("config %+v", o.cfg)
	}
}

type lineWriter struct{ w *io.PipeWriter }

func (l lineWriter) Write(p []byte) (int, error) { return l.w.Write(p) }

// TestRunServes starts the command on ephemeral ports, checks what it prints, that the endpoint answers the
// SSM API shape and that the demo web app serves deterministic bytes, then stops it with its context.
func TestRunServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--listen", "127.0.0.1:0", "--instance", "i-0123456789abcdef0,tag=env=dev", "--demo-web", "127.0.0.1:0", "--log-level", "warn"}, lineWriter{pw}, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for len(lines) < 3 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	m := regexp.MustCompile(`^ssm-emulator listening on (http://127\.0\.0\.1:\d+) \(AWS_ENDPOINT_URL_SSM=(http://127\.0\.0\.1:\d+)\)$`).FindStringSubmatch(lines[0])
	if m == nil || m[1] != m[2] {
		t.Fatalf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "instance i-0123456789abcdef0 agent 3.3.987.0 Online") {
		t.Errorf("instance line %q", lines[1])
	}
	web := regexp.MustCompile(`^demo web app on (http://127\.0\.0\.1:\d+)$`).FindStringSubmatch(lines[2])
	if web == nil {
		t.Fatalf("demo line %q", lines[2])
	}
	resp, err := http.Post(m[1]+"/", "application/x-amz-json-1.1", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("X-Amzn-ErrorType") == "" {
		t.Errorf("unsigned API call answered %d without an AWS error type", resp.StatusCode)
	}
	resp, err = http.Get(web[1] + "/bytes/100000")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if sha256.Sum256(body) != sha256.Sum256(emulator.DemoBytes(100000)) {
		t.Errorf("/bytes/100000 body differs from DemoBytes (%d bytes)", len(body))
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after shutdown, want 0", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
}

// FuzzParseInstance: any --instance spec either parses into a valid instance or gives an error; never a
// panic.
func FuzzParseInstance(f *testing.F) {
	for _, s := range []string{"i-0123456789abcdef0", "mi-0123456789abcdef0,agent=3.0.196.0,tag=env=dev", "i-01234567,allow=10.0.0.0/8;any,ping=ConnectionLost", "i-1,tag=", ",,,="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		in, err := parseInstance(spec)
		if err == nil {
			if verr := in.Validate(); verr != nil {
				t.Fatalf("parseInstance(%q) accepted an invalid instance: %v", spec, verr)
			}
		}
	})
}
