package datachannel

import (
	"context"
	"fmt"
	"testing"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// Micro-benchmarks of the data channel over the in-memory pipe, for the tunnel's latency budget: what one
// request/response costs in the channel alone (sequence numbers, acks, digest, pipe hand-offs), without
// websockets or smux. Throughput is BenchmarkPipeThroughput's job.
// Run with: go test -run '^$' -bench RoundTrip -benchmem ./tunnel/datachannel/

func newBenchPair(b *testing.B, cfg Config) (client, agent *Channel) {
	b.Helper()
	cc, ac := cfg, cfg
	cc.Role, ac.Role = RoleClient, RoleAgent
	c, err := New(cc)
	if err != nil {
		b.Fatal(err)
	}
	a, err := New(ac)
	if err != nil {
		b.Fatal(err)
	}
	x, y := Pipe(0)
	c.Attach(x)
	a.Attach(y)
	b.Cleanup(func() { c.Close(); a.Close() })
	return c, a
}

// BenchmarkRoundTrip sends size bytes from client to agent and the same back, one exchange outstanding:
// ns/op is the channel's share of a request/response, allocs/op its allocations for 2 data frames + 2 acks
// (payloads above MaxPayloadSize split into more frames).
func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{64, 1024, 8 << 10} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			c, a := newBenchPair(b, Config{})
			ctx := context.Background()
			echoErr := make(chan error, 1)
			go func() {
				for {
					pt, p, err := a.Receive(ctx)
					if err != nil {
						echoErr <- err
						return
					}
					if err := a.Send(ctx, pt, p); err != nil {
						echoErr <- err
						return
					}
				}
			}()
			req := make([]byte, size)
			b.SetBytes(int64(2 * size))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Send(ctx, message.PayloadOutput, req); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < size; {
					_, p, err := c.Receive(ctx)
					if err != nil {
						b.Fatal(err)
					}
					got += len(p)
				}
			}
			select {
			case err := <-echoErr:
				b.Fatalf("echo side failed: %v", err)
			default:
			}
		})
	}
}
