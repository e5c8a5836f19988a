// Command ssmtunnel forwards local TCP ports to ports of EC2 and managed instances through AWS Systems
// Manager Session Manager, multiplexing every connection of a port over one session (or a pool of them).
// It is both the tunnel pod's entrypoint and a laptop tool:
//
//	ssmtunnel forward i-0123456789abcdef0 5432:5432 8080:80
//	ssmtunnel version
//
// This file only wires flags to tunnel/session and tunnel/portforward.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"

	"github.com/ssmtunnel/ssmtunnel/tunnel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure: session refused, closed by the service, ...
	exitUsage   = 2 // bad arguments
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage:
  ssmtunnel forward TARGET LOCAL:REMOTE [LOCAL:REMOTE...] [flags]
  ssmtunnel version

TARGET is an instance ID (i-0123456789abcdef0), a managed instance ID (mi-...) or ecs:CLUSTER_TASK_RUNTIMEID.
LOCAL:REMOTE forwards local port LOCAL to port REMOTE on the target (or on --remote-host); LOCAL 0 picks a
free port. The SSM endpoint, region and credentials come from the AWS SDK's standard configuration
(AWS_ENDPOINT_URL_SSM, AWS_REGION, AWS_PROFILE, web identity, Pod Identity, ...).

Flags of forward:
`

// usageError is a bad-arguments error: exit code 2 and the usage hint.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func badUsage(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// run is the whole program, testable with real arguments.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		fs := forwardFlags(&forwardOptions{})
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		return exitUsage
	}
	switch args[0] {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, tunnel.BuildInfo().Line("ssmtunnel", "data channel client "+datachannel.ClientVersion))
		return exitOK
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		fs := forwardFlags(&forwardOptions{})
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return exitOK
	case "forward":
		err := forward(ctx, args[1:], stdout, stderr)
		if err == nil {
			return exitOK
		}
		fmt.Fprintf(stderr, "ssmtunnel: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(stderr, "Run 'ssmtunnel help' for usage.")
			return exitUsage
		}
		return exitFailure
	}
	fmt.Fprintf(stderr, "ssmtunnel: unknown command %q (want forward or version)\nRun 'ssmtunnel help' for usage.\n", args[0])
	return exitUsage
}

type forwardOptions struct {
	remoteHost, address, region, document, roleARN, reason string
	healthAddr, metricsAddr, logLevel, rate                string
	sessionReceiveBuffer                                   string
	reconnect                                              string
	sessions, maxPayloadSize, maxConnections               int
	maxBasicSessions                                       int
	retryStart                                             bool
	drainTimeout, streamStallTimeout, stallTimeout         time.Duration
	partitionTimeout                                       time.Duration
	probeInterval                                          time.Duration
	dryRun                                                 bool
	allowInsecureStream                                    bool
	roleSessionName                                        string
}

func forwardFlags(o *forwardOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("forward", pflag.ContinueOnError)
	fs.StringVar(&o.remoteHost, "remote-host", "", "forward to HOST:REMOTE as seen from the target (AWS-StartPortForwardingSessionToRemoteHost)")
	fs.StringVar(&o.address, "address", portforward.DefaultAddress, "local address to listen on (0.0.0.0 for all)")
	fs.StringVar(&o.region, "region", "", "AWS region (default: the SDK configuration, e.g. AWS_REGION)")
	fs.StringVar(&o.document, "document", "", "Session Manager document (default AWS-StartPortForwardingSession, or ...ToRemoteHost with --remote-host)")
	fs.IntVar(&o.sessions, "sessions", 1, "independent sessions per port; connections go to the least loaded")
	fs.StringVar(&o.roleARN, "role-arn", "", "IAM role to assume for the SSM calls")
	fs.StringVar(&o.reason, "reason", "", "reason recorded with the session (default: ssmtunnel/VERSION and who runs it)")
	fs.StringVar(&o.healthAddr, "health-addr", "", "serve /healthz and /readyz on this address (e.g. :8081)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics on this address (e.g. :8080)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", portforward.DefaultDrainTimeout, "on SIGINT/SIGTERM, how long open connections may finish")
	fs.IntVar(&o.maxPayloadSize, "max-payload-size", datachannel.DefaultMaxPayloadSize, "bytes per data frame (the service's is 1024)")
	fs.StringVar(&o.rate, "rate", strconv.Itoa(datachannel.DefaultRate), "bytes/s per session and direction, with optional k/M/G suffix; 0 = unlimited")
	fs.StringVar(&o.sessionReceiveBuffer, "session-receive-buffer", "16Mi", "most bytes one session buffers for local readers that lag (smux v1 session bucket); memory bound: this × sessions × ports")
	fs.DurationVar(&o.streamStallTimeout, "stream-stall-timeout", portforward.DefaultStreamStallTimeout, "reset a connection whose local socket has refused data for this long (a tenth of it for the stream holding most of a half-full session buffer): smux v1 has no per-stream flow control")
	fs.StringVar(&o.reconnect, "reconnect", "lazy", "when a session the service ended (idle timeout, maximum duration, administrator) is replaced: eager (at once, keeps the port ready; tunnel pods) or lazy (on the next connection)")
	fs.BoolVar(&o.retryStart, "retry-start", false, "keep running and retry (backoff up to 1m) when the first session cannot start (target offline, throttled, access denied) instead of exiting; tunnel pods set it")
	fs.IntVar(&o.maxConnections, "max-connections", 0, "most local connections open at once per port; excess ones are reset (0 = unlimited)")
	fs.IntVar(&o.maxBasicSessions, "max-basic-sessions", portforward.DefaultMaxBasicSessions, "most sessions per port with agents that cannot multiplex (basic mode: one session per concurrent connection)")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", portforward.DefaultStallTimeout, "replace a session whose sent data gets no acknowledgement (or whose publication stays paused) for this long")
	fs.DurationVar(&o.partitionTimeout, "partition-timeout", portforward.DefaultPartitionTimeout, "replace a session that has been reconnecting this long, resetting its connections so clients reconnect")
	fs.StringVar(&o.roleSessionName, "role-session-name", "", "name of the --role-arn session, as CloudTrail and IAM conditions see it (default ssmtunnel)")
	fs.BoolVar(&o.allowInsecureStream, "allow-insecure-stream", false, "accept an unencrypted ws:// data channel to a host other than loopback (an emulator on another host; the service always uses wss://)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "check the arguments, print what would be forwarded, and exit without calling AWS")
	fs.DurationVar(&o.probeInterval, "probe-interval", 0, "open a probe connection through each ready port this often, so /readyz knows whether the destination accepts connections without waiting for traffic (0 is off)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.SortFlags = false
	return fs
}

// parseRate reads "1000000", "1M", "10MB", "512k", "1Mi"; 0 means unlimited.
func parseRate(s string) (int64, error) {
	n, ok := parseBytes(strings.TrimSuffix(strings.TrimSpace(s), "/s"))
	if !ok {
		return 0, fmt.Errorf("--rate %q must be a non-negative number of bytes per second, like 1000000, 2M or 0 (unlimited)", s)
	}
	return n, nil
}

// parseBufferSize reads --session-receive-buffer: "16Mi", "4194304", "32M"; 0 means the default.
func parseBufferSize(s string) (int, error) {
	n, ok := parseBytes(s)
	if !ok || n > portforward.MaxSessionReceiveBuffer {
		return 0, fmt.Errorf("--session-receive-buffer %q must be a number of bytes like 16Mi or 33554432, at most 1Gi (0 for the default)", s)
	}
	return int(n), nil
}

// parseBytes reads a non-negative byte count with an optional k/M/G (10^3) or Ki/Mi/Gi (2^10) suffix and
// an optional trailing B.
func parseBytes(s string) (int64, bool) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "B")
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, false
	}
	return n * mult, true
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q must be debug, info, warn or error", s)
	}
	return l, nil
}

// whoAmI names the caller for the default Reason: the pod in a cluster, user@host on a laptop.
func whoAmI() string {
	if pod := os.Getenv("POD_NAME"); pod != "" {
		if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
			return "pod " + ns + "/" + pod
		}
		return "pod " + pod
	}
	host, _ := os.Hostname()
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return name + "@" + host
}

func forward(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o forwardOptions
	fs := forwardFlags(&o)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		return badUsage("%v", err)
	}
	pos := fs.Args()
	if len(pos) < 2 {
		return badUsage("forward needs TARGET and at least one LOCAL:REMOTE, got %d argument(s)", len(pos))
	}
	target := pos[0]
	if err := (session.Spec{Target: target, RemotePort: 1}).Validate(); err != nil {
		return usageError{err}
	}
	ports, err := portforward.ParsePortPairs(pos[1:])
	if err != nil {
		return usageError{err}
	}
	recvBuf, err := parseBufferSize(o.sessionReceiveBuffer)
	if err != nil {
		return usageError{err}
	}
	rate, err := parseRate(o.rate)
	if err != nil {
		return usageError{err}
	}
	level, err := parseLevel(o.logLevel)
	if err != nil {
		return usageError{err}
	}
	if o.maxPayloadSize < 1 || o.maxPayloadSize > datachannel.MaxPayloadSizeLimit {
		return badUsage("--max-payload-size must be between 1 and %d, got %d", datachannel.MaxPayloadSizeLimit, o.maxPayloadSize)
	}
	if o.sessions < 1 || o.sessions > portforward.MaxSessionsPerPort {
		return badUsage("--sessions must be between 1 and %d, got %d", portforward.MaxSessionsPerPort, o.sessions)
	}
	if o.drainTimeout < 0 {
		return badUsage("--drain-timeout must not be negative")
	}
	if o.stallTimeout <= 0 || o.partitionTimeout <= 0 {
		return badUsage("--stall-timeout and --partition-timeout must be positive")
	}
	if o.maxBasicSessions < 1 || o.maxBasicSessions > portforward.MaxBasicSessionsLimit {
		return badUsage("--max-basic-sessions must be between 1 and %d, got %d", portforward.MaxBasicSessionsLimit, o.maxBasicSessions)
	}
	reconnect, err := portforward.ParseReconnect(o.reconnect)
	if err != nil {
		return badUsage("--reconnect: %v", err)
	}
	reason := o.reason
	if reason == "" {
		reason = session.DefaultReason(tunnel.Version, whoAmI())
	} else if err := session.ValidateReason(reason); err != nil {
		return usageError{err}
	}
	pfCfg := portforward.Config{
		Target: target, RemoteHost: o.remoteHost, Document: o.document, Reason: reason, Ports: ports,
		Address: o.address, Sessions: o.sessions, DrainTimeout: o.drainTimeout, Out: stdout,
		SessionReceiveBuffer: recvBuf, StreamStallTimeout: o.streamStallTimeout,
		Reconnect: reconnect, RetryStart: o.retryStart, MaxConnections: o.maxConnections,
		MaxBasicSessions: o.maxBasicSessions, StallTimeout: o.stallTimeout, PartitionTimeout: o.partitionTimeout, ProbeInterval: o.probeInterval,
	}
	if err := pfCfg.Validate(); err != nil {
		return usageError{err}
	}
	awsOpts := session.AWSOptions{Region: o.region, RoleARN: o.roleARN, RoleSessionName: o.roleSessionName}
	if err := awsOpts.Validate(); err != nil {
		return usageError{err}
	}
	if o.dryRun {
		fmt.Fprintf(stdout, "The arguments are valid: %d port(s) to %s\n", len(ports), target)
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	pfCfg.Logger = log

	awsCfg, err := session.LoadAWSConfig(ctx, awsOpts)
	if err != nil {
		return err
	}
	if err := session.CheckCredentials(ctx, awsCfg); err != nil {
		if !o.retryStart {
			return err
		}
		// A pod's web identity or Pod Identity credentials can appear after the container starts: keep
		// running NotReady and let every session start try again.
		log.Warn("No usable AWS credentials yet; retrying with every session start", "err", err)
	}
	client, err := session.NewClient(session.ClientConfig{
		API: session.NewAPI(awsCfg), Credentials: awsCfg.Credentials, Region: awsCfg.Region,
		// A 100 ms burst keeps the configured rate under scheduler latency (a 10 ms bucket loses most of its
		// refill when a busy node wakes the sender late); it is still the service's pace on average.
		Channel:             datachannel.Config{MaxPayloadSize: o.maxPayloadSize, Rate: rate, Burst: datachannel.BurstFor(rate, o.maxPayloadSize)},
		Logger:              log,
		AllowInsecureStream: o.allowInsecureStream,
	})
	if err != nil {
		return err
	}
	fwd, err := portforward.New(pfCfg, client)
	if err != nil {
		return usageError{err}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(fwd, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	servers, err := serveHTTP(o.healthAddr, o.metricsAddr, fwd, reg, log)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()

	return fwd.Run(ctx)
}

// serveHTTP starts the health and metrics endpoints; they share a server when the addresses are equal.
func serveHTTP(healthAddr, metricsAddr string, fwd *portforward.Forwarder, reg *prometheus.Registry, log *slog.Logger) ([]*http.Server, error) {
	muxes := map[string]*http.ServeMux{}
	get := func(addr string) *http.ServeMux {
		if muxes[addr] == nil {
			muxes[addr] = http.NewServeMux()
		}
		return muxes[addr]
	}
	if healthAddr != "" {
		m := get(healthAddr)
		m.Handle("/healthz", fwd.HealthzHandler())
		m.Handle("/readyz", fwd.ReadyzHandler())
	}
	if metricsAddr != "" {
		get(metricsAddr).Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	var servers []*http.Server
	for addr, m := range muxes {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return nil, fmt.Errorf("cannot serve health/metrics on %s: %w", addr, err)
		}
		s := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := s.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("Health/metrics server failed", "addr", addr, "err", err)
			}
		}()
		servers = append(servers, s)
	}
	return servers, nil
}
