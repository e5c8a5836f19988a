package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// dialAll opens n connections to addr, concurrently but at most 64 at a time.
func dialAll(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	d := net.Dialer{Timeout: 30 * time.Second}
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i], errs[i] = d.DialContext(ctx, "tcp", addr)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// transferResult is one bulk measurement.
type transferResult struct {
	bytes   int64
	elapsed time.Duration
	cpu     float64 // CPU-seconds of the tunnel process during the transfer (0 for direct)
	// resent and dropped are the tunnel's data frames sent again and received frames dropped for a full
	// buffer during the transfer: each means a retransmission timeout, and explains a slow run.
	resent, dropped float64
}

// frameLosses reads the tunnel's counters of resent and dropped frames.
func frameLosses(tun *tunnelProc) (resent, dropped float64, err error) {
	if resent, err = tun.counter("ssmtunnel_retransmits_total"); err != nil {
		return 0, 0, err
	}
	dropped, err = tun.counter("ssmtunnel_frames_dropped_total")
	return resent, dropped, err
}

func (r transferResult) mbps() float64 { return float64(r.bytes) / 1e6 / r.elapsed.Seconds() }

// runTransfer moves perStream bytes over each of streams fresh connections to addr, all at once, in one
// direction, and times it from the first byte to the last receipt. Connection setup is outside the timing.
func runTransfer(ctx context.Context, addr string, streams int, up bool, perStream uint64, tun *tunnelProc, timeout time.Duration) (transferResult, error) {
	conns, err := dialAll(ctx, addr, streams)
	if err != nil {
		return transferResult{}, err
	}
	defer closeAll(conns)
	deadline := time.Now().Add(timeout)
	for _, c := range conns {
		_ = c.SetDeadline(deadline)
	}
	var cpu0, resent0, dropped0 float64
	if tun != nil {
		cpu0, _ = tun.cpuSeconds()
		if resent0, dropped0, err = frameLosses(tun); err != nil {
			return transferResult{}, err
		}
	}
	start := time.Now()
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if up {
				errs[i] = upload(c, perStream)
			} else {
				errs[i] = download(c, perStream)
			}
		}()
	}
	wg.Wait()
	res := transferResult{bytes: int64(perStream) * int64(streams), elapsed: time.Since(start)}
	if tun != nil {
		cpu1, _ := tun.cpuSeconds()
		res.cpu = cpu1 - cpu0
		resent1, dropped1, err := frameLosses(tun)
		if err != nil {
			errs = append(errs, err)
		}
		res.resent, res.dropped = resent1-resent0, dropped1-dropped0
	}
	return res, errors.Join(errs...)
}

type bulkCase struct {
	streams int
	upload  bool
}

func (c bulkCase) name() string {
	dir := "download"
	if c.upload {
		dir = "upload"
	}
	if c.streams == 1 {
		return "1-stream/" + dir
	}
	return fmt.Sprintf("%d-streams/%s", c.streams, dir)
}

// bulk is scenario 2 (and 5, the CPU cost): 1 and 8 parallel streams each way, pacing none against direct
// loopback TCP, then pacing agent over one session and over a pool of 8.
func (b *bench) bulk(ctx context.Context) error {
	cases := []bulkCase{{1, true}, {1, false}, {8, true}, {8, false}}
	direct, closeDirect, err := b.directVariant(b.srv.TCP, 0)
	if err != nil {
		return err
	}
	defer closeDirect()

	// Pacing none: every variant's runs last about the same wall time (runSeconds), whatever its speed: the
	// first (warm-up) run uses the starting size, and each run sizes the next from its own rate. A loaded
	// host can stop its processes for hundreds of milliseconds at a time, several times a second; with fixed
	// sizes, direct TCP moves 64 MiB in tens of milliseconds, mostly between stops, while the slower tunnel's
	// runs always contain some, which puts the ratio at the mercy of the stops. Equal durations expose both
	// alike.
	runSeconds := 1.5
	if b.opts.quick {
		runSeconds = 0.5
	}
	const minPerStream, maxPerStream = 1 << 20, 4 << 30
	nextSize := func(r transferResult, streams int) uint64 {
		perStream := r.mbps() * 1e6 * runSeconds / float64(streams)
		return uint64(min(max(perStream, minPerStream), maxPerStream))
	}
	startSize := map[int]uint64{1: 16 << 20, 8: 2 << 20}
	tun := b.tunnelVariant(ctx, "tunnel", pacingNone, instanceMux, b.srv.TCP, 1, 0)
	defer tun.close()
	cpuProfiling := false
	if path := profilePath(b.opts.cpuProfile, ""); path != "" && tun.ok() {
		if err := tun.Tunnel.startCPUProfile(); err != nil {
			b.errorf("cpu profile: %v", err)
		} else {
			cpuProfiling = true
		}
	}
	// The same client with the service's 1 KiB frames (still unpaced): the per-frame cost, single stream only.
	tun1k := b.tunnelVariant(ctx, "tunnel-1k", pacingNone, instanceMux, b.srv.TCP, 1, 0, "--max-payload-size", "1024")
	defer tun1k.close()
	directMBps := map[string][]float64{}
	type cpuAcc struct {
		perGB        []float64
		cpu, written float64
	}
	cpu := map[string]*cpuAcc{"tunnel": {}, "tunnel-1k": {}}
	for _, c := range cases {
		prefix := "bulk/pacing-none/" + c.name()
		b.logf("%s", prefix)
		vs := []*variant{direct, tun}
		if c.streams == 1 {
			vs = append(vs, tun1k)
		}
		size := make([]uint64, len(vs))
		for i := range size {
			size[i] = startSize[c.streams]
		}
		mbps := make([][]float64, len(vs))
		resent := make([][]float64, len(vs))
		dropped := make([][]float64, len(vs))
		seconds := make([][]float64, len(vs))
		failed := make([]bool, len(vs))
		for rep := -1; rep < b.opts.reps; rep++ {
			for i, v := range vs {
				if !v.ok() || failed[i] {
					continue
				}
				r, err := runTransfer(ctx, v.Addr, c.streams, c.upload, size[i], v.Tunnel, 120*time.Second)
				if err != nil {
					b.errorf("%s/%s: %v", prefix, v.Name, err)
					failed[i] = true
					mbps[i] = nil
					continue
				}
				size[i] = nextSize(r, c.streams)
				if rep < 0 {
					continue
				}
				mbps[i] = append(mbps[i], r.mbps())
				seconds[i] = append(seconds[i], r.elapsed.Seconds())
				if v.Tunnel != nil {
					resent[i] = append(resent[i], r.resent)
					dropped[i] = append(dropped[i], r.dropped)
				}
				if acc := cpu[v.Name]; acc != nil && r.cpu > 0 {
					acc.perGB = append(acc.perGB, r.cpu/(float64(r.bytes)/1e9))
					acc.cpu += r.cpu
					acc.written += float64(r.bytes)
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		params := map[string]any{"streams": c.streams, "run_seconds": runSeconds, "pacing": pacingNone, "rtt_ms": 0}
		directMBps[c.name()] = mbps[0]
		for i, v := range vs {
			if v.Err == errNoTunnel {
				continue
			}
			b.rep.add("bulk", prefix+"/"+v.Name+"/MBps", "MB/s", mbps[i], params)
			b.rep.add("bulk", prefix+"/"+v.Name+"/seconds-per-run", "s", seconds[i], params)
			if len(resent[i]) > 0 {
				b.rep.add("bulk", prefix+"/"+v.Name+"/frames-resent", "frames", resent[i], params)
				b.rep.add("bulk", prefix+"/"+v.Name+"/frames-dropped", "frames", dropped[i], params)
			}
			if i > 0 && len(mbps[i]) > 0 && len(mbps[0]) > 0 {
				name := "/ratio-tunnel-over-direct"
				if v.Name != "tunnel" {
					name = "/ratio-" + v.Name + "-over-direct"
				}
				b.rep.addDerived("bulk", prefix+name, "fraction", pairedRatios(mbps[i], mbps[0]))
			}
		}
	}
	for _, k := range []string{"tunnel", "tunnel-1k"} {
		acc := cpu[k]
		if len(acc.perGB) == 0 {
			continue
		}
		name := "cpu/pacing-none/cpu-seconds-per-GB"
		if k == "tunnel-1k" {
			name = "cpu/pacing-none/1KiB-frames/cpu-seconds-per-GB"
		}
		b.rep.add("cpu", name, "CPU-s/GB", acc.perGB, map[string]any{
			"total_cpu_seconds": acc.cpu, "total_bytes": acc.written, "overall": acc.cpu / (acc.written / 1e9)})
	}
	if cpuProfiling {
		if err := tun.Tunnel.stopCPUProfile(profilePath(b.opts.cpuProfile, "")); err != nil {
			b.errorf("cpu profile: %v", err)
		}
	}
	if path := profilePath(b.opts.memProfile, "bulk"); path != "" && tun.ok() {
		if err := tun.Tunnel.writeHeapProfile(path); err != nil {
			b.errorf("heap profile: %v", err)
		}
	}
	tun.close()
	tun1k.close()

	// Pacing agent: ~1 MB/s per session, so transfers are small; the 8-stream cases also run over a pool of 8.
	agentSize := map[string]uint64{"1": 1 << 20, "8": 256 << 10, "8-pool": 1 << 20}
	if b.opts.quick {
		for k := range agentSize {
			agentSize[k] /= 2
		}
	}
	one := b.tunnelVariant(ctx, "tunnel", pacingAgent, instanceMux, b.srv.TCP, 1, 0)
	defer one.close()
	pool := b.tunnelVariant(ctx, "pool8", pacingAgent, instanceMux, b.srv.TCP, 8, 0)
	defer pool.close()
	for _, c := range cases {
		prefix := "bulk/pacing-agent/" + c.name()
		b.logf("%s", prefix)
		var t, p []float64
		for rep := -1; rep < b.opts.reps; rep++ {
			if one.ok() {
				size := agentSize[fmt.Sprint(c.streams)]
				r, err := runTransfer(ctx, one.Addr, c.streams, c.upload, size, nil, 60*time.Second)
				if err != nil {
					b.errorf("%s/tunnel: %v", prefix, err)
				} else if rep >= 0 {
					t = append(t, r.mbps())
				}
			}
			if pool.ok() && c.streams == 8 {
				r, err := runTransfer(ctx, pool.Addr, c.streams, c.upload, agentSize["8-pool"], nil, 60*time.Second)
				if err != nil {
					b.errorf("%s/pool8: %v", prefix, err)
				} else if rep >= 0 {
					p = append(p, r.mbps())
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if one.ok() {
			b.rep.add("bulk", prefix+"/tunnel/MBps", "MB/s", t, map[string]any{"streams": c.streams, "sessions": 1, "bytes_per_stream": agentSize[fmt.Sprint(c.streams)], "pacing": pacingAgent})
			if dm := summarize(directMBps[c.name()]).Median; len(t) > 0 && dm > 0 {
				b.rep.addDerived("bulk", prefix+"/tunnel/ratio-over-direct-median", "fraction", scaleAll(t, 1/dm))
			}
		}
		if pool.ok() && c.streams == 8 {
			b.rep.add("bulk", prefix+"/pool8/MBps", "MB/s", p, map[string]any{"streams": c.streams, "sessions": 8, "bytes_per_stream": agentSize["8-pool"], "pacing": pacingAgent})
		}
	}
	b.rep.Notes = append(b.rep.Notes, "bulk: MB/s = 10^6 bytes/s of payload, from the first byte to the receiver's last byte (upload: the server's receipt), connections opened beforehand; 0 ms RTT. Pacing-none runs are sized so every variant's runs last about the same time (seconds-per-run rows), because this host stops processes for 100-650 ms at a time. Pacing-agent rows are compared with the direct medians of the pacing-none rows (direct TCP does not depend on the emulator).")
	return nil
}

func scaleAll(v []float64, k float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = x * k
	}
	return out
}
