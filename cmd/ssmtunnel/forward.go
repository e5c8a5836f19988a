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
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ssmtunnel/ssmtunnel/internal/tunnelmetrics"
	"github.com/ssmtunnel/ssmtunnel/tunnel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

const forwardLong = `Forward local ports to ports of TARGET through Session Manager, until Ctrl-C or SIGTERM.

TARGET is an instance ID (i-0123456789abcdef0), a managed instance ID (mi-...) or ecs:CLUSTER_TASK_RUNTIMEID.
LOCAL:REMOTE forwards local port LOCAL to port REMOTE on the target (or on --remote-host); LOCAL 0 picks a
free port, and PORT alone is PORT:PORT. The SSM endpoint, region and credentials come from the AWS SDK's
standard configuration (AWS_ENDPOINT_URL_SSM, AWS_REGION, AWS_PROFILE or --profile, web identity, Pod
Identity, ...).

The first Ctrl-C stops accepting connections and lets open ones finish for up to 5s (--drain-timeout when
given); a second Ctrl-C exits at once. SIGTERM, what Kubernetes sends, drains for the full --drain-timeout.`

const forwardExample = `  ssmtunnel forward i-0123456789abcdef0 5432:5432 8080:80
  ssmtunnel forward i-0123456789abcdef0 3306:3306 --remote-host db.internal --profile dev
  ssmtunnel forward i-0123456789abcdef0 0:22 --dry-run`

type forwardOptions struct {
	remoteHost, address, region, document, roleARN, reason string
	healthAddr, metricsAddr, logLevel, rate                string
	sessionReceiveBuffer                                   string
	reconnect                                              string
	profile                                                string
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

// addForwardFlags declares forward's flags. Their names, defaults and meanings are the contract with the
// operator, which builds tunnel pods' command lines from them (controllers/builders.go tunnelArgs).
func addForwardFlags(fs *pflag.FlagSet, o *forwardOptions) {
	fs.StringVar(&o.remoteHost, "remote-host", "", "forward to HOST:REMOTE as seen from the target (AWS-StartPortForwardingSessionToRemoteHost)")
	fs.StringVar(&o.address, "address", portforward.DefaultAddress, "local address to listen on (0.0.0.0 for all)")
	fs.StringVar(&o.region, "region", "", "AWS region (default: the SDK configuration, e.g. AWS_REGION)")
	fs.StringVar(&o.profile, "profile", "", "AWS shared-config profile for credentials and region (as AWS_PROFILE; default: the SDK configuration)")
	fs.StringVar(&o.document, "document", "", "Session Manager document (default AWS-StartPortForwardingSession, or ...ToRemoteHost with --remote-host)")
	fs.IntVar(&o.sessions, "sessions", 1, "independent sessions per port; connections go to the least loaded")
	fs.StringVar(&o.roleARN, "role-arn", "", "IAM role to assume for the SSM calls")
	fs.StringVar(&o.reason, "reason", "", "reason recorded with the session (default: ssmtunnel/VERSION and who runs it)")
	fs.StringVar(&o.healthAddr, "health-addr", "", "serve /healthz and /readyz on this address (e.g. :8081)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics on this address (e.g. :8080)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", portforward.DefaultDrainTimeout, "on SIGTERM, how long open connections may finish; also on Ctrl-C (SIGINT) when given, else 5s there")
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
}

func newForwardCommand(stdout, stderr io.Writer, sigs <-chan os.Signal) *cobra.Command {
	var o forwardOptions
	cmd := &cobra.Command{
		Use:     "forward TARGET LOCAL:REMOTE [LOCAL:REMOTE...]",
		Short:   "Forward local ports to ports of an instance (or of a host it reaches)",
		Long:    forwardLong,
		Example: forwardExample,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return badUsage("forward needs TARGET and at least one LOCAL:REMOTE, got %d argument(s)", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return forward(cmd.Context(), &o, cmd.Flags().Changed("drain-timeout"), args, stdout, stderr, sigs)
		},
	}
	addForwardFlags(flagSet(cmd), &o)
	return cmd
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

// flagError is a usage error about flag's value: err, named after the flag unless it already names it.
// The libraries describe fields ("reason must be ..."); the command line has flags.
func flagError(flag string, err error) error {
	if strings.Contains(err.Error(), flag) {
		return usageError{err}
	}
	return usageError{fmt.Errorf("%s: %w", flag, err)}
}

// checkFlags validates every flag the libraries check on their own, one at a time, so each error names
// its flag. It runs before the whole configuration is validated.
func checkFlags(o *forwardOptions, target string, ports []portforward.PortPair, recvBuf int) error {
	spec := session.Spec{Target: target, RemotePort: 1}
	base := portforward.Config{Target: target, Ports: ports}
	checks := []struct {
		flag string
		err  func() error
	}{
		{"--remote-host", func() error { s := spec; s.RemoteHost = o.remoteHost; return s.Validate() }},
		{"--document", func() error { s := spec; s.Document = o.document; return s.Validate() }},
		{"--reason", func() error {
			if o.reason == "" {
				return nil
			}
			return session.ValidateReason(o.reason)
		}},
		{"--address", func() error { c := base; c.Address = o.address; return c.Validate() }},
		{"--sessions", func() error { c := base; c.Sessions = o.sessions; return c.Validate() }},
		{"--drain-timeout", func() error { c := base; c.DrainTimeout = o.drainTimeout; return c.Validate() }},
		{"--stream-stall-timeout", func() error { c := base; c.StreamStallTimeout = o.streamStallTimeout; return c.Validate() }},
		{"--stall-timeout", func() error { c := base; c.StallTimeout = o.stallTimeout; return c.Validate() }},
		{"--partition-timeout", func() error { c := base; c.PartitionTimeout = o.partitionTimeout; return c.Validate() }},
		{"--probe-interval", func() error { c := base; c.ProbeInterval = o.probeInterval; return c.Validate() }},
		{"--max-connections", func() error { c := base; c.MaxConnections = o.maxConnections; return c.Validate() }},
		{"--max-basic-sessions", func() error { c := base; c.MaxBasicSessions = o.maxBasicSessions; return c.Validate() }},
		{"--session-receive-buffer", func() error { c := base; c.SessionReceiveBuffer = recvBuf; return c.Validate() }},
		{"--region", func() error { return session.AWSOptions{Region: o.region}.Validate() }},
		{"--role-arn", func() error { return session.AWSOptions{RoleARN: o.roleARN}.Validate() }},
		{"--role-session-name", func() error { return session.AWSOptions{RoleSessionName: o.roleSessionName}.Validate() }},
	}
	for _, c := range checks {
		if err := c.err(); err != nil {
			return flagError(c.flag, err)
		}
	}
	return nil
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

// forward checks the arguments, then forwards until a signal (or the end of ctx) stops it; see shutdown.
// drainGiven says --drain-timeout was on the command line.
func forward(ctx context.Context, o *forwardOptions, drainGiven bool, pos []string, stdout, stderr io.Writer, sigs <-chan os.Signal) error {
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
	if err := checkFlags(o, target, ports, recvBuf); err != nil {
		return err
	}
	if err := checkProfile(o.profile); err != nil {
		return err
	}
	reason := o.reason
	if reason == "" {
		reason = session.DefaultReason(tunnel.BuildInfo().Version, whoAmI())
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

	sh := newShutdown(pfCfg.DrainTimeout, drainGiven, stderr)
	log := slog.New(sh.logHandler(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
	pfCfg.Logger = log
	return sh.run(ctx, sigs, func(ctx context.Context) error {
		return serve(ctx, o, pfCfg, awsOpts, rate, log, sh)
	})
}

// serve loads the AWS configuration, starts the forwarder and its HTTP endpoints, and forwards until ctx
// ends (then drains).
func serve(ctx context.Context, o *forwardOptions, pfCfg portforward.Config, awsOpts session.AWSOptions, rate int64, log *slog.Logger, sh *shutdown) error {
	awsOpts.Profile = o.profile // checkProfile refused the environment credentials that would take precedence
	loadCtx, cancel := context.WithTimeout(ctx, sdkCallTimeout)
	awsCfg, err := session.LoadAWSConfig(loadCtx, awsOpts)
	cancel()
	if err != nil {
		return profileError(o.profile, err)
	}
	api := session.NewAPI(awsCfg)
	ep := ssmEndpoint(ctx, api)
	credCtx, cancel := context.WithTimeout(ctx, sdkCallTimeout)
	err = session.CheckCredentials(credCtx, awsCfg)
	cancel()
	if err != nil {
		if !o.retryStart {
			return err
		}
		// A pod's web identity or Pod Identity credentials can appear after the container starts: keep
		// running NotReady and let every session start try again.
		log.Warn("No usable AWS credentials yet; retrying with every session start", "err", err)
	}
	client, err := session.NewClient(session.ClientConfig{
		API: &boundedAPI{api: api, endpoint: ep, timeout: sdkCallTimeout}, Credentials: awsCfg.Credentials, Region: awsCfg.Region,
		// A 100 ms burst keeps the configured rate under scheduler latency (a 10 ms bucket loses most of its
		// refill when a busy node wakes the sender late); it is still the service's pace on average.
		Channel:             datachannel.Config{MaxPayloadSize: o.maxPayloadSize, Rate: rate, Burst: datachannel.BurstFor(rate, o.maxPayloadSize)},
		Logger:              log,
		AllowInsecureStream: o.allowInsecureStream,
	})
	if err != nil {
		return err
	}
	fwd, err := portforward.New(pfCfg, sh.track(client))
	if err != nil {
		return usageError{err}
	}
	sh.setForwarder(fwd)

	reg := prometheus.NewRegistry()
	reg.MustRegister(tunnelmetrics.NewCollector(fwd), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	servers, err := serveHTTP(o.healthAddr, o.metricsAddr, fwd, reg, log)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()

	n := len(pfCfg.Ports) * pfCfg.Sessions
	what := "session"
	if n > 1 {
		what = strconv.Itoa(n) + " sessions"
	}
	log.Info(fmt.Sprintf("Starting %s on %s via %s", what, pfCfg.Target, ep.url))
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
