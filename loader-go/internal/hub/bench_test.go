package hub

import (
	"context"
	"fmt"
	"sync"
	"testing"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// BenchmarkFanOut measures publishing batches of 256 events to n subscribers
// that drain concurrently; ns/op is per event, including the subscribers'
// work of building messages and their wire form (events are encoded once).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			const batchSize = 256
			h := New("bench", Options{ReplaySize: DefaultReplaySize})
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			for range n {
				s, err := h.Subscribe(SubscribeOptions{QueueSize: 1 << 20})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				wg.Go(func() {
					var m Message
					for s.Next(ctx, &m) == nil {
						m.Wire()
					}
				})
			}
			pool := events(batchSize)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batchSize {
				evs := make([]*pb.FileCreatedEvent, batchSize)
				slab := make([]pb.FileCreatedEvent, batchSize)
				for j := range evs {
					slab[j].Path = pool[j].Path
					evs[j] = &slab[j]
				}
				h.Publish(evs)
			}
			h.Close()
			wg.Wait()
			cancel()
		})
	}
}
