package portforward

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/session"
)

// endReason says why a session left its slot. Every reason but endShutdown leads to a new session.
type endReason int

const (
	endNone endReason = iota
	// endShutdown: the forwarder closed it (drain, Run's end).
	endShutdown
	// endIdleTimeout, endMaxDuration, endTerminated: the service closed the channel (channel_closed, §10.2)
	// for its idle timeout, its maximum session duration, or for another reason (an administrator's
	// TerminateSession, the agent's plugin ending).
	endIdleTimeout
	endMaxDuration
	endTerminated
	// endNotResumable: the transport failed and ResumeSession refused (§10.3).
	endNotResumable
	// endMuxFailed: smux stopped (protocol error, keepalive timeout): the session carries nothing.
	endMuxFailed
	// endStalled: sent frames got no acknowledgement, or publication stayed paused, for StallTimeout.
	endStalled
	// endPartition: the session kept resuming for PartitionTimeout.
	endPartition
	// endBasicDone: a basic-mode session carried its one connection.
	endBasicDone
	// endFailed: any other end of the channel.
	endFailed
	numEndReasons
)

var endReasonNames = [numEndReasons]string{
	endNone: "none", endShutdown: "shutdown", endIdleTimeout: "idle_timeout", endMaxDuration: "max_duration",
	endTerminated: "terminated", endNotResumable: "not_resumable", endMuxFailed: "mux_failed",
	endStalled: "stalled", endPartition: "partition", endBasicDone: "basic_done", endFailed: "failed",
}

func (r endReason) String() string { return endReasonNames[r] }

// byService reports whether the service ended the session on its own terms (not a fault of the data path):
// under ReconnectLazy such a session is replaced only when a connection needs one.
func (r endReason) byService() bool {
	switch r {
	case endIdleTimeout, endMaxDuration, endTerminated, endNotResumable:
		return true
	}
	return false
}

// classifyEnd reads why a session ended from its error.
func classifyEnd(err error) endReason {
	var cc *datachannel.ChannelClosedError
	switch {
	case errors.Is(err, session.ErrClosed):
		return endShutdown
	case errors.As(err, &cc):
		out := strings.ToLower(cc.Output)
		switch {
		case strings.Contains(out, "inactivity") || strings.Contains(out, "idle"):
			return endIdleTimeout
		case strings.Contains(out, "maximum session duration"):
			return endMaxDuration
		}
		return endTerminated
	case errors.Is(err, session.ErrNotResumable):
		return endNotResumable
	}
	return endFailed
}

// endCounts counts session ends per reason.
type endCounts [numEndReasons]atomic.Uint64

func (c *endCounts) add(r endReason) { c[r].Add(1) }

// backoff is the capped, jittered exponential delay between attempts to start a session: uniform in
// [d/2, d) with d = min(maxStartBackoff, 500 ms · 2ⁿ). The cap keeps a tunnel that waits for its target
// (offline instance, missing permission) retrying at least once a minute.
type backoff struct{ n int }

const maxStartBackoff = time.Minute

func (b *backoff) next() time.Duration {
	d := min(maxStartBackoff, 500*time.Millisecond<<min(b.n, 10))
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }
