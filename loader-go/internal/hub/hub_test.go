package hub

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/protobuf/proto"
)

const (
	overflow       = pb.GapReason_GAP_REASON_SUBSCRIBER_OVERFLOW
	ringbufFull    = pb.GapReason_GAP_REASON_RINGBUF_FULL
	programSkipped = pb.GapReason_GAP_REASON_PROGRAM_SKIPPED
	replayExpired  = pb.GapReason_GAP_REASON_REPLAY_EXPIRED
)

// events makes n events whose paths are "/p<i>".
func events(n int) []*pb.FileCreatedEvent {
	evs := make([]*pb.FileCreatedEvent, n)
	for i := range evs {
		evs[i] = &pb.FileCreatedEvent{Path: fmt.Appendf(nil, "/p%d", i), Pid: uint32(i)}
	}
	return evs
}

// received is what a subscriber saw, in order.
type received struct {
	seqs     []uint64
	gaps     []*pb.Gap
	filtered uint64
	msgs     int
}

// next is one past the highest sequence accounted for.
func (r *received) next() uint64 {
	var n uint64 = 1
	if len(r.seqs) > 0 {
		n = max(n, r.seqs[len(r.seqs)-1]+1)
	}
	if len(r.gaps) > 0 {
		n = max(n, r.gaps[len(r.gaps)-1].LastSequence+1)
	}
	return n
}

// drain reads messages until the subscriber has accounted for every sequence
// up to last.
func drain(t *testing.T, s *Subscription, last uint64) *received {
	t.Helper()
	r := &received{}
	readUntil(t, s, r, last)
	return r
}

func readUntil(t *testing.T, s *Subscription, r *received, last uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var m Message
	for r.next() <= last {
		if err := s.Next(ctx, &m); err != nil {
			t.Fatalf("next after %d of %d: %v", r.next()-1, last, err)
		}
		checkWire(t, &m)
		r.add(&m.Response)
	}
}

func (r *received) add(resp *pb.SubscribeResponse) {
	r.msgs++
	r.filtered += resp.FilteredCount
	for _, ev := range resp.Events {
		r.seqs = append(r.seqs, ev.Sequence)
	}
	for _, g := range resp.Gaps {
		r.gaps = append(r.gaps, &pb.Gap{FirstSequence: g.FirstSequence, LastSequence: g.LastSequence, Reason: g.Reason})
	}
}

// checkWire asserts that the wire form of m decodes to m.Response.
func checkWire(t *testing.T, m *Message) {
	t.Helper()
	var got pb.SubscribeResponse
	if err := proto.Unmarshal(m.Wire().Materialize(), &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, &m.Response) {
		t.Fatalf("wire form decodes to\n%v\nwant\n%v", &got, &m.Response)
	}
}

// checkAccounting asserts that events and gaps cover [1, last] exactly once
// and in order.
func checkAccounting(t *testing.T, r *received, last uint64) {
	t.Helper()
	covered := make([]int, last+2)
	prevEvent := uint64(0)
	for _, s := range r.seqs {
		if s <= prevEvent {
			t.Fatalf("events out of order: %d after %d", s, prevEvent)
		}
		prevEvent = s
		covered[s]++
	}
	prevGap := uint64(0)
	for _, g := range r.gaps {
		if g.FirstSequence > g.LastSequence || g.FirstSequence <= prevGap {
			t.Fatalf("bad gap %v after %d", g, prevGap)
		}
		prevGap = g.LastSequence
		for s := g.FirstSequence; s <= g.LastSequence; s++ {
			covered[s]++
		}
	}
	for s := uint64(1); s <= last; s++ {
		if covered[s] != 1 {
			t.Fatalf("sequence %d accounted for %d times", s, covered[s])
		}
	}
}

func gapSum(r *received, reason pb.GapReason) uint64 {
	n := uint64(0)
	for _, g := range r.gaps {
		if g.Reason == reason {
			n += g.LastSequence - g.FirstSequence + 1
		}
	}
	return n
}

func TestSequencesAndGaps(t *testing.T) {
	h := New("run", Options{})
	s, err := h.Subscribe(SubscribeOptions{MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h.Publish(events(3))
	h.PublishGap(ringbufFull, 2)
	h.PublishGap(programSkipped, 1)
	h.Publish(events(2))
	if got := h.LastSequence(); got != 8 {
		t.Fatalf("last sequence = %d, want 8", got)
	}
	r := drain(t, s, 8)
	wantSeqs := []uint64{1, 2, 3, 7, 8}
	if fmt.Sprint(r.seqs) != fmt.Sprint(wantSeqs) {
		t.Errorf("sequences = %v, want %v", r.seqs, wantSeqs)
	}
	wantGaps := []*pb.Gap{
		{FirstSequence: 4, LastSequence: 5, Reason: ringbufFull},
		{FirstSequence: 6, LastSequence: 6, Reason: programSkipped},
	}
	if fmt.Sprint(r.gaps) != fmt.Sprint(wantGaps) {
		t.Errorf("gaps = %v, want %v", r.gaps, wantGaps)
	}
	var loss pb.LossCounters
	h.Loss(&loss)
	if loss.RingbufFull != 2 || loss.ProgramSkipped != 1 || loss.SubscriberDropped != 0 {
		t.Errorf("loss = %v", &loss)
	}
}

func TestFanOut(t *testing.T) {
	h := New("run", Options{})
	var subs []*Subscription
	for range 4 {
		s, err := h.Subscribe(SubscribeOptions{MaxDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		subs = append(subs, s)
	}
	for range 10 {
		h.Publish(events(100))
	}
	for i, s := range subs {
		r := drain(t, s, 1000)
		if len(r.seqs) != 1000 || len(r.gaps) != 0 {
			t.Errorf("subscriber %d: %d events, gaps %v; want 1000 events, no gaps", i, len(r.seqs), r.gaps)
		}
		checkAccounting(t, r, 1000)
	}
}

// TestSlowSubscriberIsolation publishes from one goroutine while one
// subscriber reads nothing: publishing must not block, the fast subscriber
// must get everything, and the slow one must account for what it lost.
func TestSlowSubscriberIsolation(t *testing.T) {
	h := New("run", Options{QueueSize: 1000})
	slow, err := h.Subscribe(SubscribeOptions{Peer: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fast, err := h.Subscribe(SubscribeOptions{Peer: "fast", QueueSize: 1 << 20, QueueBytes: 1 << 30, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()

	const total = 200_000
	done := make(chan time.Duration)
	go func() {
		start := time.Now()
		for range total / 200 {
			h.Publish(events(200))
		}
		done <- time.Since(start)
	}()
	r := drain(t, fast, total)
	select {
	case d := <-done:
		t.Logf("published %d events in %v with a stalled subscriber", total, d)
	case <-time.After(10 * time.Second):
		t.Fatal("publishing blocked")
	}
	if len(r.seqs) != total {
		t.Errorf("fast subscriber got %d events, want %d", len(r.seqs), total)
	}
	st := slow.Status()
	if st.QueueDepth != 1000 || st.Dropped != total-1000 {
		t.Errorf("slow status = %v, want depth 1000, dropped %d", st, total-1000)
	}
	rs := drain(t, slow, total)
	checkAccounting(t, rs, total)
	if len(rs.seqs) != 1000 || gapSum(rs, overflow) != total-1000 {
		t.Errorf("slow subscriber: %d events, %d overflowed", len(rs.seqs), gapSum(rs, overflow))
	}
	var loss pb.LossCounters
	h.Loss(&loss)
	if loss.SubscriberDropped != total-1000 {
		t.Errorf("subscriber_dropped = %d, want %d", loss.SubscriberDropped, total-1000)
	}
}

func TestOverflowPolicies(t *testing.T) {
	tests := []struct {
		policy   pb.OverflowPolicy
		wantSeqs string // events kept, from 25 published into a queue of 10
		wantGaps string
		wantErr  error
	}{
		{pb.OverflowPolicy_OVERFLOW_POLICY_UNSPECIFIED, "[1 2 3 4 5 6 7 8 9 10]", "[11-25:3]", nil},
		{pb.OverflowPolicy_OVERFLOW_POLICY_DROP_NEWEST, "[1 2 3 4 5 6 7 8 9 10]", "[11-25:3]", nil},
		{pb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST, "[16 17 18 19 20 21 22 23 24 25]", "[1-15:3]", nil},
		{pb.OverflowPolicy_OVERFLOW_POLICY_CLOSE, "", "", ErrOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			h := New("run", Options{})
			s, err := h.Subscribe(SubscribeOptions{Policy: tt.policy, QueueSize: 10, MaxDelay: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for range 5 {
				h.Publish(events(5))
			}
			if tt.wantErr != nil {
				var m Message
				if err := s.Next(context.Background(), &m); !errors.Is(err, tt.wantErr) {
					t.Fatalf("next = %v, want %v", err, tt.wantErr)
				}
				// 10 queued and the 5 that overflowed; later ones were
				// never offered to the ended subscription.
				if st := s.Status(); st.Dropped != 15 {
					t.Errorf("dropped = %d, want 15", st.Dropped)
				}
				return
			}
			r := drain(t, s, 25)
			checkAccounting(t, r, 25)
			if got := fmt.Sprint(r.seqs); got != tt.wantSeqs {
				t.Errorf("events = %s, want %s", got, tt.wantSeqs)
			}
			if got := fmtGaps(r.gaps); got != tt.wantGaps {
				t.Errorf("gaps = %s, want %s", got, tt.wantGaps)
			}
		})
	}
}

func fmtGaps(gaps []*pb.Gap) string {
	var s []string
	for _, g := range gaps {
		s = append(s, fmt.Sprintf("%d-%d:%d", g.FirstSequence, g.LastSequence, g.Reason))
	}
	return fmt.Sprint(s)
}

// TestDropOldestKeepsKernelGaps checks that dropping the oldest events around
// a queued kernel gap keeps the gap, its reason and the order.
func TestDropOldestKeepsKernelGaps(t *testing.T) {
	h := New("run", Options{})
	s, err := h.Subscribe(SubscribeOptions{Policy: pb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST, QueueSize: 4, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h.Publish(events(2))         // 1-2
	h.PublishGap(ringbufFull, 1) // 3
	h.Publish(events(2))         // 4-5
	h.Publish(events(3))         // 6-8: drops 1, 2, 4
	r := drain(t, s, 8)
	checkAccounting(t, r, 8)
	if got, want := fmt.Sprint(r.seqs), "[5 6 7 8]"; got != want {
		t.Errorf("events = %s, want %s", got, want)
	}
	if got, want := fmtGaps(r.gaps), "[1-2:3 3-3:1 4-4:3]"; got != want {
		t.Errorf("gaps = %s, want %s", got, want)
	}
	if n := s.q.items.len(); n != 0 {
		t.Errorf("%d items left in the queue", n)
	}
}

// TestStalledQueueStaysBounded: a subscriber that does not read while events
// overflow its queue and the kernel keeps reporting losses (two reasons,
// interleaved) holds a bounded number of items, and once it reads, every
// sequence is accounted for exactly once with each reason's count intact.
func TestStalledQueueStaysBounded(t *testing.T) {
	for _, p := range []pb.OverflowPolicy{pb.OverflowPolicy_OVERFLOW_POLICY_DROP_NEWEST, pb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST} {
		h := New("run", Options{ReplaySize: 0})
		s, err := h.Subscribe(SubscribeOptions{Policy: p, QueueSize: 100, MaxDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100_000 {
			h.Publish(events(7))
			h.PublishGap(ringbufFull, 3)
			if i%3 == 0 {
				h.PublishGap(programSkipped, 1)
			}
		}
		// 100 events in at most 100 event items, and gap runs between them
		// of at most one item per reason.
		if s.q.n != 100 || s.q.items.len() > 3*101 {
			t.Errorf("%v: %d events in %d items", p, s.q.n, s.q.items.len())
		}
		r := &received{}
		last := h.LastSequence()
		readUntil(t, s, r, last)
		checkAccounting(t, r, last)
		var loss pb.LossCounters
		h.Loss(&loss)
		if got := gapSum(r, ringbufFull); got != loss.RingbufFull || got != 300_000 {
			t.Errorf("%v: ringbuf_full gaps %d, hub %d, want 300000", p, got, loss.RingbufFull)
		}
		if got := gapSum(r, programSkipped); got != loss.ProgramSkipped || got != 33_334 {
			t.Errorf("%v: program_skipped gaps %d, hub %d, want 33334", p, got, loss.ProgramSkipped)
		}
		if got := gapSum(r, overflow); got != s.Status().Dropped || got != 700_000-100 {
			t.Errorf("%v: overflow gaps %d, dropped %d, want %d", p, got, s.Status().Dropped, 700_000-100)
		}
		s.Close()
	}
}

// TestGapsCountTowardsMessageSize: a message of gaps stays within MaxBytes,
// like one of events. The queue is filled by hand with gaps that no rule
// merges (a replay or a queue of another era could hold them); before gaps
// counted, all 200,000 went into one message of ~4.8 MB.
func TestGapsCountTowardsMessageSize(t *testing.T) {
	h := New("run", Options{ReplaySize: 0})
	s, err := h.Subscribe(SubscribeOptions{MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 200_000
	s.q.mu.Lock()
	for i := range uint64(n) {
		reason := ringbufFull
		if i%2 == 1 {
			reason = programSkipped
		}
		s.q.items.pushBack(item{gapFirst: i + 1, gapLast: i + 1, gapReason: reason})
	}
	s.q.offered = n + 1
	s.q.mu.Unlock()
	s.q.wake()
	r := &received{}
	var m Message
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for r.next() <= n {
		if err := s.Next(ctx, &m); err != nil {
			t.Fatal(err)
		}
		if size := len(m.Wire().Materialize()); size > DefaultMaxBytes {
			t.Fatalf("a message of %d gaps is %d bytes, over MaxBytes %d", len(m.Response.Gaps), size, DefaultMaxBytes)
		}
		r.add(&m.Response)
	}
	checkAccounting(t, r, n)
	if r.msgs < 2 {
		t.Errorf("%d gaps in %d message(s)", n, r.msgs)
	}
}

func TestBatching(t *testing.T) {
	h := New("run", Options{})
	s, err := h.Subscribe(SubscribeOptions{MaxEvents: 100, MaxDelay: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	h.Publish(events(250))
	var m Message
	ctx := context.Background()
	for _, want := range []int{100, 100} {
		start := time.Now()
		if err := s.Next(ctx, &m); err != nil {
			t.Fatal(err)
		}
		if len(m.Response.Events) != want {
			t.Errorf("batch of %d events, want %d", len(m.Response.Events), want)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("full batch waited %v", d)
		}
	}
	// The last 50 form a partial batch: it was pending since the first
	// Next, so it goes out at once too.
	if err := s.Next(ctx, &m); err != nil || len(m.Response.Events) != 50 {
		t.Fatalf("rest: %d events, %v", len(m.Response.Events), err)
	}
	// A new partial batch waits for the delay.
	h.Publish(events(1))
	start := time.Now()
	if err := s.Next(ctx, &m); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 190*time.Millisecond || d > 2*time.Second {
		t.Errorf("partial batch sent after %v, want about 200ms", d)
	}
	if m.Response.RunId != "run" || m.Response.Loss == nil || len(m.Response.Events) != 1 || m.Response.Events[0].Sequence != 251 {
		t.Errorf("response = %v", &m.Response)
	}
}

func TestMaxBytes(t *testing.T) {
	h := New("run", Options{})
	s, err := h.Subscribe(SubscribeOptions{MaxEvents: 4096, MaxBytes: 10_000, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs := events(100)
	for _, ev := range evs {
		ev.Path = make([]byte, 4095)
	}
	h.Publish(evs)
	var m Message
	if err := s.Next(context.Background(), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Response.Events) != 3 {
		t.Errorf("%d events of 4 KiB in a 10 kB message, want 3", len(m.Response.Events))
	}
}

func TestFilter(t *testing.T) {
	h := New("run", Options{})
	even := func(ev *pb.FileCreatedEvent) bool { return ev.Pid%2 == 0 }
	s, err := h.Subscribe(SubscribeOptions{Match: even, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h.Publish(events(10))
	h.Publish(events(1)[:1]) // pid 0 again: matches
	r := drain(t, s, 11)
	if got, want := fmt.Sprint(r.seqs), "[1 3 5 7 9 11]"; got != want {
		t.Errorf("events = %s, want %s", got, want)
	}
	if r.filtered != 5 || len(r.gaps) != 0 {
		t.Errorf("filtered %d, gaps %v; want 5, none", r.filtered, r.gaps)
	}
}

func TestResume(t *testing.T) {
	tests := []struct {
		name      string
		runID     string
		after     uint64
		wantFirst uint64 // first event sequence received
		wantGaps  string
	}{
		{"held", "run", 95, 96, "[]"},
		{"caught up", "run", 100, 101, "[]"},
		{"partly expired", "run", 5, 31, "[6-30:4 41-60:1]"},
		{"mid-gap", "run", 41, 61, "[42-60:1]"},
		{"other run", "old", 5, 101, "[]"},
		{"no run", "", 0, 101, "[]"},
		{"beyond the end", "run", ^uint64(0), 101, "[]"}, // the server refuses it; the hub starts live
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := New("run", Options{ReplaySize: 50})
			h.Publish(events(40))         // 1-40
			h.PublishGap(ringbufFull, 20) // 41-60
			h.Publish(events(40))         // 61-100
			s, err := h.Subscribe(SubscribeOptions{ResumeRunID: tt.runID, ResumeAfter: tt.after, MaxDelay: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			h.Publish(events(5)) // 101-105
			r := &received{}
			readUntil(t, s, r, 105)
			if r.seqs[0] != tt.wantFirst {
				t.Errorf("first event %d, want %d", r.seqs[0], tt.wantFirst)
			}
			if got := fmtGaps(r.gaps); got != tt.wantGaps {
				t.Errorf("gaps = %s, want %s", got, tt.wantGaps)
			}
			start := tt.wantFirst
			if len(r.gaps) > 0 {
				start = r.gaps[0].FirstSequence
			}
			if start != tt.after+1 && tt.runID == "run" && tt.after < 100 {
				t.Errorf("stream starts at %d, want %d", start, tt.after+1)
			}
		})
	}
}

func TestReplayDisabled(t *testing.T) {
	h := New("run", Options{ReplaySize: 0})
	h.Publish(events(10))
	s, err := h.Subscribe(SubscribeOptions{ResumeRunID: "run", ResumeAfter: 3, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := drain(t, s, 10)
	if got, want := fmtGaps(r.gaps), "[4-10:4]"; got != want || len(r.seqs) != 0 {
		t.Errorf("gaps = %s, events %v; want %s, none", got, r.seqs, want)
	}
}

func TestCloseDrains(t *testing.T) {
	h := New("run", Options{})
	s, err := h.Subscribe(SubscribeOptions{MaxDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h.Publish(events(3))
	h.Close()
	var m Message
	if err := s.Next(context.Background(), &m); err != nil || len(m.Response.Events) != 3 {
		t.Fatalf("after close: %d events, %v; want 3, nil", len(m.Response.Events), err)
	}
	if err := s.Next(context.Background(), &m); !errors.Is(err, ErrClosed) {
		t.Fatalf("next = %v, want ErrClosed", err)
	}
	if _, err := h.Subscribe(SubscribeOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("subscribe after close = %v", err)
	}
}

func TestNextHonoursContext(t *testing.T) {
	h := New("run", Options{})
	s, err := h.Subscribe(SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	var m Message
	if err := s.Next(ctx, &m); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("next = %v", err)
	}
	s.Close()
	if n := len(h.Subscribers()); n != 0 {
		t.Errorf("%d subscribers after close", n)
	}
}

// TestAccountingRandomized runs publishers of events and gaps against
// subscribers of every policy that read at random paces, and checks that
// each one accounts for every sequence exactly once.
func TestAccountingRandomized(t *testing.T) {
	policies := []pb.OverflowPolicy{
		pb.OverflowPolicy_OVERFLOW_POLICY_DROP_NEWEST,
		pb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST,
		pb.OverflowPolicy_OVERFLOW_POLICY_DROP_NEWEST,
		pb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST,
	}
	h := New("run", Options{ReplaySize: 1000})
	var subs []*Subscription
	for i, p := range policies {
		// Half the queues are bounded by bytes before events (paths up to
		// 3 kB), half by events.
		s, err := h.Subscribe(SubscribeOptions{Policy: p, QueueSize: 50 + 100*i, QueueBytes: MinBudgetBytes << (10 * (i % 2)),
			MaxEvents: 1 + 30*i, MaxDelay: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		subs = append(subs, s)
	}
	// The subscribers read while the hub publishes (and the queues overflow
	// meanwhile), until they have accounted for the last sequence, which is
	// known only once publishing ends.
	var final atomic.Uint64
	final.Store(math.MaxUint64)
	var wg sync.WaitGroup
	results := make([]*received, len(subs))
	for i, s := range subs {
		results[i] = &received{}
		wg.Go(func() {
			r := results[i]
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var m Message
			for r.next() <= final.Load() {
				// A short wait, so that the loop sees final once it is set.
				wctx, wcancel := context.WithTimeout(ctx, 20*time.Millisecond)
				err := s.Next(wctx, &m)
				wcancel()
				if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
					continue
				}
				if err != nil {
					t.Errorf("subscriber %d: next after %d: %v", i, r.next()-1, err)
					return
				}
				checkWire(t, &m)
				r.add(&m.Response)
				if r.msgs%7 == 0 {
					time.Sleep(time.Millisecond) // a slow reader: its queue overflows
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		if rng.IntN(10) == 0 {
			h.PublishGap(pb.GapReason(1+rng.IntN(2)), uint64(1+rng.IntN(5)))
		} else {
			h.Publish(longEvents(0, 1+rng.IntN(40), 10+rng.IntN(3000)))
		}
		if rng.IntN(50) == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	last := h.LastSequence()
	final.Store(last)
	wg.Wait()
	var loss pb.LossCounters
	h.Loss(&loss)
	dropped := uint64(0)
	for i, r := range results {
		checkAccounting(t, r, last)
		st := subs[i].Status()
		if got := gapSum(r, overflow); got != st.Dropped {
			t.Errorf("subscriber %d: overflow gaps %d, dropped %d", i, got, st.Dropped)
		}
		if got := gapSum(r, ringbufFull) + gapSum(r, programSkipped); got != loss.RingbufFull+loss.ProgramSkipped {
			t.Errorf("subscriber %d: kernel gaps %d, want %d", i, got, loss.RingbufFull+loss.ProgramSkipped)
		}
		dropped += st.Dropped
		if n, c := queuedCost(subs[i].q); n != 0 || c != 0 {
			t.Errorf("subscriber %d: drained queue holds %d events, %d bytes", i, n, c)
		}
	}
	if loss.SubscriberDropped != dropped {
		t.Errorf("subscriber_dropped = %d, want %d", loss.SubscriberDropped, dropped)
	}
}

// TestResumeTakenOverRun: a hub that continues a run numbers from the checkpoint's next,
// keeps its loss counters, and tells a client resuming from before next that
// those sequences expired (the dead process held them).
func TestResumeTakenOverRun(t *testing.T) {
	h := New("run", Options{ReplaySize: 100})
	h.Resume(51, &pb.LossCounters{RingbufFull: 3, LoaderRestart: 2, SubscriberDropped: 1})
	if got := h.LastSequence(); got != 50 {
		t.Fatalf("last sequence %d after resuming at 51", got)
	}
	sub, err := h.Subscribe(SubscribeOptions{ResumeRunID: "run", ResumeAfter: 40, MaxEvents: 10, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	h.Publish([]*pb.FileCreatedEvent{{Path: []byte("/a")}})
	h.PublishGap(pb.GapReason_GAP_REASON_LOADER_RESTART, 4)
	var msg Message
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var got []string
	for len(got) < 3 {
		if err := sub.Next(ctx, &msg); err != nil {
			t.Fatal(err)
		}
		for _, g := range msg.Response.Gaps {
			got = append(got, fmt.Sprintf("%d-%d %s", g.FirstSequence, g.LastSequence, g.Reason))
		}
		for _, ev := range msg.Response.Events {
			got = append(got, fmt.Sprintf("%d %s", ev.Sequence, ev.Path))
		}
	}
	slices.Sort(got)
	if want := []string{"41-50 GAP_REASON_REPLAY_EXPIRED", "51 /a", "52-55 GAP_REASON_LOADER_RESTART"}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	var l pb.LossCounters
	h.Loss(&l)
	if l.RingbufFull != 3 || l.LoaderRestart != 6 || l.SubscriberDropped != 1 {
		t.Errorf("loss after resuming = %v", &l)
	}
}
