package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// loadPage issues the 109 GETs of pageAssets in parallel, each on its own connection (no keep-alive: the
// connection closes after its response, which is also what lets basic mode move on to the next connection,
// §9.3), and returns the time until every body has been read in full.
func loadPage(ctx context.Context, addr string) (time.Duration, error) {
	assets := pageAssets()
	tr := &http.Transport{
		DisableKeepAlives:   true,
		DisableCompression:  true,
		MaxIdleConnsPerHost: -1,
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 120 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(assets))
	start := time.Now()
	for i, size := range assets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/asset/%d", addr, i), nil)
			if err != nil {
				errs <- err
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(io.Discard, resp.Body)
			if err != nil {
				errs <- fmt.Errorf("asset %d: %w", i, err)
				return
			}
			if resp.StatusCode != http.StatusOK || n != int64(size) {
				errs <- fmt.Errorf("asset %d: status %d, %d of %d bytes", i, resp.StatusCode, n, size)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		cancel()
		return elapsed, err
	}
	return elapsed, nil
}

// pageLoad is scenario 1: the seed's page load over (a) direct, (b) multiplexed, (c) basic mode, (d) a pool
// of 4 sessions, at pacing none and agent, 40 ms RTT (and 0 ms in a full run).
func (b *bench) pageLoad(ctx context.Context) error {
	rtts := []time.Duration{40 * time.Millisecond, 0}
	if b.opts.quick {
		rtts = rtts[:1]
	}
	for _, pacing := range []string{pacingNone, pacingAgent} {
		for _, rtt := range rtts {
			if pacing == pacingAgent && rtt == 0 {
				continue // paced by the agent, the 0 ms figures add little to the 40 ms ones and cost a minute
			}
			if err := b.pageLoadSetting(ctx, pacing, rtt); err != nil {
				return err
			}
		}
	}
	b.rep.Notes = append(b.rep.Notes, "pageload: 109 parallel GETs, one connection each, of assets totalling 2,500,000 bytes (3 bundles of 900/520/260 KiB, 6 chunks of 24-64 KiB, 100 small assets of ~0.6-12 KiB), served by net/http on loopback; time until every body is read. The delaying proxy delays data, not connection setup, so direct pays one RTT per request where real TCP pays two: ratios against direct are conservative.")
	return nil
}

func (b *bench) pageLoadSetting(ctx context.Context, pacing string, rtt time.Duration) error {
	prefix := fmt.Sprintf("pageload/pacing-%s/%s", pacing, rttName(rtt))
	b.logf("%s", prefix)
	direct, closeDirect, err := b.directVariant(b.srv.HTTP, rtt)
	if err != nil {
		return err
	}
	defer closeDirect()
	variants := []*variant{direct,
		b.tunnelVariant(ctx, "mux", pacing, instanceMux, b.srv.HTTP, 1, rtt),
		b.tunnelVariant(ctx, "basic", pacing, instanceBasic, b.srv.HTTP, 1, rtt),
		b.tunnelVariant(ctx, "pool4", pacing, instanceMux, b.srv.HTTP, 4, rtt),
	}
	for _, v := range variants[1:] {
		defer v.close()
	}
	// CPU profile of the multiplexed client over the page loads with pacing none at 40 ms.
	var profiling *tunnelProc
	if path := profilePath(b.opts.cpuProfile, "pageload"); path != "" && pacing == pacingNone && rtt > 0 && variants[1].ok() {
		if err := variants[1].Tunnel.startCPUProfile(); err != nil {
			b.errorf("cpu profile: %v", err)
		} else {
			profiling = variants[1].Tunnel
			defer func() {
				if err := profiling.stopCPUProfile(path); err != nil {
					b.errorf("cpu profile: %v", err)
				}
			}()
		}
	}
	samples := make([][]float64, len(variants))
	failed := make([]bool, len(variants))
	// Basic mode serialises 109 connections and has no multiplexed session state to warm up: it skips the
	// warm-up round, which costs it the most.
	for rep := -1; rep < b.opts.reps; rep++ { // rep -1 warms up connections, sessions and caches
		for i, v := range variants {
			if !v.ok() || failed[i] || (rep < 0 && v.Name == "basic") {
				continue
			}
			d, err := loadPage(ctx, v.Addr)
			if err != nil {
				failed[i] = true
				b.errorf("%s/%s: %v", prefix, v.Name, err)
				continue
			}
			if rep >= 0 {
				samples[i] = append(samples[i], float64(d)/float64(time.Millisecond))
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	params := map[string]any{"requests": 109, "bytes": 2_500_000, "rtt_ms": rtt.Milliseconds(), "pacing": pacing}
	for i, v := range variants {
		if failed[i] {
			samples[i] = nil
		}
		if v.ok() || v.Err != errNoTunnel {
			b.rep.add("pageload", prefix+"/"+v.Name+"/ms", "ms", samples[i], params)
		}
	}
	ratio := func(name string, a, c int) {
		if len(samples[a]) > 0 && len(samples[c]) > 0 {
			b.rep.addDerived("pageload", prefix+"/"+name, "x", pairedRatios(samples[a], samples[c]))
		}
	}
	ratio("ratio-mux-over-direct", 1, 0)
	ratio("ratio-basic-over-mux", 2, 1)
	ratio("ratio-mux-over-pool4", 1, 3)
	ratio("ratio-pool4-over-direct", 3, 0)
	return nil
}
