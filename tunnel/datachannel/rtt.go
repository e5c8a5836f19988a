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
	// MaxTransmissionTimeout caps the RTO, including its backoff.
	MaxTransmissionTimeout = time.Second
)

// rttEstimator is the RFC 6298-like estimator of §7.3, without RFC 6298's 1 s floor (the cap is 1 s instead):
//
//	RTTVAR ← ¾·RTTVAR + ¼·|SRTT − R|
//	SRTT   ← ⅞·SRTT + ⅛·R
//	RTO    ← min(SRTT + max(ClockGranularity, 4·RTTVAR), MaxTransmissionTimeout)
//
// Unlike the official peers it follows Karn's rule (the channel feeds it no sample from a retransmitted
// frame, whose ack is ambiguous) and, so that Karn's rule cannot freeze a too-small RTO, RFC 6298 §5.5
// backoff: each retransmission timeout doubles the effective RTO (capped at 1 s) until a valid sample.
type rttEstimator struct {
	srtt, rttvar, rto time.Duration
	backoff           uint
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

// timedOut records a retransmission timeout: the effective RTO doubles, up to the cap.
func (e *rttEstimator) timedOut() {
	if e.effective() < MaxTransmissionTimeout {
		e.backoff++
	}
}

// effective is the RTO with backoff applied.
func (e *rttEstimator) effective() time.Duration {
	d := e.rto
	for i := uint(0); i < e.backoff && d < MaxTransmissionTimeout; i++ {
		d *= 2
	}
	return min(d, MaxTransmissionTimeout)
}
