package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a helper process of the harness: the harness binary itself run with -role. It prints one JSON
// line describing itself and lives until its stdin is closed, so it cannot outlive the harness.
type child struct {
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	done     chan error
	stopOnce sync.Once
}

func startChild(ctx context.Context, info any, role string, args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, append([]string{"-role", role}, args...)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin, done: make(chan error, 1)}
	line := make(chan []byte, 1)
	go func() {
		r := bufio.NewReader(stdout)
		l, _ := r.ReadBytes('\n')
		line <- l
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() { c.done <- cmd.Wait() }()
	select {
	case l := <-line:
		if err := json.Unmarshal(l, info); err != nil {
			c.stop()
			return nil, fmt.Errorf("child %s: bad announcement %q: %w", role, l, err)
		}
		return c, nil
	case err := <-c.done:
		return nil, fmt.Errorf("child %s exited before it was ready: %v", role, err)
	case <-ctx.Done():
		c.stop()
		return nil, ctx.Err()
	case <-time.After(60 * time.Second):
		c.stop()
		return nil, fmt.Errorf("child %s not ready after 60 s", role)
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) stop() {
	c.stopOnce.Do(func() {
		_ = c.stdin.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

func printJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// pprofOverlay is compiled into the harness's build of cmd/ssmtunnel (go build -overlay), never into the
// product: when SSMTUNNEL_BENCH_PPROF is set it serves net/http/pprof plus a start/stop CPU profile pair, so
// the harness can count goroutines and profile the tunnel process exactly over a measurement.
const pprofOverlay = `package main

import (
	zzbenchbytes "bytes"
	zzbenchhttp "net/http"
	zzbenchpprof "net/http/pprof"
	zzbenchos "os"
	zzbenchrpprof "runtime/pprof"
	zzbenchsync "sync"
)

func init() {
	addr := zzbenchos.Getenv("SSMTUNNEL_BENCH_PPROF")
	if addr == "" {
		return
	}
	var mu zzbenchsync.Mutex
	var cpu *zzbenchbytes.Buffer
	mux := zzbenchhttp.NewServeMux()
	mux.HandleFunc("/debug/pprof/", zzbenchpprof.Index)
	mux.HandleFunc("/bench/cpu/start", func(w zzbenchhttp.ResponseWriter, r *zzbenchhttp.Request) {
		mu.Lock()
		defer mu.Unlock()
		if cpu != nil {
			zzbenchhttp.Error(w, "already profiling", 409)
			return
		}
		cpu = new(zzbenchbytes.Buffer)
		if err := zzbenchrpprof.StartCPUProfile(cpu); err != nil {
			cpu = nil
			zzbenchhttp.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("/bench/cpu/stop", func(w zzbenchhttp.ResponseWriter, r *zzbenchhttp.Request) {
		mu.Lock()
		defer mu.Unlock()
		if cpu == nil {
			zzbenchhttp.Error(w, "not profiling", 409)
			return
		}
		zzbenchrpprof.StopCPUProfile()
		_, _ = w.Write(cpu.Bytes())
		cpu = nil
	})
	go func() { _ = zzbenchhttp.ListenAndServe(addr, mux) }()
}
`

// buildTunnel compiles cmd/ssmtunnel with the pprof overlay into dir.
func buildTunnel(ctx context.Context, root, dir string) (string, error) {
	overlayFile := filepath.Join(dir, "zz_bench_pprof.go")
	if err := os.WriteFile(overlayFile, []byte(pprofOverlay), 0o644); err != nil {
		return "", err
	}
	ov, _ := json.Marshal(map[string]any{"Replace": map[string]string{
		filepath.Join(root, "cmd", "ssmtunnel", "zz_bench_pprof.go"): overlayFile,
	}})
	ovPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "ssmtunnel")
	// Plain flags (no -trimpath, default cgo setting) so the build cache of everyone's `go build ./...` and
	// `go vet` serves the dependencies.
	cmd := exec.CommandContext(ctx, "go", "build", "-overlay", ovPath, "-o", out, "./cmd/ssmtunnel")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ssmtunnel: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// freePort reserves a loopback port number by listening and closing.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// tunnelSpec says how to start one ssmtunnel forward process.
type tunnelSpec struct {
	Endpoint   string // SSM endpoint, normally the delaying proxy in front of an emulator
	Instance   string
	RemotePort int
	Sessions   int
	Args       []string // extra flags of ssmtunnel forward
}

// tunnelProc is a running `ssmtunnel forward`: a separate process, so that its RSS, CPU time and goroutines
// are its own.
type tunnelProc struct {
	cmd        *exec.Cmd
	done       chan error
	Local      string // 127.0.0.1:port the tunnel listens on
	health     string
	metrics    string
	pprof      string
	stderr     *limitedWriter
	exitStatus error
	stopOnce   sync.Once
}

func startTunnel(ctx context.Context, bin string, spec tunnelSpec) (*tunnelProc, error) {
	var ports [4]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	t := &tunnelProc{
		Local:   fmt.Sprintf("127.0.0.1:%d", ports[0]),
		health:  fmt.Sprintf("127.0.0.1:%d", ports[1]),
		metrics: fmt.Sprintf("127.0.0.1:%d", ports[2]),
		pprof:   fmt.Sprintf("127.0.0.1:%d", ports[3]),
		stderr:  &limitedWriter{n: 64 << 10},
		done:    make(chan error, 1),
	}
	sessions := max(spec.Sessions, 1)
	args := []string{"forward", spec.Instance, fmt.Sprintf("%d:%d", ports[0], spec.RemotePort),
		"--address", "127.0.0.1", "--region", "us-east-1", "--sessions", strconv.Itoa(sessions),
		"--health-addr", t.health, "--metrics-addr", t.metrics, "--drain-timeout", "1s", "--log-level", "warn"}
	args = append(args, spec.Args...)
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.TempDir(),
		"AWS_ENDPOINT_URL_SSM=" + spec.Endpoint,
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=AKIABENCHMARK0000000",
		"AWS_SECRET_ACCESS_KEY=benchmark-secret",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=/dev/null",
		"AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"SSMTUNNEL_BENCH_PPROF=" + t.pprof,
	}
	// GC settings for the tunnel process only, to measure their effect on memory at rest:
	// SSMTUNNEL_BENCH_TUNNEL_GOGC and SSMTUNNEL_BENCH_TUNNEL_GOMEMLIMIT become its GOGC and GOMEMLIMIT.
	for _, k := range []string{"GOGC", "GOMEMLIMIT"} {
		if v, ok := os.LookupEnv("SSMTUNNEL_BENCH_TUNNEL_" + k); ok {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Stdout = io.Discard
	cmd.Stderr = t.stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t.cmd = cmd
	go func() { t.done <- cmd.Wait() }()
	if err := t.waitReady(ctx, 60*time.Second); err != nil {
		t.stop()
		return nil, fmt.Errorf("ssmtunnel %s: %w; stderr: %s", strings.Join(args, " "), err, lastLines(t.stderr.String(), 8))
	}
	return t, nil
}

// waitReady polls /readyz (external state, so polling with a deadline is the right tool).
func (t *tunnelProc) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get("http://" + t.health + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		select {
		case err := <-t.done:
			t.done <- err
			return fmt.Errorf("exited before ready: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (t *tunnelProc) pid() int { return t.cmd.Process.Pid }

// stop sends SIGTERM (graceful drain, bounded by --drain-timeout 1s) and kills after 10 s. Idempotent.
func (t *tunnelProc) stop() {
	t.stopOnce.Do(func() {
		if t.cmd == nil || t.cmd.Process == nil {
			return
		}
		_ = t.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-t.done:
			t.exitStatus = err
		case <-time.After(10 * time.Second):
			_ = t.cmd.Process.Kill()
			t.exitStatus = <-t.done
		}
	})
}

// rssBytes reads VmRSS of the tunnel process.
func (t *tunnelProc) rssBytes() (int64, error) { return procRSS(t.pid()) }

// cpuSeconds is utime+stime of the tunnel process.
func (t *tunnelProc) cpuSeconds() (float64, error) { return procCPU(t.pid()) }

// goroutines counts the tunnel's goroutines through the overlay's pprof endpoint.
func (t *tunnelProc) goroutines() (int, error) {
	resp, err := http.Get("http://" + t.pprof + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, err
	}
	// "goroutine profile: total 1234"
	f := strings.Fields(line)
	if len(f) == 0 {
		return 0, fmt.Errorf("unexpected goroutine profile header %q", line)
	}
	return strconv.Atoi(f[len(f)-1])
}

// memStats reads the tunnel's runtime.MemStats (the "# Name = value" lines that end the text heap profile),
// so the report can say where its RSS goes: heap objects, goroutine stacks, or memory the runtime holds.
func (t *tunnelProc) memStats() (map[string]uint64, error) {
	resp, err := http.Get("http://" + t.pprof + "/debug/pprof/heap?debug=1")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	stats := map[string]uint64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = ")
		if !ok || strings.ContainsAny(name, " \t") {
			continue
		}
		if inuse, sys, pair := strings.Cut(value, " / "); pair {
			// "Stack = 327680 / 327680": StackInuse / StackSys, and the same for MSpan and MCache.
			value = inuse
			if v, err := strconv.ParseUint(sys, 10, 64); err == nil {
				stats[name+"Sys"] = v
			}
			name += "Inuse"
		}
		if v, err := strconv.ParseUint(value, 10, 64); err == nil {
			stats[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if _, ok := stats["StackInuse"]; !ok {
		return nil, fmt.Errorf("no runtime.MemStats in the heap profile")
	}
	return stats, nil
}

func (t *tunnelProc) startCPUProfile() error {
	resp, err := http.Get("http://" + t.pprof + "/bench/cpu/start")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("start CPU profile: %s %s", resp.Status, b)
	}
	return nil
}

func (t *tunnelProc) stopCPUProfile(path string) error {
	return t.saveProfile("/bench/cpu/stop", "stop CPU profile", path)
}

func (t *tunnelProc) writeHeapProfile(path string) error {
	return t.saveProfile("/debug/pprof/heap?gc=1", "heap profile", path)
}

// saveProfile fetches a profile from the tunnel's pprof endpoint and writes it to path.
func (t *tunnelProc) saveProfile(endpoint, what, path string) error {
	resp, err := http.Get("http://" + t.pprof + endpoint)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s %s", what, resp.Status, b)
	}
	return os.WriteFile(path, b, 0o644)
}

func procRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// clockTicks is sysconf(_SC_CLK_TCK), 100 on every Linux this runs on.
const clockTicks = 100

func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces: split after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// Fields after ')' start at field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return float64(ut+st) / clockTicks, nil
}

// limitedWriter keeps the first n bytes of a child's stderr, safe to read while the child runs.
type limitedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := min(len(p), l.n-l.buf.Len())
	if k > 0 {
		l.buf.Write(p[:k])
	}
	return len(p), nil
}

func (l *limitedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// counter sums every series of a counter on the tunnel's /metrics (Prometheus text format): the bench reports
// resends and drops next to throughput, since each one costs a retransmission timeout.
func (t *tunnelProc) counter(name string) (float64, error) {
	resp, err := http.Get("http://" + t.metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("/metrics line %q: %w", line, err)
		}
		sum += v
		found = true
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("/metrics has no %s", name)
	}
	return sum, nil
}
