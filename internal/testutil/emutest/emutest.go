// Package emutest starts the Session Manager emulator for tests outside the emulator package (the
// emulator's own tests cannot import it: it imports the emulator).
package emutest

import (
	"testing"

	"github.com/ssmtunnel/ssmtunnel/tunnel/emulator"
)

// Instance is the managed instance an emulator started by Start has when cfg names none.
const Instance = "i-0123456789abcdef0"

// Start starts an emulator with cfg (with the one instance Instance when cfg has no instances) and closes it
// when the test ends.
func Start(t testing.TB, cfg emulator.Config) *emulator.Emulator {
	t.Helper()
	if len(cfg.Instances) == 0 {
		cfg.Instances = []emulator.Instance{{ID: Instance}}
	}
	emu, err := emulator.Start(cfg)
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	t.Cleanup(func() { emu.Close() })
	return emu
}
