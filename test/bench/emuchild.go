package main

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"

	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
)

// The emulated instances every emulator child carries: one with a current agent (multiplexed mode) and one
// with the newest agent without multiplexing, which forces the client into basic mode (§9.2) — how the
// seed's one-connection-at-a-time comparison is reproduced.
const (
	instanceMux   = "i-0be0c0ffee0000001"
	instanceBasic = "i-0be0c0ffee0000002"
)

// emuInfo is what an emulator child announces.
type emuInfo struct {
	Endpoint string `json:"endpoint"`
	Addr     string `json:"addr"`
}

// emulatorChild is the body of the "emulator" child process: a tunnel/emulator with the given pacing, in its
// own process so that the agent side's file descriptors and CPU are not the load generator's. The client
// reaches it through the harness's delaying proxy; StreamUrl follows the Host the client used, so the
// websocket takes the same delayed path as the API calls.
func emulatorChild(stdout io.Writer, stdin io.Reader, pacing string) error {
	// SSMTUNNEL_BENCH_EMULATOR_DEBUG=1 logs the emulator at debug level on stderr: among others, each agent
	// data channel's statistics (retransmits, frames dropped for a full buffer) when its session ends.
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("SSMTUNNEL_BENCH_EMULATOR_DEBUG") == "1" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	// SSMTUNNEL_BENCH_EMULATOR_CPUPROFILE=path profiles the emulator child (relay and emulated agent) for its
	// whole life, into path-<pacing>: the other end of every tunnel measurement.
	if path := os.Getenv("SSMTUNNEL_BENCH_EMULATOR_CPUPROFILE"); path != "" {
		f, err := os.Create(path + "-" + pacing)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	emu, err := emulator.Start(emulator.Config{
		Logger: logger,
		Pacing: emulator.Pacing(pacing),
		Instances: []emulator.Instance{
			{ID: instanceMux},
			{ID: instanceBasic, AgentVersion: emulator.BasicAgentVersion},
		},
	})
	if err != nil {
		return err
	}
	defer emu.Close()
	if err := printJSONLine(stdout, emuInfo{Endpoint: emu.Endpoint(), Addr: emu.Addr()}); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, bufio.NewReader(stdin))
	return nil
}
