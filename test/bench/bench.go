package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// bench holds the shared pieces of a run: the destination servers, one emulator per pacing behind its
// delaying proxy, the tunnel binary, and the report being filled.
type bench struct {
	opts options
	root string
	tmp  string

	srv      servers
	srvChild *child
	emus     map[string]*emuHandle

	tunnelBin string
	tunnelErr error

	rep *report

	mu      sync.Mutex
	closers []func()
}

// emuHandle is an emulator child and the delaying proxy in front of its whole endpoint: API calls and the
// data-channel websocket both cross the proxy, because the emulator's StreamUrl names the Host the client
// called.
type emuHandle struct {
	child *child
	info  emuInfo
	proxy *delayProxy
}

const (
	pacingNone  = "none"
	pacingAgent = "agent"
)

var errNoTunnel = errors.New("tunnel client unavailable")

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (b *bench) errorf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	b.logf("ERROR %s", msg)
	b.rep.Errors = append(b.rep.Errors, msg)
}

func (b *bench) onClose(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closers = append(b.closers, f)
}

func (b *bench) closeAll() {
	b.mu.Lock()
	cl := b.closers
	b.closers = nil
	b.mu.Unlock()
	for i := len(cl) - 1; i >= 0; i-- {
		cl[i]()
	}
	for _, e := range b.emus {
		e.proxy.Close()
		e.child.stop()
	}
	if b.srvChild != nil {
		b.srvChild.stop()
	}
}

// emulator returns the emulator of a pacing, starting it on first use.
func (b *bench) emulator(ctx context.Context, pacing string) (*emuHandle, error) {
	if e, ok := b.emus[pacing]; ok {
		return e, nil
	}
	e := &emuHandle{}
	var err error
	e.child, err = startChild(ctx, &e.info, "emulator", "-pacing", pacing)
	if err != nil {
		return nil, fmt.Errorf("emulator (pacing %s): %w", pacing, err)
	}
	e.proxy, err = newDelayProxy(e.info.Addr, 0)
	if err != nil {
		e.child.stop()
		return nil, err
	}
	b.emus[pacing] = e
	return e, nil
}

// variant is one way of reaching a destination: direct through the delaying proxy, or through a tunnel.
type variant struct {
	Name   string
	Addr   string      // where the load generator connects
	Tunnel *tunnelProc // nil for direct
	Err    error       // why the variant is unavailable
}

// directVariant is a delaying proxy in front of dest: the baseline.
func (b *bench) directVariant(dest string, rtt time.Duration) (*variant, func(), error) {
	p, err := newDelayProxy(dest, rtt)
	if err != nil {
		return nil, nil, err
	}
	return &variant{Name: "direct", Addr: p.addr()}, func() { p.Close() }, nil
}

// tunnelVariant starts an ssmtunnel forward process to dest (a port on loopback) through the emulator of a
// pacing, with the emulator's proxy set to rtt. A failure is recorded in the variant, not returned, so the
// other variants of a scenario still run.
//
// The client's own pacing follows the emulator's: against pacing agent it runs with its defaults, the real
// service's 1 KiB frames at ~1 MB/s; against pacing none it is unpaced too (--rate 0) with the 32 KiB frames
// the unpaced emulator sends, so the figures are the implementation's own limits. extra flags override.
func (b *bench) tunnelVariant(ctx context.Context, name, pacing, instance, dest string, sessions int, rtt time.Duration, extra ...string) *variant {
	v := &variant{Name: name}
	if b.tunnelErr != nil {
		v.Err = errNoTunnel
		return v
	}
	e, err := b.emulator(ctx, pacing)
	if err != nil {
		v.Err = err
		b.errorf("%s: %v", name, err)
		return v
	}
	e.proxy.setRTT(rtt)
	_, port, _ := strings.Cut(dest, ":")
	var remote int
	fmt.Sscanf(port, "%d", &remote)
	var args []string
	if pacing == pacingNone {
		args = append(args, "--rate", "0", "--max-payload-size", "32768")
	}
	t, err := startTunnel(ctx, b.tunnelBin, tunnelSpec{
		Endpoint: "http://" + e.proxy.addr(), Instance: instance, RemotePort: remote, Sessions: sessions,
		Args: append(args, extra...),
	})
	if err != nil {
		v.Err = err
		b.errorf("%s (pacing %s, rtt %s): %v", name, pacing, rtt, err)
		return v
	}
	v.Addr = t.Local
	v.Tunnel = t
	return v
}

func (v *variant) close() {
	if v.Tunnel != nil {
		v.Tunnel.stop()
	}
}

func (v *variant) ok() bool { return v.Err == nil }

// profilePath derives the path of a scenario's profile from the -cpuprofile/-memprofile flag: the primary
// scenario writes the path itself, the others insert -<suffix> before the extension.
func profilePath(base, suffix string) string {
	if base == "" {
		return ""
	}
	if suffix == "" {
		return base
	}
	if i := strings.LastIndexByte(base, '.'); i > strings.LastIndexByte(base, '/') {
		return base[:i] + "-" + suffix + base[i:]
	}
	return base + "-" + suffix
}

func rttName(rtt time.Duration) string { return fmt.Sprintf("rtt%dms", rtt.Milliseconds()) }
