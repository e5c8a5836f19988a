package datachannel

import "time"

// RTO estimator constants (§7.3), the same on both official peers.
const (
	// DefaultRoundTripTime is the initial SRTT.
	DefaultRoundTripTime = 100 * time.Millisecond
	// DefaultTransmissionTimeout is the initial RTO.
	DefaultTransmissionTimeout = 200 * time.Millisecond
	// ClockGranularity is the floor of the variance term.
	ClockGranularity = 10 * time.Millisecond
	// MaxTransmissionTimeout caps the RTO, including its RFC 6298 backoff, while acks make progress
	// (§7.3: both official peers cap it at 1 s).
	MaxTransmissionTimeout = time.Second
	// MaxRetransmitBackoff caps the retransmission timeout while acks make no progress: each consecutive
	// timeout without an ack that acknowledges an outstanding frame doubles the cap above
	// MaxTransmissionTimeout, up to this. A peer that stopped acknowledging then costs a resend of the window
	// about every 30 s instead of every second (the official peers' 1 s cap resent ~8,000 frames in 10 s).
	MaxRetransmitBackoff = 30 * time.Second
)

// rttEstimator is the RFC 6298-like estimator of §7.3, without RFC 6298's 1 s floor (the cap is 1 s instead):
//
//	RTTVAR ← ¾·RTTVAR + ¼·|SRTT − R|
//	SRTT   ← ⅞·SRTT + ⅛·R
//	RTO    ← min(SRTT + max(ClockGranularity, 4·RTTVAR), MaxTransmissionTimeout)
//
// Unlike the official peers it follows Karn's rule (the channel feeds it no sample from a retransmitted
// frame, whose ack is ambiguous) and, so that Karn's rule cannot freeze a too-small RTO, RFC 6298 §5.5
// backoff: each retransmission timeout doubles the effective RTO until a valid sample.
//
// The effective RTO is capped at MaxTransmissionTimeout << stalls (at most MaxRetransmitBackoff), where
// stalls counts the timeouts since the last ack progress: while acks make progress the cap is §7.3's 1 s,
// and a peer that acknowledges nothing is probed exponentially less often. The two counters are reset by
// different events on purpose: backoff only by a valid sample (Karn), stalls by any ack of an outstanding
// frame, retransmitted or not, so a peer that resumes acknowledging is back on the 1 s cap at once.
type rttEstimator struct {
	srtt, rttvar, rto time.Duration
	backoff           uint
	stalls            uint
}

func newRTTEstimator() rttEstimator {
	return rttEstimator{srtt: DefaultRoundTripTime, rto: DefaultTransmissionTimeout}
}

// sample feeds one round-trip measurement and clears the backoff.
func (e *rttEstimator) sample(r time.Duration) {
	if r < 0 {
		r = 0
	}
	diff := e.srtt - r
	if diff < 0 {
		diff = -diff
	}
	e.rttvar = (3*e.rttvar + diff) / 4
	e.srtt = (7*e.srtt + r) / 8
	e.rto = min(e.srtt+max(ClockGranularity, 4*e.rttvar), MaxTransmissionTimeout)
	e.backoff = 0
}

// timedOut records a retransmission timeout that no ack progress preceded since the last one: the
// effective RTO doubles, and so does its cap, up to MaxRetransmitBackoff.
func (e *rttEstimator) timedOut() {
	if e.effective() < MaxRetransmitBackoff {
		e.backoff++
	}
	if e.limit() < MaxRetransmitBackoff {
		e.stalls++
	}
}

// progress records an ack of an outstanding frame: the cap falls back to MaxTransmissionTimeout. It reports
// whether the effective RTO shrank, so that deadlines computed with the old one must be recomputed.
func (e *rttEstimator) progress() bool {
	if e.stalls == 0 {
		return false
	}
	before := e.effective()
	e.stalls = 0
	return e.effective() < before
}

// limit is the cap of the effective RTO: MaxTransmissionTimeout doubled per stall, up to MaxRetransmitBackoff.
func (e *rttEstimator) limit() time.Duration {
	return doubled(MaxTransmissionTimeout, e.stalls, MaxRetransmitBackoff)
}

// effective is the retransmission timeout: the RTO with backoff applied, within limit.
func (e *rttEstimator) effective() time.Duration {
	lim := e.limit()
	return doubled(e.rto, e.backoff, lim)
}

// doubled is d·2ⁿ, capped at lim (no overflow: it stops doubling at the cap).
func doubled(d time.Duration, n uint, lim time.Duration) time.Duration {
	for i := uint(0); i < n && d < lim; i++ {
		d *= 2
	}
	return min(d, lim)
}
