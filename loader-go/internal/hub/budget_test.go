package hub

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// longEvents makes n events with distinct paths of pathLen bytes and a
// 15-byte comm, numbered from base.
func longEvents(base, n, pathLen int) []*pb.FileCreatedEvent {
	evs := make([]*pb.FileCreatedEvent, n)
	for i := range evs {
		path := fmt.Appendf(make([]byte, 0, pathLen), "/%d/", base+i)
		path = append(path, bytes.Repeat([]byte{'x'}, pathLen-len(path))...)
		evs[i] = &pb.FileCreatedEvent{Path: path, Comm: []byte("123456789012345")}
	}
	return evs
}

// queuedCost recomputes the EventCost of what q holds and its event count
// from the items themselves, to check q's running totals.
func queuedCost(q *queue) (n, cost int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range q.items.len() {
		it := q.items.at(i)
		if it.isGap() {
			continue
		}
		n += it.hi - it.lo
		for _, ev := range it.b.events[it.lo:it.hi] {
			cost += EventCost(ev)
		}
	}
	if n != q.n || cost != q.bytes {
		panic(fmt.Sprintf("queue says %d events, %d bytes; holds %d, %d", q.n, q.bytes, n, cost))
	}
	return n, cost
}

// TestQueueByteBudget: with long paths the byte budget, not the event
// count, bounds a stalled queue, under every policy, and every sequence is
// still accounted for: the events kept are the oldest (DROP_NEWEST) or the
// newest (DROP_OLDEST) that fit, and CLOSE ends the stream.
func TestQueueByteBudget(t *testing.T) {
	const pathLen = 1000
	cost := EventCost(longEvents(0, 1, pathLen)[0])
	fit := MinBudgetBytes / cost // 31 events of 2286 bytes in 64 KiB
	for _, p := range []pb.OverflowPolicy{
		pb.OverflowPolicy_OVERFLOW_POLICY_DROP_NEWEST,
		pb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST,
		pb.OverflowPolicy_OVERFLOW_POLICY_CLOSE,
	} {
		t.Run(p.String(), func(t *testing.T) {
			h := New("run", Options{ReplaySize: 0, QueueSize: 1 << 20, QueueBytes: MinBudgetBytes})
			s, err := h.Subscribe(SubscribeOptions{Policy: p, MaxDelay: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			const total = 700
			for i := 0; i < total; i += 7 {
				h.Publish(longEvents(i, 7, pathLen))
				if n, c := queuedCost(s.q); c > MinBudgetBytes || n > fit {
					t.Fatalf("after %d events: %d queued, %d bytes; budget %d bytes (%d events)", i+7, n, c, MinBudgetBytes, fit)
				}
			}
			st := s.Status()
			if p == pb.OverflowPolicy_OVERFLOW_POLICY_CLOSE {
				var m Message
				if err := s.Next(t.Context(), &m); !errors.Is(err, ErrOverflow) {
					t.Fatalf("next = %v, want ErrOverflow", err)
				}
				return
			}
			if st.QueueDepth != uint32(fit) || st.QueueBytes != uint64(fit*cost) || st.QueueCapacityBytes != MinBudgetBytes {
				t.Errorf("status %v: want depth %d, %d bytes of %d", st, fit, fit*cost, MinBudgetBytes)
			}
			r := drain(t, s, total)
			checkAccounting(t, r, total)
			first := uint64(1)
			if p == pb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST {
				first = total - uint64(fit) + 1
			}
			if len(r.seqs) != fit || r.seqs[0] != first || gapSum(r, overflow) != total-uint64(fit) {
				t.Errorf("kept %d events from %d, %d overflowed; want %d from %d", len(r.seqs), r.seqs[0], gapSum(r, overflow), fit, first)
			}
			if n, c := queuedCost(s.q); n != 0 || c != 0 {
				t.Errorf("drained queue holds %d events, %d bytes", n, c)
			}
		})
	}
}

// TestReplayByteBudget: the replay buffer keeps the newest events that fit
// its byte budget, and a subscriber resuming from before them learns the
// rest expired.
func TestReplayByteBudget(t *testing.T) {
	const pathLen = 2000
	cost := EventCost(longEvents(0, 1, pathLen)[0])
	fit := MinBudgetBytes / cost
	h := New("run", Options{ReplaySize: 1 << 20, ReplayBytes: MinBudgetBytes})
	for i := 0; i < 100; i += 10 {
		h.Publish(longEvents(i, 10, pathLen))
	}
	if n, b := h.ReplayHeld(); n != fit || b != fit*cost {
		t.Fatalf("replay holds %d events, %d bytes; want %d, %d", n, b, fit, fit*cost)
	}
	s, err := h.Subscribe(SubscribeOptions{ResumeRunID: "run", ResumeAfter: 0, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := drain(t, s, 100)
	checkAccounting(t, r, 100)
	if got, want := fmtGaps(r.gaps), fmt.Sprintf("[1-%d:%d]", 100-fit, replayExpired); got != want || len(r.seqs) != fit {
		t.Errorf("gaps %s, %d events; want %s, %d", got, len(r.seqs), want, fit)
	}
}

// TestMemoryWithinBudgets measures the heap that events pin with a replay
// buffer and stalled subscribers, each stalled at a different point so that
// they pin different events, for PATH_MAX-long paths and short ones: it must
// stay within the bound the defaults are documented with (ReplayBytes plus
// QueueBytes per subscriber), so EventCost does not undercount.
func TestMemoryWithinBudgets(t *testing.T) {
	for _, pathLen := range []int{4096, 60} {
		t.Run(fmt.Sprint(pathLen), func(t *testing.T) { testMemoryWithinBudgets(t, pathLen) })
	}
}

func testMemoryWithinBudgets(t *testing.T, pathLen int) {
	const (
		budget = 4 << 20
		subs   = 4
	)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	h := New("run", Options{QueueSize: 1 << 20, QueueBytes: budget, ReplaySize: 1 << 20, ReplayBytes: budget})
	var ss []*Subscription
	published := 0
	publish := func(n int) {
		for range n / 64 {
			h.Publish(longEvents(published, 64, pathLen))
			published += 64
		}
	}
	for range subs {
		s, err := h.Subscribe(SubscribeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
		// Fill this queue (and the wire encodings, as if sent) before the
		// next subscriber joins.
		publish(2 * budget / EventCost(longEvents(0, 1, pathLen)[0]))
	}
	for _, s := range ss {
		s.q.mu.Lock()
		for i := range s.q.items.len() {
			if it := s.q.items.at(i); !it.isGap() {
				it.b.wire()
			}
		}
		s.q.mu.Unlock()
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int(after.HeapAlloc) - int(before.HeapAlloc)
	limit := budget * (subs + 1)
	t.Logf("%d events published; %d subscribers and the replay buffer pin %.1f MiB, bound %.1f MiB",
		published, subs, float64(held)/(1<<20), float64(limit)/(1<<20))
	if held > limit {
		t.Errorf("events pin %d bytes, over the bound %d", held, limit)
	}
	if held < limit/2 {
		t.Errorf("events pin %d bytes, under half the bound %d: the test no longer fills the budgets", held, limit)
	}
	runtime.KeepAlive(h)
	for _, s := range ss {
		s.Close()
	}
}
