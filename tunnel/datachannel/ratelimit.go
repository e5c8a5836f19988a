package datachannel

import "time"

// MaxCatchUp bounds the credit a backlogged sender gets for time it could not send (see tokenBucket).
const MaxCatchUp = time.Second

// tokenBucket paces new data at rate bytes/s with bursts of up to burst bytes. It only computes; the
// caller waits on a timer, never a sleep.
//
// Time is credited in two ways. While the sender is idle, tokens grow to burst and no further, so a
// sender that was quiet starts with at most one burst. While it is backlogged (it still holds data of the
// same Send call, or its last take had to wait), the time until its next take is credited in full, up to
// MaxCatchUp of rate: a timer that fires late, or a host that stops the process, does not lower the
// average. A loaded host can stop the whole process for hundreds of milliseconds several times a second,
// and with the credit capped at a 100 ms burst every stop would be lost: a paced sender would fall to about
// half its rate.
type tokenBucket struct {
	rate, burst int64
	tokens      float64
	last        time.Time
	waited      bool // the last take returned a wait
}

func newTokenBucket(rate, burst int64, now time.Time) *tokenBucket {
	if rate <= 0 {
		return nil
	}
	return &tokenBucket{rate: rate, burst: burst, tokens: float64(burst), last: now}
}

// take removes n tokens and returns 0, or returns how long to wait until n tokens are available (taking
// nothing). A request larger than the bucket is treated as a request for a full bucket, so it can proceed.
// backlogged says the caller has held this data since its previous take (the rest of one Send call).
func (b *tokenBucket) take(now time.Time, n int, backlogged bool) time.Duration {
	if b == nil {
		return 0
	}
	if el := now.Sub(b.last); el > 0 {
		earned, burst := el.Seconds()*float64(b.rate), float64(b.burst)
		// Tokens grow up to limit; credit already above it is kept.
		grow := func(limit float64) { b.tokens = max(b.tokens, min(limit, b.tokens+earned)) }
		switch {
		case backlogged || b.waited:
			grow(max(burst, MaxCatchUp.Seconds()*float64(b.rate)))
		case earned >= burst:
			b.tokens = burst // idle long enough for a full burst: unspent catch-up credit lapses
		default:
			grow(burst) // between Send calls
		}
		b.last = now
	}
	need := float64(min(int64(n), b.burst))
	if b.tokens >= need {
		b.tokens -= float64(n) // may go negative for oversized frames: paid back before the next one
		b.waited = false
		return 0
	}
	b.waited = true
	wait := time.Duration((need - b.tokens) / float64(b.rate) * float64(time.Second))
	if wait <= 0 {
		wait = time.Nanosecond
	}
	return wait
}
