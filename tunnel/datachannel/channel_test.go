package datachannel

import (
	"context"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// transferBoth sends n random bytes each way between a and b concurrently and checks both arrive intact.
func transferBoth(t *testing.T, a, b *Channel, n int, onProgress func(int)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ab, ba := randomBytes(t, n), randomBytes(t, n)
	var gotAB, gotBA []byte
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return sendAll(gctx, a, ab, 1) })
	g.Go(func() error { return sendAll(gctx, b, ba, 2) })
	g.Go(func() (err error) { gotAB, err = receiveN(gctx, b, n, onProgress); return })
	g.Go(func() (err error) { gotBA, err = receiveN(gctx, a, n, nil); return })
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	sameBytes(t, "client→agent", gotAB, ab)
	sameBytes(t, "agent→client", gotBA, ba)
	if err := a.Flush(ctx); err != nil {
		t.Fatalf("flush a: %v", err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatalf("flush b: %v", err)
	}
}

func newPipePair(t *testing.T, mod func(*Config)) (client, agent *Channel) {
	cc, ac := Config{Role: RoleClient}, Config{Role: RoleAgent}
	if mod != nil {
		mod(&cc)
		mod(&ac)
	}
	client, agent = mustNew(t, cc), mustNew(t, ac)
	x, y := Pipe(0)
	client.Attach(x)
	agent.Attach(y)
	return client, agent
}

func TestPipeDelivery(t *testing.T) {
	c, a := newPipePair(t, nil)
	transferBoth(t, c, a, 1<<20, nil)
	s := c.Stats()
	if s.FramesSent == 0 || s.AcksReceived < s.FramesSent || s.BadFrames != 0 {
		t.Fatalf("unexpected client stats %+v", s)
	}
}
