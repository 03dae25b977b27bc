package server

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// mixedEvents makes n events that differ in directory, uid, comm and
// cgroup, so that filters select different subsets.
func mixedEvents(n int) []*pb.FileCreatedEvent {
	dirs := []string{"/home/alice/", "/home/bob/", "/tmp/", "/var/log/"}
	exts := []string{".txt", ".log", ".tmp"}
	evs := make([]*pb.FileCreatedEvent, n)
	for i := range evs {
		evs[i] = &pb.FileCreatedEvent{
			Path:     fmt.Appendf(nil, "%sf%d%s", dirs[i%len(dirs)], i, exts[i%len(exts)]),
			Uid:      uint32(1000 * (i % 3)),
			Comm:     []byte([]string{"touch", "cp", "bash", "python3", "sh"}[i%5]),
			CgroupId: uint64(i % 7),
		}
	}
	return evs
}

// TestFilteredSubscribers runs several subscribers with different filters
// side by side: each must receive exactly the events its filter selects,
// computed here without the filter package, and account for the rest.
func TestFilteredSubscribers(t *testing.T) {
	type sub struct {
		name   string
		filter *pb.Filter
		want   func(*pb.FileCreatedEvent) bool
	}
	subs := []sub{
		{"all", nil, func(*pb.FileCreatedEvent) bool { return true }},
		{"prefix", &pb.Filter{PathPrefixes: [][]byte{[]byte("/home/")}},
			func(e *pb.FileCreatedEvent) bool { return bytes.HasPrefix(e.Path, []byte("/home/")) }},
		{"glob", &pb.Filter{PathGlobs: []string{"/home/*/*.txt", "/tmp/*.log"}},
			func(e *pb.FileCreatedEvent) bool {
				a, _ := path.Match("/home/*/*.txt", string(e.Path))
				b, _ := path.Match("/tmp/*.log", string(e.Path))
				return a || b
			}},
		{"uid", &pb.Filter{Uids: []uint32{1000}}, func(e *pb.FileCreatedEvent) bool { return e.Uid == 1000 }},
		{"comm", &pb.Filter{Comms: [][]byte{[]byte("touch"), []byte("sh")}},
			func(e *pb.FileCreatedEvent) bool { return string(e.Comm) == "touch" || string(e.Comm) == "sh" }},
		{"cgroup and uid", &pb.Filter{CgroupIds: []uint64{2, 3}, Uids: []uint32{0, 2000}},
			func(e *pb.FileCreatedEvent) bool { return (e.CgroupId == 2 || e.CgroupId == 3) && e.Uid != 1000 }},
		{"nothing", &pb.Filter{PathPrefixes: [][]byte{[]byte("/nowhere/")}}, func(*pb.FileCreatedEvent) bool { return false }},
	}
	h := hub.New("run", hub.Options{})
	c := start(t, h, staticStatus{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	streams := make([]*tallyStream, len(subs))
	for i, s := range subs {
		stream, startSeq := subscribe(t, ctx, c, &pb.SubscribeRequest{Filter: s.filter, MaxBatchDelayMs: 1, MaxBatchSize: 100})
		streams[i] = &tallyStream{stream: stream, start: startSeq}
	}
	var published []*pb.FileCreatedEvent
	for range 20 {
		evs := mixedEvents(500)
		h.Publish(evs)
		published = append(published, evs...)
	}
	h.PublishGap(pb.GapReason_GAP_REASON_RINGBUF_FULL, 7)
	last := h.LastSequence()

	var wg sync.WaitGroup
	errs := make([]error, len(subs))
	for i := range subs {
		wg.Go(func() { errs[i] = streams[i].readUntil(last) })
	}
	wg.Wait()
	for i, s := range subs {
		if errs[i] != nil {
			t.Fatalf("%s: %v", s.name, errs[i])
		}
		var want []uint64
		for _, ev := range published {
			if s.want(ev) {
				want = append(want, ev.Sequence)
			}
		}
		tl := streams[i].tally
		got := make([]uint64, len(tl.events))
		for j, ev := range tl.events {
			got[j] = ev.Sequence
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %d events, want %d", s.name, len(got), len(want))
		}
		// Every sequence is delivered, filtered out, or in a gap.
		if n := uint64(len(got)) + tl.filtered + tl.gapped; n != last {
			t.Errorf("%s: %d delivered + %d filtered + %d gapped = %d, want %d", s.name, len(got), tl.filtered, tl.gapped, n, last)
		}
		if tl.gapped != 7 {
			t.Errorf("%s: %d gapped, want the 7 of the ring buffer", s.name, tl.gapped)
		}
	}
}

// tallyStream is a stream read into a tally, possibly in several goes.
type tallyStream struct {
	stream interface {
		Recv() (*pb.SubscribeResponse, error)
	}
	start uint64
	tally tally
}

// readUntil reads until the stream has accounted for every sequence up to
// last: delivered, filtered (a filtered stream's events skip sequences) or
// in a gap.
func (s *tallyStream) readUntil(last uint64) error {
	tl := &s.tally
	if tl.next == 0 {
		tl.next = s.start
	}
	for tl.next <= last && uint64(len(tl.events))+tl.filtered+tl.gapped < last-s.start+1 {
		resp, err := s.stream.Recv()
		if err != nil {
			return fmt.Errorf("recv at %d of %d: %w", tl.next, last, err)
		}
		tl.filtered += resp.FilteredCount
		for _, ev := range resp.Events {
			if ev.Sequence < tl.next {
				return fmt.Errorf("event %d after %d", ev.Sequence, tl.next-1)
			}
			tl.events = append(tl.events, ev)
			tl.next = ev.Sequence + 1
		}
		for _, g := range resp.Gaps {
			tl.gapped += g.LastSequence - g.FirstSequence + 1
			tl.next = max(tl.next, g.LastSequence+1)
		}
	}
	return nil
}

// TestStalledSubscriberOverGRPC has one client that subscribes and never
// reads: over real gRPC its stream's flow-control window fills and its
// queue overflows. Publishing must still return at once, and the other
// client must receive every batch promptly. The stalled client later finds
// every loss in a gap.
func TestStalledSubscriberOverGRPC(t *testing.T) {
	h := hub.New("run", hub.Options{QueueSize: 1000})
	c := start(t, h, staticStatus{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stalled, stalledStart := subscribe(t, ctx, c, &pb.SubscribeRequest{})
	fastStream, fastStart := subscribe(t, ctx, c, &pb.SubscribeRequest{MaxBatchDelayMs: 1})
	fast := &tallyStream{stream: fastStream, start: fastStart}

	const batches, batchSize = 200, 500
	var slowestPublish, slowestDelivery time.Duration
	for range batches {
		begin := time.Now()
		h.Publish(mixedEvents(batchSize))
		published := time.Now()
		if err := fast.readUntil(h.LastSequence()); err != nil {
			t.Fatal(err)
		}
		slowestPublish = max(slowestPublish, published.Sub(begin))
		slowestDelivery = max(slowestDelivery, time.Since(published))
	}
	t.Logf("slowest publish %v, slowest delivery to the fast client %v", slowestPublish, slowestDelivery)
	if slowestPublish > time.Second || slowestDelivery > 5*time.Second {
		t.Errorf("the stalled client held things up: publish %v, delivery %v", slowestPublish, slowestDelivery)
	}
	const total = batches * batchSize
	if len(fast.tally.events) != total || fast.tally.gapped != 0 {
		t.Fatalf("fast client: %d events, %d gapped", len(fast.tally.events), fast.tally.gapped)
	}
	st, err := c.GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Subscribers[0].Dropped == 0 || st.Subscribers[1].Dropped != 0 {
		t.Errorf("dropped: stalled %d, fast %d", st.Subscribers[0].Dropped, st.Subscribers[1].Dropped)
	}
	// Now the stalled client reads: what it gets plus its gaps is exactly
	// what was published.
	ts := read(t, stalled, stalledStart, total, false)
	if uint64(len(ts.events))+ts.gapped != total || ts.gapped != st.Subscribers[0].Dropped {
		t.Errorf("stalled client: %d events + %d gapped, status dropped %d; want %d in all",
			len(ts.events), ts.gapped, st.Subscribers[0].Dropped, total)
	}
}

// TestGapsAndResume follows docs/api.md: losses of every kind arrive as
// gaps, created = delivered + gap sizes, and a client that reconnects with
// (run id, last sequence) continues exactly there, with a REPLAY_EXPIRED gap
// for what the replay buffer no longer holds.
func TestGapsAndResume(t *testing.T) {
	h := hub.New("run-g", hub.Options{ReplaySize: 100, QueueSize: 50})
	c := start(t, h, staticStatus{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	stream, startSeq := subscribe(t, ctx, c, &pb.SubscribeRequest{MaxBatchDelayMs: 1})
	h.Publish(mixedEvents(30))                               // 1-30
	h.PublishGap(pb.GapReason_GAP_REASON_RINGBUF_FULL, 5)    // 31-35
	h.PublishGap(pb.GapReason_GAP_REASON_PROGRAM_SKIPPED, 2) // 36-37
	h.Publish(mixedEvents(80))                               // 38-117: 50 fit the queue
	h.PublishGap(pb.GapReason_GAP_REASON_READ_ERROR, 1)      // 118
	tl := read(t, stream, startSeq, h.LastSequence(), false)
	if uint64(len(tl.events))+tl.gapped != h.LastSequence() {
		t.Fatalf("%d delivered + %d gapped != %d created", len(tl.events), tl.gapped, h.LastSequence())
	}
	wantGaps := map[pb.GapReason]uint64{
		pb.GapReason_GAP_REASON_RINGBUF_FULL:        5,
		pb.GapReason_GAP_REASON_PROGRAM_SKIPPED:     2,
		pb.GapReason_GAP_REASON_SUBSCRIBER_OVERFLOW: 60, // 30 + 80 events into a queue of 50
		pb.GapReason_GAP_REASON_READ_ERROR:          1,
	}
	if fmt.Sprint(tl.byReason) != fmt.Sprint(wantGaps) {
		t.Errorf("gaps by reason %v, want %v", tl.byReason, wantGaps)
	}

	// The client goes away after sequence 60 and comes back: sequences 61
	// to 118 are still in the replay buffer (it holds the last 100 events).
	resumed, at := subscribe(t, ctx, c, &pb.SubscribeRequest{ResumeRunId: "run-g", ResumeAfterSequence: 60, MaxBatchDelayMs: 1})
	if at != 61 {
		t.Fatalf("resumed at %d, want 61", at)
	}
	tr := read(t, resumed, at, h.LastSequence(), false)
	if tr.events[0].Sequence != 61 || uint64(len(tr.events))+tr.gapped != h.LastSequence()-60 {
		t.Errorf("resumed: first event %d, %d events + %d gapped", tr.events[0].Sequence, len(tr.events), tr.gapped)
	}

	// Resuming from sequence 2: the replay buffer holds the last 100 of
	// the 110 events, so 3-10 have expired.
	old, at := subscribe(t, ctx, c, &pb.SubscribeRequest{ResumeRunId: "run-g", ResumeAfterSequence: 2, MaxBatchDelayMs: 1})
	resp, err := old.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if at != 3 || len(resp.Gaps) == 0 || resp.Gaps[0].Reason != pb.GapReason_GAP_REASON_REPLAY_EXPIRED ||
		resp.Gaps[0].FirstSequence != 3 || resp.Gaps[0].LastSequence != 10 {
		t.Errorf("resume from 2: start %d, first message gaps %v", at, resp.Gaps)
	}

	// Another run's position starts live; a position beyond this run's end
	// is refused.
	_, at = subscribe(t, ctx, c, &pb.SubscribeRequest{ResumeRunId: "other-run", ResumeAfterSequence: 5})
	if at != h.LastSequence()+1 {
		t.Errorf("other run: start %d, want live %d", at, h.LastSequence()+1)
	}
	future, err := c.Subscribe(ctx, &pb.SubscribeRequest{ResumeRunId: "run-g", ResumeAfterSequence: h.LastSequence() + 1})
	if err == nil {
		_, err = future.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("resume beyond the end: %v, want INVALID_ARGUMENT", err)
	}
}
