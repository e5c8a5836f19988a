package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func startTestServers(t *testing.T) *servers {
	t.Helper()
	s, err := startServers()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// The delaying proxy must carry bytes intact in both directions and add one RTT per request/response.
func TestDelayProxyAddsRTTAndKeepsData(t *testing.T) {
	s := startTestServers(t)
	for _, rtt := range []time.Duration{0, 40 * time.Millisecond} {
		t.Run(rttName(rtt), func(t *testing.T) {
			p, err := newDelayProxy(s.TCP, rtt)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			conns, err := openEcho(context.Background(), p.addr(), 1)
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll(conns)
			c := conns[0]
			msg := make([]byte, 300<<10) // several chunks, larger than one proxy read
			_, _ = rand.Read(msg)
			got := make([]byte, len(msg))
			start := time.Now()
			errc := make(chan error, 1)
			go func() { _, err := c.Write(msg); errc <- err }()
			if _, err := io.ReadFull(c, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(start)
			if !bytes.Equal(got, msg) {
				t.Fatal("echo through the proxy corrupted the data")
			}
			if elapsed < rtt {
				t.Fatalf("round trip took %s, less than the injected RTT %s", elapsed, rtt)
			}
			lat, err := echoRound(conns, 5, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range lat {
				if l < rtt {
					t.Fatalf("1 KiB echo took %s, less than the injected RTT %s", l, rtt)
				}
			}
		})
	}
}

// A delay line must not turn bandwidth into latency x window: a bulk transfer through the proxy takes about
// one RTT more than the bytes need, not half an RTT per chunk.
func TestDelayProxyPipelines(t *testing.T) {
	s := startTestServers(t)
	const rtt = 400 * time.Millisecond
	p, err := newDelayProxy(s.TCP, rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	r, err := runTransfer(context.Background(), p.addr(), 1, false, 8<<20, nil, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 8 MiB is at least 128 reads of 64 KiB: one-way delay per chunk would take > 25 s.
	if r.elapsed < rtt/2 || r.elapsed > 8*time.Second {
		t.Fatalf("8 MiB through a %s delay line took %s: the proxy is not pipelining", rtt, r.elapsed)
	}
}

func TestTransfersAndPageLoadDirect(t *testing.T) {
	s := startTestServers(t)
	for _, up := range []bool{true, false} {
		r, err := runTransfer(context.Background(), s.TCP, 3, up, 1<<20, nil, 30*time.Second)
		if err != nil {
			t.Fatalf("upload=%v: %v", up, err)
		}
		if r.bytes != 3<<20 || r.mbps() <= 0 {
			t.Fatalf("upload=%v: %d bytes at %.1f MB/s", up, r.bytes, r.mbps())
		}
	}
	if _, err := loadPage(context.Background(), s.HTTP); err != nil {
		t.Fatal(err)
	}
	conns, err := dialAll(context.Background(), s.TCP, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(conns)
	mbps, complete, err := parallelDownloads(conns, 1<<20, 30*time.Second)
	if err != nil || !complete || mbps <= 0 {
		t.Fatalf("parallel downloads: %.1f MB/s complete=%v err=%v", mbps, complete, err)
	}
}

func TestPageAssets(t *testing.T) {
	a := pageAssets()
	if len(a) != 109 {
		t.Fatalf("%d assets, want 109", len(a))
	}
	total, small := 0, 0
	for _, n := range a {
		if n <= 0 {
			t.Fatalf("asset of %d bytes", n)
		}
		total += n
		if n < 16<<10 {
			small++
		}
	}
	if total != 2_500_000 {
		t.Fatalf("total %d bytes, want 2,500,000", total)
	}
	if small < 90 {
		t.Fatalf("only %d small assets: the mix should be mostly small", small)
	}
}

func TestSummaryAndQuantiles(t *testing.T) {
	s := summarize([]float64{5, 1, 3, 4, 2})
	if s.Median != 3 || s.Min != 1 || s.Max != 5 || s.N != 5 {
		t.Fatalf("summary %+v", s)
	}
	if math.Abs(s.SpreadPct-400.0/3) > 1e-9 {
		t.Fatalf("spread %v, want 133.3", s.SpreadPct)
	}
	if !math.IsNaN(summarize(nil).Median) {
		t.Fatal("empty summary must be NaN")
	}
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Microsecond
	}
	p50, p99 := percentiles(d)
	if math.Abs(p50-50.5) > 1e-9 || math.Abs(p99-99.01) > 1e-9 {
		t.Fatalf("p50 %v p99 %v", p50, p99)
	}
	if got := pairedRatios([]float64{2, 9}, []float64{1, 3}); len(got) != 2 || got[0] != 2 || got[1] != 3 {
		t.Fatalf("paired ratios %v", got)
	}
}

func TestTargetsAndReportFiles(t *testing.T) {
	r := newReport(".", options{reps: 5, scenarios: []string{"latency"}})
	r.addDerived("latency", "latency/rtt0ms/c1/added-p50", "µs", []float64{100, 120, 200})
	r.addDerived("latency", "latency/rtt0ms/c100/added-p99", "µs", []float64{2500, 2600, 2400})
	r.add("latency", "latency/rtt0ms/c1/direct/p50", "µs", nil, nil) // failed measurement: NaN
	r.computeTargets()
	if len(r.Targets) != len(targetSpecs) {
		t.Fatalf("%d targets, want one per spec (%d)", len(r.Targets), len(targetSpecs))
	}
	byName := map[string]target{}
	for _, tg := range r.Targets {
		byName[tg.Name] = tg
	}
	p50 := byName["latency: p50 added at concurrency 1, 0 ms RTT"]
	if p50.Value == nil || *p50.Value != 120 || !p50.Met {
		t.Fatalf("p50 target %+v", p50)
	}
	p99 := byName["latency: p99 added at concurrency 100, 0 ms RTT"]
	if p99.Value == nil || *p99.Value != 2.5 || p99.Met {
		t.Fatalf("p99 target %+v (want 2.5 ms, missed)", p99)
	}
	if tg := byName["scale: RSS with 10,000 idle connections"]; tg.Value != nil || tg.Met {
		t.Fatalf("unmeasured target %+v must have no value and not be met", tg)
	}
	dir := t.TempDir()
	jp, mp, err := r.write(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(jp)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("results JSON does not parse: %v", err)
	}
	for _, k := range []string{"machine", "commit", "results", "targets"} {
		if _, ok := back[k]; !ok {
			t.Fatalf("results JSON lacks %q", k)
		}
	}
	md, err := os.ReadFile(mp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "**missed**") || filepath.Dir(mp) != dir {
		t.Fatalf("markdown does not mark the missed target:\n%s", md)
	}
}

func TestProcReaders(t *testing.T) {
	pid := os.Getpid()
	rss, err := procRSS(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("rss %d, %v", rss, err)
	}
	if _, err := procCPU(pid); err != nil {
		t.Fatal(err)
	}
}

// memStats reads the runtime's own figures from a real net/http/pprof heap endpoint (this process's).
func TestMemStatsFromPprof(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tun := &tunnelProc{pprof: strings.TrimPrefix(srv.URL, "http://")}
	stats, err := tun.memStats()
	if err != nil {
		t.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if stats["StackInuse"] == 0 || stats["HeapInuse"] == 0 || stats["Sys"] == 0 {
		t.Fatalf("missing figures: %v", stats)
	}
	// Sys only grows, so what the endpoint reported earlier cannot exceed what is read now.
	if stats["Sys"] > ms.Sys {
		t.Fatalf("Sys %d from the endpoint, %d read afterwards", stats["Sys"], ms.Sys)
	}
}
