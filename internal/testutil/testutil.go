// Package testutil holds what the tests of several packages need alike: loopback destinations, polling of
// external state with a deadline, and the real SDK client pointed at a local endpoint. It imports nothing of
// this module, so the tests of any package, in-package ones included, can use it without an import cycle.
package testutil

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Serve listens on a loopback port until the test ends and runs handle for each connection on a goroutine
// of its own, closing the connection when handle returns.
func Serve(t testing.TB, handle func(net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln
}

// EchoServer is a loopback destination that echoes every connection until its peer closes it.
func EchoServer(t testing.TB) net.Listener {
	t.Helper()
	return Serve(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// Port is the TCP port ln listens on.
func Port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// WaitFor polls external state (a process, a server, metrics) until cond holds, and fails the test after d.
// Not for synchronising with the test's own goroutines: use channels for those.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // polling external state with a deadline, not synchronisation
	}
}

// SSMClient is the real aws-sdk-go-v2 SSM client for endpoint (an emulator), with static test credentials
// and a standard retryer of 5 attempts and at most 1 s backoff, so that a throttled or briefly refused call
// is retried as in production but a test does not wait long.
func SSMClient(endpoint string) *ssm.Client {
	cfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", "")),
		BaseEndpoint: aws.String(endpoint),
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 5; o.MaxBackoff = time.Second })
		},
	}
	return ssm.NewFromConfig(cfg)
}
