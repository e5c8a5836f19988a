package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const echoSize = 1024

// openEcho dials n connections and switches each into echo mode, with one round trip to be sure the whole
// path (for a tunnel: stream, agent dial, destination) is up.
func openEcho(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	conns, err := dialAll(ctx, addr, n)
	if err != nil {
		return nil, err
	}
	errs := make([]error, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			defer c.SetDeadline(time.Time{})
			if err := writeOp(c, opEcho, 0); err != nil {
				errs[i] = err
				return
			}
			var b [1]byte
			if _, err := c.Write([]byte{'x'}); err != nil {
				errs[i] = err
				return
			}
			if _, err := io.ReadFull(c, b[:]); err != nil {
				errs[i] = fmt.Errorf("echo handshake: %w", err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

// echoRound has every connection do iters request/response exchanges of echoSize bytes, one outstanding per
// connection, all connections at once, and returns every exchange's latency.
func echoRound(conns []net.Conn, iters int, timeout time.Duration) ([]time.Duration, error) {
	lat := make([][]time.Duration, len(conns))
	errs := make([]error, len(conns))
	deadline := time.Now().Add(timeout)
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetDeadline(deadline)
			req := make([]byte, echoSize)
			copy(req, payloadBlock)
			resp := make([]byte, echoSize)
			lat[i] = make([]time.Duration, 0, iters)
			for range iters {
				t0 := time.Now()
				if _, err := c.Write(req); err != nil {
					errs[i] = err
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					errs[i] = err
					return
				}
				lat[i] = append(lat[i], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return all, errors.Join(errs...)
}

// latency is scenario 3: 1 KiB echo at concurrency 1, 10 and 100, p50 and p99 against direct, pacing none,
// at 0 ms RTT (the targets) and 40 ms (full run).
func (b *bench) latency(ctx context.Context) error {
	rtts := []time.Duration{0, 40 * time.Millisecond}
	if b.opts.quick {
		rtts = rtts[:1]
	}
	for _, rtt := range rtts {
		if err := b.latencySetting(ctx, rtt); err != nil {
			return err
		}
	}
	b.rep.Notes = append(b.rep.Notes, "latency: 1 KiB written, 1 KiB echoed back, one request outstanding per connection; p50/p99 over all requests of a repetition, then median over repetitions; added = tunnel minus direct of the same repetition. Pacing none.")
	return nil
}

func (b *bench) latencySetting(ctx context.Context, rtt time.Duration) error {
	direct, closeDirect, err := b.directVariant(b.srv.TCP, rtt)
	if err != nil {
		return err
	}
	defer closeDirect()
	tun := b.tunnelVariant(ctx, "tunnel", pacingNone, instanceMux, b.srv.TCP, 1, rtt)
	defer tun.close()
	if path := profilePath(b.opts.cpuProfile, "latency"); path != "" && rtt == 0 && tun.ok() {
		if err := tun.Tunnel.startCPUProfile(); err != nil {
			b.errorf("cpu profile: %v", err)
		} else {
			defer func() {
				if err := tun.Tunnel.stopCPUProfile(path); err != nil {
					b.errorf("cpu profile: %v", err)
				}
			}()
		}
	}
	for _, conc := range []int{1, 10, 100} {
		prefix := fmt.Sprintf("latency/%s/c%d", rttName(rtt), conc)
		b.logf("%s", prefix)
		// About 2,000 exchanges per repetition at 0 ms, a few hundred milliseconds' worth at 40 ms.
		iters := max(2000/conc, 20)
		if rtt > 0 {
			iters = max(25/conc, 4)
		}
		if b.opts.quick {
			iters = max(iters/2, 4)
		}
		vs := []*variant{direct, tun}
		conns := make([][]net.Conn, len(vs))
		for i, v := range vs {
			if !v.ok() {
				continue
			}
			conns[i], err = openEcho(ctx, v.Addr, conc)
			if err != nil {
				b.errorf("%s/%s: %v", prefix, v.Name, err)
				continue
			}
			defer closeAll(conns[i])
		}
		p50 := make([][]float64, len(vs))
		p99 := make([][]float64, len(vs))
		for rep := -1; rep < b.opts.reps; rep++ {
			for i, v := range vs {
				if conns[i] == nil {
					continue
				}
				lat, err := echoRound(conns[i], iters, 60*time.Second)
				if err != nil {
					b.errorf("%s/%s: %v", prefix, v.Name, err)
					closeAll(conns[i])
					conns[i] = nil
					p50[i], p99[i] = nil, nil
					continue
				}
				if rep >= 0 {
					a, z := percentiles(lat)
					p50[i] = append(p50[i], a)
					p99[i] = append(p99[i], z)
				}
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		params := map[string]any{"concurrency": conc, "requests_per_rep": iters * conc, "rtt_ms": rtt.Milliseconds(), "pacing": pacingNone}
		for i, v := range vs {
			if v.Err == errNoTunnel {
				continue
			}
			b.rep.add("latency", prefix+"/"+v.Name+"/p50", "µs", p50[i], params)
			b.rep.add("latency", prefix+"/"+v.Name+"/p99", "µs", p99[i], params)
		}
		if len(p50[1]) > 0 && len(p50[0]) > 0 {
			b.rep.addDerived("latency", prefix+"/added-p50", "µs", pairedDiffs(p50[1], p50[0]))
			b.rep.addDerived("latency", prefix+"/added-p99", "µs", pairedDiffs(p99[1], p99[0]))
		}
	}
	return nil
}
