package datachannel

import (
	"context"
	"testing"
	"time"

	"github.com/ssmtunnel/ssmtunnel/tunnel/message"
)

// Small frames (smux SYN/FIN, short writes) must not each pin a MaxPayloadSize buffer while unacknowledged:
// the window counts encoded bytes, so with 32 KiB payloads 10,000 opening connections would hold ~260 MB
// of buffers. Large frames still get full-size buffers.
func TestSmallFramesUseSmallBuffers(t *testing.T) {
	c, err := New(Config{Role: RoleClient, MaxPayloadSize: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 100 {
		if err := c.Send(ctx, message.PayloadOutput, make([]byte, 8)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Send(ctx, message.PayloadOutput, make([]byte, 20<<10)); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.unacked) != 101 {
		t.Fatalf("%d unacknowledged frames, want 101 (no transport attached)", len(c.unacked))
	}
	for seq, f := range c.unacked {
		got := cap(*f.buf)
		switch {
		case f.payload <= 8 && got > smallFrameCap:
			t.Fatalf("frame %d with an 8-byte payload holds a %d-byte buffer, want at most %d", seq, got, smallFrameCap)
		case f.payload > 8 && got < message.HeaderSize+20<<10:
			t.Fatalf("frame %d with a 20 KiB payload holds a %d-byte buffer", seq, got)
		}
	}
}
