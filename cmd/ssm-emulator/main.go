// Command ssm-emulator is a local AWS Session Manager: the SSM API (StartSession, ResumeSession,
// TerminateSession, DescribeInstanceInformation), the message gateway's data-channel websocket and emulated
// instances whose SSM Agent forwards ports, all on one address. Point any SSM client at it with
// AWS_ENDPOINT_URL_SSM; any access key works (requests must be signed, the signature is not checked).
//
//	ssm-emulator --listen 127.0.0.1:4566 --instance i-0123456789abcdef0 \
//	    --instance mi-0123456789abcdef0,agent=3.0.196.0,tag=env=dev --demo-web 127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/ssmtunnel/ssmtunnel/tunnel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// options are the parsed command line.
type options struct {
	cfg       emulator.Config
	demoWeb   string
	serveHTTP []string // ADDR=DIR
	logLevel  slog.Level
}

const usageText = `Usage: ssm-emulator [flags]

A local AWS Session Manager (SSM API + message gateway + emulated instances with SSM Agents).

Instance spec (--instance, repeatable): ID[,agent=VERSION][,ping=Online|ConnectionLost][,tag=KEY=VALUE]...[,allow=CIDR;CIDR]
  ID is i- with 8 or 17 hex digits, or mi- with 17. agent=3.0.196.0 forces basic (non-multiplexed) mode;
  agent=3.3.4851.0 or later refuses loopback and the container credential endpoints as a remote host.
Instances file (--instances-file): JSON or YAML, a list of instances or {"instances": [...]}, with keys
  id, tags, agentVersion, pingStatus, allowedDestinations, platformType.

Flags:
`

// parse reads the command line; errors say what to fix. The usage goes to help, on --help or -h only (then
// the error is flag.ErrHelp): a bad flag is an error like any other.
func parse(args []string, help io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("ssm-emulator", flag.ContinueOnError)
	// The flag package prints a parse error and the whole usage to its output: run prints the error instead.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var instances, files, allow, serve, denied listFlag
	var pacing, refuse, resendOrder, logLevel string
	fs.StringVar(&o.cfg.Addr, "listen", "127.0.0.1:4566", "address of the SSM API and the data-channel websocket (0.0.0.0:4566 in a cluster)")
	fs.Var(&instances, "instance", "emulated instance `SPEC` (repeatable, see above)")
	fs.Var(&files, "instances-file", "JSON or YAML `FILE` of instances (repeatable)")
	fs.StringVar(&pacing, "pacing", string(emulator.PacingAgent), "agent pacing: agent (1 KiB frames at ~1 MB/s like the real agent) or none")
	fs.Var(&allow, "allow-destinations", "`CIDRS` (comma-separated, or \"any\") the agents may dial besides loopback's default; metadata addresses are always denied")
	fs.DurationVar(&o.cfg.DialTimeout, "dial-timeout", 10*time.Second, "agent's destination dial timeout")
	fs.DurationVar(&o.cfg.Faults.DropEvery, "drop-every", 0, "fault: drop each client websocket this long after it connects (0 = never)")
	fs.DurationVar(&o.cfg.Faults.ByeEvery, "bye-every", 0, "fault: close each client websocket with 1000 \"Bye\" this long after it connects, like the service hourly (0 = never)")
	fs.StringVar(&refuse, "refuse-resume", "", "fault: refuse ResumeSession with \"empty\" (no token) or \"error\" (HTTP 400), ending the session")
	fs.IntVar(&o.cfg.Faults.ThrottleFirst, "throttle-first", 0, "fault: answer the first `N` API calls with ThrottlingException")
	fs.Float64Var(&o.cfg.Faults.ThrottleRate, "throttle-rate", 0, "fault: allow at most this many API calls per second, throttle the rest (0 = unlimited)")
	fs.DurationVar(&o.cfg.Faults.IdleTimeout, "idle-timeout", 20*time.Minute, "end sessions without stream data for this long, like the service's idleSessionTimeout (0 = never)")
	fs.DurationVar(&o.cfg.Faults.MaxSessionDuration, "max-session-duration", 0, "end sessions this long after they started (0 = never)")
	fs.StringVar(&resendOrder, "resend-order", "in-order", "fault: how agents resend unacknowledged frames after the client reconnects: in-order (oldest first, like the real agent) or random (the whole window at once in random order, as another correct implementation may)")
	fs.Var(&denied, "deny-access-key", "fault: answer API calls signed with this access key `ID` with AccessDeniedException (repeatable)")
	fs.StringVar(&o.demoWeb, "demo-web", "", "also serve the built-in deterministic demo web app on `ADDR` (/, /assets/..., /bytes/N)")
	fs.Var(&serve, "serve-http", "also serve static files: `ADDR=DIR` (repeatable)")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	// A plain flag, not a BoolFunc returning errVersion: the flag package wraps a BoolFunc's error with %v,
	// which errors.Is cannot see through.
	var version bool
	fs.BoolVar(&version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(help, usageText)
			fs.SetOutput(help)
			fs.PrintDefaults()
		}
		return o, err
	}
	if version {
		return o, errVersion
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: every setting is a flag", fs.Arg(0))
	}
	if err := o.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return o, fmt.Errorf("--log-level %q must be debug, info, warn or error", logLevel)
	}
	if _, _, err := net.SplitHostPort(o.cfg.Addr); err != nil {
		return o, fmt.Errorf("--listen %q must be HOST:PORT, e.g. 127.0.0.1:4566: %v", o.cfg.Addr, err)
	}
	o.cfg.Pacing = emulator.Pacing(pacing)
	var err error
	if o.cfg.Faults.RefuseResume, err = emulator.ParseRefusal(refuse); err != nil {
		return o, fmt.Errorf("--refuse-resume: %w", err)
	}
	if o.cfg.Faults.ResendOrder, err = emulator.ParseResendOrder(resendOrder); err != nil {
		return o, fmt.Errorf("--resend-order: %w", err)
	}
	o.cfg.Faults.DeniedAccessKeys = denied
	for _, a := range allow {
		for _, s := range strings.Split(a, ",") {
			if s = strings.TrimSpace(s); s != "" {
				o.cfg.AllowedDestinations = append(o.cfg.AllowedDestinations, s)
			}
		}
	}
	if len(o.cfg.AllowedDestinations) > 0 {
		// The flag adds to loopback, the default, rather than replacing it.
		o.cfg.AllowedDestinations = append(o.cfg.AllowedDestinations, "127.0.0.0/8", "::1")
	}
	for _, f := range files {
		list, err := readInstancesFile(f)
		if err != nil {
			return o, err
		}
		o.cfg.Instances = append(o.cfg.Instances, list...)
	}
	for _, spec := range instances {
		in, err := parseInstance(spec)
		if err != nil {
			return o, err
		}
		o.cfg.Instances = append(o.cfg.Instances, in)
	}
	if len(o.cfg.Instances) == 0 {
		return o, errors.New("no instances: give at least one --instance i-0123456789abcdef0 or an --instances-file")
	}
	for _, s := range serve {
		addr, dir, ok := strings.Cut(s, "=")
		if !ok || addr == "" || dir == "" {
			return o, fmt.Errorf("--serve-http %q must be ADDR=DIR, e.g. 127.0.0.1:8080=./site", s)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return o, fmt.Errorf("--serve-http %q: %s is not a directory", s, dir)
		}
	}
	o.serveHTTP = serve
	if err := o.cfg.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

var errVersion = errors.New("version requested")

// parseInstance reads ID[,agent=V][,ping=S][,tag=K=V]...[,allow=CIDR;CIDR][,platform=P].
func parseInstance(spec string) (emulator.Instance, error) {
	parts := strings.Split(spec, ",")
	in := emulator.Instance{ID: strings.TrimSpace(parts[0])}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return in, fmt.Errorf("--instance %q: %q must be key=value (agent=, ping=, tag=K=V, allow=, platform=)", spec, p)
		}
		switch k {
		case "agent":
			in.AgentVersion = v
		case "ping":
			in.PingStatus = v
		case "platform":
			in.PlatformType = v
		case "allow":
			in.AllowedDestinations = append(in.AllowedDestinations, strings.Split(v, ";")...)
		case "tag":
			tk, tv, ok := strings.Cut(v, "=")
			if !ok || tk == "" {
				return in, fmt.Errorf("--instance %q: tag %q must be tag=KEY=VALUE", spec, v)
			}
			if in.Tags == nil {
				in.Tags = map[string]string{}
			}
			in.Tags[tk] = tv
		default:
			return in, fmt.Errorf("--instance %q: unknown key %q (use agent=, ping=, tag=K=V, allow=, platform=)", spec, k)
		}
	}
	if err := in.Validate(); err != nil {
		return in, fmt.Errorf("--instance %q: %w", spec, err)
	}
	return in, nil
}

// readInstancesFile reads a JSON or YAML list of instances, or an object with an "instances" list.
func readInstancesFile(path string) ([]emulator.Instance, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--instances-file: %w", err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("--instances-file %s: not JSON or YAML: %w", path, err)
	}
	var list []emulator.Instance
	if err := yaml.UnmarshalStrict(j, &list); err != nil {
		var wrapped struct {
			Instances []emulator.Instance `json:"instances"`
		}
		if err2 := yaml.UnmarshalStrict(j, &wrapped); err2 != nil {
			return nil, fmt.Errorf("--instances-file %s: want a list of instances or {instances: [...]} with keys id, tags, agentVersion, pingStatus, allowedDestinations, platformType: %w", path, err2)
		}
		list = wrapped.Instances
	}
	for i, in := range list {
		if err := in.Validate(); err != nil {
			return nil, fmt.Errorf("--instances-file %s: instance %d: %w", path, i, err)
		}
	}
	return list, nil
}

// run is main without the process: it returns the exit code, so tests drive it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stdout)
	if errors.Is(err, errVersion) {
		fmt.Fprintln(stdout, tunnel.BuildInfo().Line("ssm-emulator"))
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0 // parse printed the usage
	}
	if err != nil {
		fmt.Fprintf(stderr, "ssm-emulator: %v (see 'ssm-emulator --help')\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	o.cfg.Logger = log
	e, err := emulator.Start(o.cfg)
	if err != nil {
		fmt.Fprintln(stderr, "ssm-emulator:", err)
		return 1
	}
	defer e.Close()

	var extra []*http.Server
	serveExtra := func(addr string, h http.Handler, what string) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", what, addr, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		extra = append(extra, srv)
		go func() { _ = srv.Serve(ln) }()
		fmt.Fprintf(stdout, "%s on http://%s\n", what, ln.Addr())
		return nil
	}
	fmt.Fprintf(stdout, "ssm-emulator listening on %s (AWS_ENDPOINT_URL_SSM=%s)\n", e.Endpoint(), e.Endpoint())
	for _, in := range e.Instances() {
		fmt.Fprintf(stdout, "instance %s agent %s %s tags %v\n", in.ID, in.AgentVersion, in.PingStatus, in.Tags)
	}
	if o.demoWeb != "" {
		if err := serveExtra(o.demoWeb, emulator.DemoWeb(), "demo web app"); err != nil {
			fmt.Fprintln(stderr, "ssm-emulator:", err)
			return 1
		}
	}
	for _, s := range o.serveHTTP {
		addr, dir, _ := strings.Cut(s, "=")
		if err := serveExtra(addr, http.FileServer(http.Dir(dir)), "files of "+dir); err != nil {
			fmt.Fprintln(stderr, "ssm-emulator:", err)
			return 1
		}
	}
	<-ctx.Done()
	log.Info("Shutting down")
	for _, s := range extra {
		_ = s.Close()
	}
	return 0
}
