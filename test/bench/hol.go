package main

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// parallelDownloads runs one download of perStream bytes on each connection at once and returns the
// aggregate rate in MB/s. A download that has not finished by the deadline counts the bytes it got, so a
// stalled tunnel yields a low rate rather than a hang.
func parallelDownloads(conns []net.Conn, perStream uint64, timeout time.Duration) (mbps float64, complete bool, err error) {
	var got atomic.Int64
	deadline := time.Now().Add(timeout)
	errs := make([]error, len(conns))
	start := time.Now()
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetDeadline(deadline)
			if err := writeOp(c, opDownload, perStream); err != nil {
				errs[i] = err
				return
			}
			bp := readBufs.Get().(*[]byte)
			defer readBufs.Put(bp)
			left := int64(perStream)
			for left > 0 {
				n, err := c.Read((*bp)[:min(int64(len(*bp)), left)])
				got.Add(int64(n))
				left -= int64(n)
				if err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	mbps = float64(got.Load()) / 1e6 / elapsed.Seconds()
	err = errors.Join(errs...)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return mbps, false, nil
	}
	return mbps, err == nil, err
}

// headOfLine is scenario 6: 50 downloads through one session, with and without one more stream whose reader
// has stopped. With bounded per-stream buffering and backpressure on the stalled TCP connection only, the 50
// keep their rate; a session-wide buffer that the stalled stream fills stops them all (§9.4).
func (b *bench) headOfLine(ctx context.Context) error {
	const others = 50
	perStream := uint64(2 << 20)
	timeout := 30 * time.Second
	if b.opts.quick {
		perStream = 1 << 20
		timeout = 15 * time.Second
	}
	var clean, stalled, ratio []float64
	incomplete := 0
	for rep := -1; rep < b.opts.reps; rep++ {
		b.logf("hol: repetition %d", rep+1)
		// A fresh tunnel per repetition: a session wedged by the stalled stream must not spoil the next one.
		tun := b.tunnelVariant(ctx, "tunnel", pacingNone, instanceMux, b.srv.TCP, 1, 0)
		if !tun.ok() {
			if tun.Err == errNoTunnel {
				return nil
			}
			return tun.Err
		}
		c, s, done, err := b.holOnce(ctx, tun.Addr, others, perStream, timeout)
		tun.close()
		if err != nil {
			return err
		}
		if rep < 0 {
			continue
		}
		clean = append(clean, c)
		stalled = append(stalled, s)
		if c > 0 {
			ratio = append(ratio, s/c)
		}
		if !done {
			incomplete++
		}
	}
	p := map[string]any{"streams": others, "bytes_per_stream": perStream, "pacing": pacingNone, "rtt_ms": 0, "stalled_runs_incomplete_at_deadline": incomplete, "deadline_s": timeout.Seconds()}
	b.rep.add("hol", "hol/50-streams/clean/MBps", "MB/s", clean, p)
	b.rep.add("hol", "hol/50-streams/with-stalled/MBps", "MB/s", stalled, p)
	b.rep.addDerived("hol", "hol/ratio-stalled-over-clean", "fraction", ratio)
	b.rep.Notes = append(b.rep.Notes, "hol: 50 parallel 2 MiB downloads through one session (pacing none, 0 ms), first alone, then while one more stream has asked for an endless download and never reads; a fresh tunnel process per repetition; downloads still running at the deadline count the bytes they got.")
	return nil
}

func (b *bench) holOnce(ctx context.Context, addr string, others int, perStream uint64, timeout time.Duration) (clean, stalled float64, complete bool, err error) {
	conns, err := dialAll(ctx, addr, others)
	if err != nil {
		return 0, 0, false, err
	}
	clean, _, err = parallelDownloads(conns, perStream, timeout)
	closeAll(conns)
	if err != nil {
		return 0, 0, false, err
	}
	// The stalled stream: an endless download nobody reads. Give it time to fill whatever it can fill.
	st, err := dialAll(ctx, addr, 1)
	if err != nil {
		return 0, 0, false, err
	}
	defer closeAll(st)
	if err := writeOp(st[0], opDownload, 1<<50); err != nil {
		return 0, 0, false, err
	}
	fill := time.NewTimer(500 * time.Millisecond)
	select {
	case <-fill.C:
	case <-ctx.Done():
		return 0, 0, false, ctx.Err()
	}
	conns, err = dialAll(ctx, addr, others)
	if err != nil {
		return 0, 0, false, err
	}
	defer closeAll(conns)
	stalled, complete, err = parallelDownloads(conns, perStream, timeout)
	return clean, stalled, complete, err
}
