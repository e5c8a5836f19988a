package message

import (
	"sync"
	"testing"
)

// TestNewIDUniqueAcrossGoroutines: IDs come from pooled generators now, so two goroutines must never draw
// the same stream (a pool handing one seed to two generators would repeat IDs).
func TestNewIDUniqueAcrossGoroutines(t *testing.T) {
	const goroutines, perGoroutine = 8, 5000
	ids := make([][]ID, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perGoroutine {
				ids[g] = append(ids[g], NewID())
			}
		}()
	}
	wg.Wait()
	seen := make(map[ID]bool, goroutines*perGoroutine)
	for _, list := range ids {
		for _, id := range list {
			if seen[id] {
				t.Fatalf("NewID repeated %s", id)
			}
			seen[id] = true
			if id[6]>>4 != 4 || id[8]>>6 != 2 {
				t.Fatalf("NewID %s is not a version-4 variant-1 UUID", id)
			}
		}
	}
}

func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = NewID()
		}
	})
}
