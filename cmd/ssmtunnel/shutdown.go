package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/portforward"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// interactiveDrain is how long the first Ctrl-C lets open connections finish when --drain-timeout is not
// given: someone at a terminal wants the prompt back, while SIGTERM (Kubernetes) keeps the full
// --drain-timeout. A variable for tests.
var interactiveDrain = 5 * time.Second

// errInterrupted: a second Ctrl-C (or any second signal) ended forward at once.
var errInterrupted = errors.New("interrupted")

// drainingMessage is what the forwarder logs when its drain starts; after a Ctrl-C that shortened the drain
// the CLI's own line replaces it (the forwarder logs its configured DrainTimeout, not the shorter one).
const drainingMessage = "Shutting down: draining connections"

// shutdown is what forward does on SIGINT and SIGTERM.
//
// The first SIGTERM (or the end of the caller's context) ends the forwarder's context: it stops accepting,
// drains open connections for --drain-timeout and terminates its sessions (portforward.Forwarder.Run).
// The first SIGINT does the same and prints how many connections drain for how long; unless
// --drain-timeout was given, that is interactiveDrain, after which the CLI terminates the sessions itself,
// which ends the connections they carry and so the forwarder's drain (the forwarder's drain time is fixed
// by its Config). Any second signal returns errInterrupted at once, without waiting for the drain.
type shutdown struct {
	stderr io.Writer
	// termDrain is the forwarder's DrainTimeout (SIGTERM); intDrain the first Ctrl-C's.
	termDrain, intDrain time.Duration

	fwd   atomic.Pointer[portforward.Forwarder]
	quiet atomic.Bool // drop the forwarder's drainingMessage
	timer *time.Timer // ends the first Ctrl-C's drain; used by run's goroutine only

	mu   sync.Mutex
	live map[*session.Session]struct{}
}

func newShutdown(drain time.Duration, drainGiven bool, stderr io.Writer) *shutdown {
	if drain == 0 {
		drain = portforward.DefaultDrainTimeout // as portforward.Config reads 0
	}
	intDrain := drain
	if !drainGiven {
		intDrain = min(interactiveDrain, drain)
	}
	return &shutdown{stderr: stderr, termDrain: drain, intDrain: intDrain, live: map[*session.Session]struct{}{}}
}

// run runs work until it returns. The first signal ends work's context (see shutdown); a second one
// returns errInterrupted without waiting for work.
func (sh *shutdown) run(ctx context.Context, sigs <-chan os.Signal, work func(context.Context) error) error {
	workCtx, stop := context.WithCancel(ctx)
	defer stop()
	defer func() {
		if sh.timer != nil {
			sh.timer.Stop()
		}
	}()
	done := make(chan error, 1)
	go func() { done <- work(workCtx) }()
	parentDone := ctx.Done()
	stopping := false
	for {
		select {
		case err := <-done:
			if stopping && errors.Is(err, context.Canceled) {
				return nil // stopped before the forwarder ran (loading the configuration, checking credentials)
			}
			return err
		case <-parentDone:
			parentDone, stopping = nil, true // workCtx ends with ctx: a SIGTERM
		case sig := <-sigs:
			if stopping {
				fmt.Fprintln(sh.stderr, "Exiting now without draining")
				return errInterrupted
			}
			stopping = true
			if sig == os.Interrupt {
				sh.interrupt()
			}
			stop()
		}
	}
}

// interrupt prints what the first Ctrl-C does and, when it drains for less than the forwarder would,
// ends the sessions once that time is up.
func (sh *shutdown) interrupt() {
	n := int64(0)
	if f := sh.fwd.Load(); f != nil {
		for _, p := range f.Ports() {
			n += p.OpenConnections
		}
	}
	sh.quiet.Store(true)
	switch n {
	case 0:
		fmt.Fprintln(sh.stderr, "Closing the sessions; Ctrl-C again to exit now")
		return // nothing to drain: the forwarder terminates its sessions at once
	case 1:
		fmt.Fprintf(sh.stderr, "Draining 1 connection for up to %s; Ctrl-C again to exit now\n", sh.intDrain)
	default:
		fmt.Fprintf(sh.stderr, "Draining %d connections for up to %s; Ctrl-C again to exit now\n", n, sh.intDrain)
	}
	if sh.intDrain < sh.termDrain {
		sh.timer = time.AfterFunc(sh.intDrain, sh.terminateLive)
	}
}

// track returns s recording the sessions it starts until they end, for terminateLive.
func (sh *shutdown) track(s portforward.Starter) portforward.Starter {
	return starterFunc(func(ctx context.Context, spec session.Spec, onState func(session.State)) (*session.Session, error) {
		sess, err := s.Start(ctx, spec, onState)
		if err != nil {
			return nil, err
		}
		sh.mu.Lock()
		sh.live[sess] = struct{}{}
		sh.mu.Unlock()
		go func() {
			<-sess.Done()
			sh.mu.Lock()
			delete(sh.live, sess)
			sh.mu.Unlock()
		}()
		return sess, nil
	})
}

// terminateLive ends every live session as the forwarder does after its drain (Flag TerminateSession, then
// the API), in parallel within portforward.TerminateTimeout; the connections they carry end with them.
func (sh *shutdown) terminateLive() {
	sh.mu.Lock()
	var live []*session.Session
	for s := range sh.live {
		live = append(live, s)
	}
	sh.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), portforward.TerminateTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range live {
		wg.Go(func() { _ = s.Terminate(ctx) })
	}
	wg.Wait()
}

func (sh *shutdown) setForwarder(f *portforward.Forwarder) { sh.fwd.Store(f) }

type starterFunc func(ctx context.Context, spec session.Spec, onState func(session.State)) (*session.Session, error)

func (f starterFunc) Start(ctx context.Context, spec session.Spec, onState func(session.State)) (*session.Session, error) {
	return f(ctx, spec, onState)
}

// logHandler wraps h to drop the forwarder's drainingMessage after a Ctrl-C printed its own line.
func (sh *shutdown) logHandler(h slog.Handler) slog.Handler { return quietHandler{h, &sh.quiet} }

type quietHandler struct {
	slog.Handler
	quiet *atomic.Bool
}

func (q quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == drainingMessage && q.quiet.Load() {
		return nil
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{q.Handler.WithAttrs(as), q.quiet}
}

func (q quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{q.Handler.WithGroup(name), q.quiet}
}
