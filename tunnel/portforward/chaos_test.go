package portforward_test

// The chaos test: many concurrent connections carry unique, checked bytes both ways while the emulator
// breaks sessions in every way it knows. Each connection must end either complete (every byte in order,
// then a clean end) or with a reset: never truncated behind a FIN, never with another connection's bytes,
// never with a byte twice. The listener keeps accepting, Run keeps running, memory stays bounded, and once
// the faults stop every connection completes again.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/internal/testutil"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// chaosDuration is how long faults are injected: 3 minutes in `make test`, SSMTUNNEL_CHAOS_DURATION
// (a Go duration) to run longer.
func chaosDuration(t *testing.T) time.Duration {
	if v := os.Getenv("SSMTUNNEL_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SSMTUNNEL_CHAOS_DURATION %q: %v", v, err)
		}
		return d
	}
	return 3 * time.Minute
}

// The chaos destination. A client sends a 16-byte header (connection id, size n), then n bytes of
// upPattern(id); the destination reads and checks them while sending n bytes of downPattern(id), except
// the last trailerSize, which it sends only once the whole upload checked out, and then closes cleanly. An
// upload that is short or wrong is counted and reset. So a client that reads all n bytes and a clean end
// knows both directions arrived whole.
const trailerSize = 8

func upSeed(id uint64) uint64   { return id*2 + 1_000_000 }
func downSeed(id uint64) uint64 { return id*2 + 1_000_001 }

type chaosDestination struct {
	badUploads   atomic.Int64 // uploads whose bytes differed from the connection's own (never allowed)
	shortUploads atomic.Int64 // uploads cut short (the tunnel reset the connection: allowed)
}

func (d *chaosDestination) serve(c net.Conn) {
	var hdr [16]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		resetTCP(c)
		return
	}
	id, n := binary.BigEndian.Uint64(hdr[:8]), int64(binary.BigEndian.Uint64(hdr[8:]))
	sent := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, newPattern(downSeed(id)), n-trailerSize)
		sent <- err
	}()
	ok, err := readExpected(c, newPattern(upSeed(id)), n)
	if !ok {
		d.badUploads.Add(1)
		resetTCP(c)
		<-sent
		return
	}
	if err != nil {
		d.shortUploads.Add(1)
		resetTCP(c)
		<-sent
		return
	}
	if err := <-sent; err != nil {
		resetTCP(c)
		return
	}
	// The trailer: the last bytes of the download, sent only after the upload checked out.
	trailer := make([]byte, trailerSize)
	p := newPattern(downSeed(id))
	io.CopyN(io.Discard, p, n-trailerSize)
	p.Read(trailer)
	c.Write(trailer)
	c.Close()
}

func resetTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// readExpected reads n bytes from r, comparing each with want. It reports ok=false as soon as a byte
// differs (another connection's bytes, a duplicate, a gap), and the read error if r ended before n.
func readExpected(r io.Reader, want io.Reader, n int64) (ok bool, err error) {
	buf := make([]byte, 32<<10)
	exp := make([]byte, 32<<10)
	var got int64
	for got < n {
		m, rerr := r.Read(buf[:min(int64(len(buf)), n-got)])
		if m > 0 {
			if _, err := io.ReadFull(want, exp[:m]); err != nil {
				return false, err
			}
			for i := range m {
				if buf[i] != exp[i] {
					return false, nil
				}
			}
			got += int64(m)
		}
		if rerr != nil {
			if rerr == io.EOF {
				return true, fmt.Errorf("EOF after %d of %d bytes: %w", got, n, io.ErrUnexpectedEOF)
			}
			return true, rerr
		}
	}
	return true, nil
}

type outcome int

const (
	outComplete  outcome = iota // every byte both ways, then a clean end
	outReset                    // a TCP reset before the end
	outTruncated                // a clean end before the last byte: never allowed
	outCorrupt                  // a byte that is not this connection's next one: never allowed
	outOther                    // any other error (dial failure, timeout): never allowed
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"complete", "reset", "truncated", "corrupt", "other"}

// chaosConn runs one connection through addr and classifies how it ended.
func chaosConn(addr string, id uint64, n int64) (outcome, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		if isReset(err) {
			return outReset, nil
		}
		return outOther, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	// Generous: a connection may wait out a stall bound and a session replacement.
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	up := make(chan error, 1)
	go func() {
		var hdr [16]byte
		binary.BigEndian.PutUint64(hdr[:8], id)
		binary.BigEndian.PutUint64(hdr[8:], uint64(n))
		if _, err := c.Write(hdr[:]); err != nil {
			up <- err
			return
		}
		_, err := io.CopyN(c, newPattern(upSeed(id)), n)
		up <- err
	}()
	ok, err := readExpected(c, newPattern(downSeed(id)), n)
	upErr := <-up
	switch {
	case !ok:
		return outCorrupt, fmt.Errorf("connection %d: a byte of the download was not its own", id)
	case err == nil:
		// Every byte arrived: the end must be clean.
		var b [1]byte
		if m, err := c.Read(b[:]); m != 0 || err != io.EOF {
			if isReset(err) {
				return outReset, nil
			}
			return outOther, fmt.Errorf("connection %d: after the last byte: %d more, %v", id, m, err)
		}
		return outComplete, nil
	case isReset(err):
		return outReset, nil
	case errors.Is(err, io.ErrUnexpectedEOF) && (isReset(upErr) || errors.Is(upErr, syscall.EPIPE)):
		// The kernel reports a reset to one system call only: when the writing goroutine took the
		// ECONNRESET (its later writes see EPIPE), the reader sees a plain end of stream. The tunnel only
		// closes a connection fully while the client still writes by resetting it.
		return outReset, nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return outTruncated, fmt.Errorf("connection %d: %v", id, err)
	}
	return outOther, fmt.Errorf("connection %d: %v", id, err)
}

// chaosFault is one way the emulator breaks a session.
type chaosFault struct {
	name   string
	inject func(emu *emulator.Emulator, sessionID string) error
}

// chaosFaults are the faults; those undone later on a timer count in undoing until they are.
func chaosFaults(stallFor time.Duration, undoing *sync.WaitGroup) []chaosFault {
	later := func(d time.Duration, undo func()) {
		undoing.Add(1)
		time.AfterFunc(d, func() {
			defer undoing.Done()
			undo()
		})
	}
	return []chaosFault{
		{"websocket drop", func(emu *emulator.Emulator, id string) error { return emu.DropClient(id) }},
		{"hourly bye", func(emu *emulator.Emulator, id string) error { return emu.ByeClient(id) }},
		{"administrator terminate", func(emu *emulator.Emulator, id string) error { return emu.TerminateSession(id) }},
		{"refused resume", func(emu *emulator.Emulator, id string) error {
			f := emu.Faults()
			f.RefuseResume = emulator.ResumeEmptyToken
			if err := emu.SetFaults(f); err != nil {
				return err
			}
			err := emu.DropClient(id)
			// Restore once the client's ResumeSession was refused: the next fault starts from allowed resumes.
			later(2*time.Second, func() {
				f := emu.Faults()
				f.RefuseResume = emulator.ResumeAllowed
				emu.SetFaults(f)
			})
			return err
		}},
		{"stall", func(emu *emulator.Emulator, id string) error {
			if err := emu.StopAcking(id, true); err != nil {
				return err
			}
			later(stallFor, func() { emu.StopAcking(id, false) })
			return nil
		}},
		{"pause", func(emu *emulator.Emulator, id string) error { return emu.PausePublication(id, stallFor) }},
		{"smux corruption", func(emu *emulator.Emulator, id string) error { return emu.CorruptMux(id) }},
	}
}

func TestChaos(t *testing.T) {
	duration := chaosDuration(t)
	dest := &chaosDestination{}
	port := testutil.Port(testutil.Serve(t, dest.serve))
	const stallTimeout = 2 * time.Second
	h := startHarness(t, harnessOpts{
		// The agent resends its whole unacknowledged window at once, in random order, after every
		// reconnect: a correct peer unlike our own, which resends oldest first.
		// Every session also reaches the service's maximum duration after 6 s.
		emu: emulator.Config{Pacing: emulator.PacingNone, Faults: emulator.Faults{ResendOrder: emulator.ResendRandom, MaxSessionDuration: 6 * time.Second}},
		pf: portforward.Config{Ports: []portforward.PortPair{{Remote: port}}, Sessions: 2,
			StallTimeout: stallTimeout, PartitionTimeout: 10 * time.Second, ReconnectJitter: 200 * time.Millisecond},
		channel: datachannel.Config{MaxPayloadSize: 4 << 10},
	})
	addr := h.addrs[0].String()

	var (
		counts   [numOutcomes]atomic.Int64
		bytes    atomic.Int64
		nextID   atomic.Uint64
		errMu    sync.Mutex
		failures []string
	)
	var logMu sync.Mutex
	var faultLog []string
	start0 := time.Now()
	lastFaults := func() string {
		logMu.Lock()
		defer logMu.Unlock()
		return strings.Join(faultLog[max(0, len(faultLog)-3):], "; ")
	}
	record := func(o outcome, n int64, err error) {
		if o == outTruncated {
			err = fmt.Errorf("%w at +%s, after faults: %s", err, time.Since(start0).Round(time.Millisecond), lastFaults())
		}
		counts[o].Add(1)
		if o == outComplete {
			bytes.Add(2 * n)
		}
		if err != nil && o != outReset {
			errMu.Lock()
			if len(failures) < 20 {
				failures = append(failures, fmt.Sprintf("%s: %v", outcomeNames[o], err))
			}
			errMu.Unlock()
		}
	}
	runClients := func(until time.Time, clients int, once bool) {
		var wg sync.WaitGroup
		for w := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
				for {
					id := nextID.Add(1)
					n := trailerSize + rng.Int64N(256<<10)
					o, err := chaosConn(addr, id, n)
					record(o, n, err)
					if once || time.Now().After(until) {
						return
					}
				}
			}()
		}
		wg.Wait()
	}

	// Faults: one every 0.5-2 s on a random live session of the port.
	var undoing sync.WaitGroup
	faults := chaosFaults(stallTimeout+time.Second, &undoing)
	faultCounts := make([]int, len(faults))
	var peakHeap uint64
	stopFaults := make(chan struct{})
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stopFaults:
				return
			case <-time.After(500*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))):
			}
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peakHeap = max(peakHeap, m.HeapInuse)
			var live []string
			for _, s := range h.fwd.Sessions() {
				if s.SessionID != "" {
					live = append(live, s.SessionID)
				}
			}
			if len(live) == 0 {
				continue
			}
			i := rng.IntN(len(faults))
			id := live[rng.IntN(len(live))]
			if err := faults[i].inject(h.emu, id); err == nil {
				faultCounts[i]++
				logMu.Lock()
				faultLog = append(faultLog, fmt.Sprintf("+%s %s on %s", time.Since(start0).Round(time.Millisecond), faults[i].name, id[len(id)-6:]))
				logMu.Unlock()
			}
		}
	}()
	start := time.Now()
	runClients(start.Add(duration), 50, false)
	close(stopFaults)
	<-faultsDone
	undoing.Wait()
	assertRunning(t, h)

	// Healing: with the faults stopped and undone, every connection completes. The maximum duration is
	// a fault too, fixed when a session starts: the pool must first replace every session that started
	// under it, or a session could reach it during the healing round and reset its connections.
	f := h.emu.Faults()
	f.RefuseResume = emulator.ResumeAllowed
	f.MaxSessionDuration = 0
	if err := h.emu.SetFaults(f); err != nil {
		t.Fatal(err)
	}
	for _, s := range h.emu.Sessions() {
		if !s.Ended {
			h.emu.StopAcking(s.ID, false)
			h.emu.PausePublication(s.ID, 0)
		}
	}
	testutil.WaitFor(t, "every session of the pool to be replaced and ready after the faults", time.Minute, func() bool {
		for _, s := range h.fwd.Sessions() {
			if s.SessionID == "" || s.State != session.StateReady {
				return false
			}
			if info, ok := h.emu.Session(s.SessionID); !ok || info.MaxDuration != 0 {
				return false
			}
		}
		return h.fwd.Ready() == nil
	})
	chaosCounts := make([]int64, numOutcomes)
	for i := range counts {
		chaosCounts[i] = counts[i].Swap(0)
	}
	runClients(time.Now(), 50, true)
	healed := counts[outComplete].Load()

	var lines []string
	for i, f := range faults {
		lines = append(lines, fmt.Sprintf("%s %d", f.name, faultCounts[i]))
	}
	sort.Strings(lines)
	conns := int64(0)
	for _, c := range chaosCounts {
		conns += c
	}
	report := fmt.Sprintf("chaos for %s: %d connections (%d complete, %d reset, %d truncated, %d corrupt, %d other), %d MiB carried; "+
		"faults: %s; after the faults %d/50 complete; destination saw %d bad and %d short uploads; peak heap %d MiB; session ends %v; resets %v",
		duration, conns, chaosCounts[outComplete], chaosCounts[outReset], chaosCounts[outTruncated], chaosCounts[outCorrupt], chaosCounts[outOther],
		bytes.Load()>>20, strings.Join(lines, ", "), healed, dest.badUploads.Load(), dest.shortUploads.Load(), peakHeap>>20,
		h.fwd.Ports()[0].SessionEnds, h.fwd.Ports()[0].Resets)
	t.Log(report)
	fmt.Println(report)
	for _, f := range failures {
		t.Error(f)
	}
	if chaosCounts[outTruncated] != 0 || chaosCounts[outCorrupt] != 0 || chaosCounts[outOther] != 0 || dest.badUploads.Load() != 0 {
		t.Errorf("truncated %d, corrupt %d, other %d, bad uploads %d: want 0 each",
			chaosCounts[outTruncated], chaosCounts[outCorrupt], chaosCounts[outOther], dest.badUploads.Load())
	}
	if chaosCounts[outComplete] < 50 {
		t.Errorf("only %d connections completed under chaos: the tunnel did not recover between faults", chaosCounts[outComplete])
	}
	if healed != 50 {
		t.Errorf("%d of 50 connections completed after the faults stopped, want all", healed)
	}
	for i, f := range faults {
		if faultCounts[i] == 0 {
			t.Errorf("fault %q was never injected", f.name)
		}
	}
	if peakHeap > 1<<30 {
		t.Errorf("peak heap %d MiB: memory is not bounded", peakHeap>>20)
	}
}
