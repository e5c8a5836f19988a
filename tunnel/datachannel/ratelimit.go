package datachannel

import "time"

// tokenBucket paces new data at rate bytes/s with bursts of up to burst bytes. It only computes; the
// caller waits on a timer, never a sleep.
type tokenBucket struct {
	rate, burst int64
	tokens      float64
	last        time.Time
}

func newTokenBucket(rate, burst int64, now time.Time) *tokenBucket {
	if rate <= 0 {
		return nil
	}
	return &tokenBucket{rate: rate, burst: burst, tokens: float64(burst), last: now}
}

// take removes n tokens and returns 0, or returns how long to wait until n tokens are available (taking
// nothing). A request larger than the bucket is treated as a request for a full bucket, so it can proceed.
func (b *tokenBucket) take(now time.Time, n int) time.Duration {
	if b == nil {
		return 0
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(b.burst), b.tokens+el.Seconds()*float64(b.rate))
		b.last = now
	}
	need := float64(min(int64(n), b.burst))
	if b.tokens >= need {
		b.tokens -= float64(n) // may go negative for oversized frames: paid back before the next one
		return 0
	}
	wait := time.Duration((need - b.tokens) / float64(b.rate) * float64(time.Second))
	if wait <= 0 {
		wait = time.Nanosecond
	}
	return wait
}
