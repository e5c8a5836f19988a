package emulator

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/ssmtunnel/ssmtunnel/tunnel/agent"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
)

// runAgent runs the session's emulated SSM Agent: tunnel/agent on its own data channel (role Agent) over the
// in-memory transport the relay pumps. It speaks the whole protocol (handshake, seq/ack/retransmit, smux
// server, a dial per stream); only the websocket to the gateway is replaced by a pipe.
func (s *session) runAgent(ctx context.Context, t datachannel.Transport) error {
	cfg := datachannel.Config{Role: datachannel.RoleAgent, Logger: s.log.With("side", "agent")}
	if s.e.cfg.Pacing == PacingAgent {
		// The real agent reads 1 KiB and sleeps 1 ms per frame: ≈1 MB/s (§9.6). The channel's default bucket
		// holds 100 ms of tokens, so the average stays ≈1 MB/s when timers fire late on a loaded machine,
		// while a burst never exceeds 100 KB.
		cfg.MaxPayloadSize, cfg.Rate = agentPayloadSize, agentRate
	} else {
		cfg.MaxPayloadSize = unpacedPayloadSize
	}
	if s.resendOrder == ResendRandom {
		cfg.ResendOrder, cfg.MaxInFlightBytes = datachannel.ResendRandom, randomResendWindow
	}
	ch, err := datachannel.New(cfg)
	if err != nil {
		return err
	}
	defer ch.Close()
	s.agentCh.Store(ch)
	defer func() { s.log.Debug("Agent data channel stats", "stats", fmt.Sprintf("%+v", ch.Stats())) }()
	ch.Attach(t)
	return agent.Serve(ctx, ch, agent.Config{
		AgentVersion:        s.agentVersion,
		Properties:          s.props,
		DialTimeout:         s.e.cfg.DialTimeout,
		AllowedDestinations: s.dests.prefixes(),
		Injector:            s.injector,
		Logger:              s.log.With("side", "agent"),
	})
}

// prefixes is the allow list in tunnel/agent's terms: AllowAny becomes every address.
func (d Destinations) prefixes() []netip.Prefix {
	if d.Any {
		return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	}
	return d.Prefixes
}
