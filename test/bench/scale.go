package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// scale is scenario 4: 10,000 idle connections through one tunnel process, then 1,000 of them active, with
// the process's RSS and goroutines at each stage. A fresh tunnel process per repetition, so every
// repetition measures the first time the process holds that many connections.
func (b *bench) scale(ctx context.Context) error {
	const idle, active = 10000, 1000
	activeFor := 3 * time.Second
	if b.opts.quick {
		activeFor = 1500 * time.Millisecond
	}
	var rssBase, rssIdle, rssActive, gBase, gIdle, gActive, perConnKB, openSecs, activeMBps []float64
	var heapIdle, stackIdle []float64
	for rep := range b.opts.reps {
		b.logf("scale: repetition %d", rep+1)
		// The production configuration: the client's defaults (the service's 1 KiB frames at ~1 MB/s) against
		// the agent's pacing. Memory at rest is what matters here, not speed.
		tun := b.tunnelVariant(ctx, "tunnel", pacingAgent, instanceMux, b.srv.TCP, 1, 0)
		if !tun.ok() {
			if tun.Err == errNoTunnel {
				return nil
			}
			return tun.Err
		}
		r, err := b.scaleOnce(ctx, tun.Tunnel, idle, active, activeFor, rep == 0)
		tun.close()
		if err != nil {
			return err
		}
		rssBase = append(rssBase, r.rssBase)
		rssIdle = append(rssIdle, r.rssIdle)
		rssActive = append(rssActive, r.rssActive)
		gBase = append(gBase, r.gBase)
		gIdle = append(gIdle, r.gIdle)
		gActive = append(gActive, r.gActive)
		perConnKB = append(perConnKB, (r.rssIdle-r.rssBase)*1024/idle)
		openSecs = append(openSecs, r.openSecs)
		activeMBps = append(activeMBps, r.activeMBps)
		heapIdle = append(heapIdle, r.heapIdle)
		stackIdle = append(stackIdle, r.stackIdle)
		runtime.GC() // the harness's own 10,000 connections are gone; do not carry their garbage into the next repetition
	}
	p := map[string]any{"idle": idle, "active": active, "pacing": pacingAgent, "client": "defaults", "rtt_ms": 0}
	b.rep.add("scale", "scale/fresh-process/rss", "MB", rssBase, p)
	b.rep.add("scale", "scale/fresh-process/goroutines", "count", gBase, p)
	b.rep.add("scale", fmt.Sprintf("scale/idle-%d/rss", idle), "MB", rssIdle, p)
	b.rep.add("scale", fmt.Sprintf("scale/idle-%d/rss-per-connection", idle), "KB", perConnKB, p)
	b.rep.add("scale", fmt.Sprintf("scale/idle-%d/goroutines", idle), "count", gIdle, p)
	b.rep.add("scale", fmt.Sprintf("scale/idle-%d/heap-inuse", idle), "MB", heapIdle, p)
	b.rep.add("scale", fmt.Sprintf("scale/idle-%d/stack-inuse", idle), "MB", stackIdle, p)
	b.rep.add("scale", fmt.Sprintf("scale/idle-%d/open-seconds", idle), "s", openSecs, p)
	b.rep.add("scale", fmt.Sprintf("scale/active-%d/rss-peak", active), "MB", rssActive, p)
	b.rep.add("scale", fmt.Sprintf("scale/active-%d/goroutines-peak", active), "count", gActive, p)
	b.rep.add("scale", fmt.Sprintf("scale/active-%d/echo-MBps", active), "MB/s", activeMBps, p)
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("scale: %d connections opened through one ssmtunnel process (1 session, client defaults and emulator pacing agent as in production), each with one echoed byte so the whole path is up, then held idle; RSS is VmRSS (MB = 2^20 bytes) 1 s after the last one opened, heap-inuse and stack-inuse the Go runtime's HeapInuse and StackInuse then; then %d of them run 1 KiB echo loops for %s while RSS and goroutines are sampled every 250 ms (peaks reported). Goroutines come from the pprof endpoint the harness compiles into its build of ssmtunnel.", idle, active, activeFor))
	return nil
}

type scaleResult struct {
	rssBase, rssIdle, rssActive float64
	gBase, gIdle, gActive       float64
	heapIdle, stackIdle         float64 // runtime.MemStats HeapInuse and StackInuse with the connections idle
	openSecs, activeMBps        float64
}

func (b *bench) scaleOnce(ctx context.Context, tun *tunnelProc, idle, active int, activeFor time.Duration, profile bool) (scaleResult, error) {
	var r scaleResult
	mb := func() float64 {
		v, err := tun.rssBytes()
		if err != nil {
			return 0
		}
		return float64(v) / (1 << 20)
	}
	gr := func() float64 {
		g, err := tun.goroutines()
		if err != nil {
			return 0
		}
		return float64(g)
	}
	r.rssBase, r.gBase = mb(), gr()
	t0 := time.Now()
	conns, err := openEcho(ctx, tun.Local, idle)
	if err != nil {
		return r, fmt.Errorf("opening %d connections: %w", idle, err)
	}
	defer closeAll(conns)
	r.openSecs = time.Since(t0).Seconds()
	settle := time.NewTimer(time.Second)
	select {
	case <-settle.C:
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.rssIdle, r.gIdle = mb(), gr()
	if ms, err := tun.memStats(); err != nil {
		b.errorf("scale: memory statistics: %v", err)
	} else {
		r.heapIdle, r.stackIdle = float64(ms["HeapInuse"])/(1<<20), float64(ms["StackInuse"])/(1<<20)
	}
	if path := profilePath(b.opts.memProfile, ""); path != "" && profile {
		if err := tun.writeHeapProfile(path); err != nil {
			b.errorf("heap profile: %v", err)
		}
	}

	// 1,000 active: echo loops until the deadline, sampling the process meanwhile.
	var bytes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, active)
	for _, c := range conns[:active] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := make([]byte, echoSize)
			resp := make([]byte, echoSize)
			_ = c.SetDeadline(time.Now().Add(activeFor + 30*time.Second))
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.Write(req); err != nil {
					errc <- err
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					errc <- err
					return
				}
				bytes.Add(2 * echoSize)
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	end := time.NewTimer(activeFor)
sample:
	for {
		select {
		case <-tick.C:
			r.rssActive = max(r.rssActive, mb())
			r.gActive = max(r.gActive, gr())
		case <-end.C:
			break sample
		case <-ctx.Done():
			break sample
		}
	}
	tick.Stop()
	close(stop)
	wg.Wait()
	r.activeMBps = float64(bytes.Load()) / 1e6 / time.Since(start).Seconds()
	select {
	case err := <-errc:
		return r, fmt.Errorf("active echo: %w", err)
	default:
	}
	return r, ctx.Err()
}
