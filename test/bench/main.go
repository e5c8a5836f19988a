// Command bench is the performance benchmark suite: every scenario measured side by side against direct TCP
// in one run, through real components — the emulator's HTTP API and websockets on loopback, the real
// aws-sdk-go-v2 inside a separate `ssmtunnel forward` process, and real TCP and HTTP servers as
// destinations. Round-trip time between the tunnel client and the message gateway is injected by a delaying
// TCP proxy (the kernel here has no netem); the direct baseline goes through the same proxy.
//
// Run it with `make bench` (BENCH_ARGS="-quick" for a short run, "-scenarios pageload,latency" to select).
// It writes bench/results/<date>-<commit>.json and .md: the machine, the commit, every figure with its
// median and spread over the repetitions, and the performance targets (targetSpecs) marked met or missed.
//
// Processes: the harness is the load generator and hosts the delaying proxies; the destination servers and
// each emulator run in child processes (the harness binary re-run with -role), and each tunnel variant is
// its own ssmtunnel process, built by the harness with a pprof overlay, so that RSS, CPU time and
// goroutines are the tunnel's alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

type options struct {
	quick      bool
	reps       int
	scenarios  []string
	outDir     string
	cpuProfile string
	memProfile string
	tunnelBin  string
}

var allScenarios = []string{"pageload", "bulk", "latency", "scale", "hol"}

func main() {
	role := flag.String("role", "", "internal: run as a helper process (servers, emulator)")
	pacing := flag.String("pacing", "none", "internal: emulator pacing for -role emulator")
	quick := flag.Bool("quick", false, "smaller run: fewer repetitions, smaller transfers, 40 ms page load only")
	reps := flag.Int("reps", 0, "repetitions of every measurement (default 5, 3 with -quick)")
	scen := flag.String("scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios to run: "+strings.Join(allScenarios, ", "))
	out := flag.String("out", "bench/results", "directory for <date>-<commit>.json and .md")
	cpuProf := flag.String("cpuprofile", "", "write CPU profiles of the tunnel process (bulk run here; -<scenario> suffixed files for the others)")
	memProf := flag.String("memprofile", "", "write heap profiles of the tunnel process (10,000 idle connections here; -bulk suffixed after bulk)")
	tunnelBin := flag.String("ssmtunnel", "", "use this ssmtunnel binary instead of building cmd/ssmtunnel (goroutine counts and profiles need the harness's build)")
	flag.Parse()

	switch *role {
	case "":
	case "servers":
		if err := serversChild(os.Stdout, os.Stdin); err != nil {
			fmt.Fprintln(os.Stderr, "bench servers:", err)
			os.Exit(1)
		}
		return
	case "emulator":
		if err := emulatorChild(os.Stdout, os.Stdin, *pacing); err != nil {
			fmt.Fprintln(os.Stderr, "bench emulator:", err)
			os.Exit(1)
		}
		return
	default:
		fmt.Fprintf(os.Stderr, "bench: unknown -role %q\n", *role)
		os.Exit(2)
	}

	o := options{quick: *quick, reps: *reps, outDir: *out, cpuProfile: *cpuProf, memProfile: *memProf, tunnelBin: *tunnelBin}
	if o.reps == 0 {
		o.reps = 5
		if o.quick {
			o.reps = 3
		}
	}
	for _, s := range strings.Split(*scen, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(allScenarios, s) {
			fmt.Fprintf(os.Stderr, "bench: unknown scenario %q; choose from %s\n", s, strings.Join(allScenarios, ", "))
			os.Exit(2)
		}
		o.scenarios = append(o.scenarios, s)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	start := time.Now()
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "ssmtunnel-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	b := &bench{opts: o, root: root, tmp: tmp, emus: map[string]*emuHandle{}}
	b.rep = newReport(root, o)
	defer b.closeAll()

	b.logf("machine: %s, %d cores, kernel %s, %s", b.rep.Machine.CPUModel, b.rep.Machine.Cores, b.rep.Machine.Kernel, b.rep.Machine.GoVersion)
	b.rep.Machine.Stalls = probeStalls(3 * time.Second)
	b.logf("host stalls: %.2f s of %.1f s in %d gaps (longest %.0f ms)", b.rep.Machine.Stalls.StalledSeconds, b.rep.Machine.Stalls.Seconds, b.rep.Machine.Stalls.Gaps, b.rep.Machine.Stalls.LongestMs)
	if o.tunnelBin != "" {
		b.tunnelBin = o.tunnelBin
	} else {
		b.logf("building cmd/ssmtunnel")
		b.tunnelBin, b.tunnelErr = buildTunnel(ctx, root, tmp)
		if b.tunnelErr != nil {
			b.errorf("tunnel client unavailable, tunnel variants skipped: %v", b.tunnelErr)
		}
	}
	b.srvChild, err = startChild(ctx, &b.srv, "servers")
	if err != nil {
		return fmt.Errorf("destination servers: %w", err)
	}

	for _, s := range o.scenarios {
		if ctx.Err() != nil {
			break
		}
		b.logf("scenario %s", s)
		t0 := time.Now()
		b.runScenario(ctx, s)
		b.logf("scenario %s done in %s", s, time.Since(t0).Round(time.Second))
	}
	b.rep.DurationSeconds = time.Since(start).Seconds()
	b.rep.computeTargets()
	jsonPath, mdPath, err := b.rep.write(o.outDir)
	if err != nil {
		return err
	}
	md, _ := os.ReadFile(mdPath)
	fmt.Println(string(md))
	b.logf("wrote %s and %s", jsonPath, mdPath)
	return ctx.Err()
}

func (b *bench) runScenario(ctx context.Context, s string) {
	defer func() {
		if r := recover(); r != nil {
			b.errorf("scenario %s panicked: %v", s, r)
		}
	}()
	var err error
	switch s {
	case "pageload":
		err = b.pageLoad(ctx)
	case "bulk":
		err = b.bulk(ctx)
	case "latency":
		err = b.latency(ctx)
	case "scale":
		err = b.scale(ctx)
	case "hol":
		err = b.headOfLine(ctx)
	}
	if err != nil {
		b.errorf("scenario %s: %v", s, err)
	}
}

// moduleRoot finds the directory of go.mod from the working directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the repository (make bench)")
		}
		dir = parent
	}
}
