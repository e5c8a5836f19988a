package datachannel

import (
	"context"
	"testing"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// BenchmarkPipeThroughput measures one-way Send → Receive throughput over the in-memory pipe, acks
// included, at the service's 1 KiB payloads and at 32 KiB.
func BenchmarkPipeThroughput(b *testing.B) {
	for _, size := range []int{1024, 32 << 10} {
		b.Run(byteSize(size), func(b *testing.B) {
			c, a := mustNew(b, Config{Role: RoleClient, MaxPayloadSize: size}), mustNew(b, Config{Role: RoleAgent, MaxPayloadSize: size})
			x, y := Pipe(0)
			c.Attach(x)
			a.Attach(y)
			chunk := make([]byte, 64<<10)
			ctx := context.Background()
			done := make(chan error, 1)
			total := b.N * len(chunk)
			go func() {
				got := 0
				for got < total {
					_, p, err := a.Receive(ctx)
					if err != nil {
						done <- err
						return
					}
					got += len(p)
				}
				done <- nil
			}()
			b.SetBytes(int64(len(chunk)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := c.Send(ctx, message.PayloadOutput, chunk); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			s := c.Stats()
			b.ReportMetric(float64(s.Retransmits)/float64(s.FramesSent), "rexmit/frame")
			b.ReportMetric(float64(s.SRTT.Microseconds()), "srtt-µs")
		})
	}
}

func byteSize(n int) string {
	if n >= 1024 {
		return string(rune('0'+n/1024/10%10)) + string(rune('0'+n/1024%10)) + "KiB"
	}
	return "small"
}

// BenchmarkEncodeFrame compares encoding into a pooled buffer (the channel's hot path) with a fresh
// allocation per frame.
func BenchmarkEncodeFrame(b *testing.B) {
	payload := make([]byte, 1024)
	m := message.Message{Type: message.InputStreamData, SchemaVersion: 1, CreatedDate: 1, MessageID: message.NewID(), PayloadType: 1, Payload: payload}
	b.Run("pooled", func(b *testing.B) {
		c := mustNew(b, Config{Role: RoleClient})
		b.ReportAllocs()
		b.SetBytes(int64(m.Size()))
		for range b.N {
			buf := c.dataPool.Get().(*[]byte)
			enc, err := m.AppendBinary((*buf)[:0])
			if err != nil {
				b.Fatal(err)
			}
			*buf = enc
			c.dataPool.Put(buf)
		}
	})
	b.Run("alloc", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(m.Size()))
		for range b.N {
			if _, err := m.MarshalBinary(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
