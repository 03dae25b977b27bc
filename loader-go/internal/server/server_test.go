package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"github.com/filewatcher/filewatcher/loader-go/internal/synthetic"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// staticStatus is a source that fills nothing but its name.
type staticStatus struct{}

func (staticStatus) FillStatus(r *pb.GetStatusResponse) { r.Source = "test" }

// start serves h on 127.0.0.1:0 and returns a client of it.
func start(t *testing.T, h *hub.Hub, src StatusFiller) pb.EventServiceClient {
	t.Helper()
	addr := serveWith(t, h, Options{Version: "test-version", MaxSubscribersPerPeer: 1 << 10, Status: []StatusFiller{src}})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewEventServiceClient(conn)
}

// subscribe opens a stream and waits until the server has registered it.
func subscribe(t *testing.T, ctx context.Context, c pb.EventServiceClient, req *pb.SubscribeRequest) (grpc.ServerStreamingClient[pb.SubscribeResponse], uint64) {
	t.Helper()
	stream, err := c.Subscribe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	md, err := stream.Header()
	if err != nil {
		t.Fatal(err)
	}
	startSeq, err := strconv.ParseUint(first(md, HeaderStartSequence), 10, 64)
	if err != nil {
		t.Fatalf("start sequence header: %v", err)
	}
	return stream, startSeq
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// tally reads a stream until it has accounted for every sequence up to last,
// checking that events and gaps are dense from startSeq.
type tally struct {
	events   []*pb.FileCreatedEvent
	gapped   uint64
	byReason map[pb.GapReason]uint64
	filtered uint64
	next     uint64
	runID    string
}

func read(t *testing.T, stream grpc.ServerStreamingClient[pb.SubscribeResponse], startSeq, last uint64, filtered bool) *tally {
	t.Helper()
	tl, err := readStream(stream, startSeq, last, filtered)
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

// readStream is read for goroutines other than the test's.
func readStream(stream grpc.ServerStreamingClient[pb.SubscribeResponse], startSeq, last uint64, filtered bool) (*tally, error) {
	tl := &tally{next: startSeq, byReason: map[pb.GapReason]uint64{}}
	for tl.next <= last {
		resp, err := stream.Recv()
		if err != nil {
			return nil, fmt.Errorf("recv at sequence %d of %d: %w", tl.next, last, err)
		}
		tl.runID = resp.RunId
		tl.filtered += resp.FilteredCount
		// Events and gaps interleave by sequence; walk both in order.
		ei, gi := 0, 0
		for ei < len(resp.Events) || gi < len(resp.Gaps) {
			if gi < len(resp.Gaps) && (ei == len(resp.Events) || resp.Gaps[gi].FirstSequence < resp.Events[ei].Sequence) {
				g := resp.Gaps[gi]
				if g.FirstSequence != tl.next {
					return nil, fmt.Errorf("gap %v, want it to start at %d", g, tl.next)
				}
				tl.gapped += g.LastSequence - g.FirstSequence + 1
				tl.byReason[g.Reason] += g.LastSequence - g.FirstSequence + 1
				tl.next = g.LastSequence + 1
				gi++
				continue
			}
			ev := resp.Events[ei]
			if filtered && ev.Sequence > tl.next {
				tl.next = ev.Sequence
			}
			if ev.Sequence != tl.next {
				return nil, fmt.Errorf("event %d, want %d", ev.Sequence, tl.next)
			}
			tl.events = append(tl.events, ev)
			tl.next++
			ei++
		}
	}
	return tl, nil
}

// TestSubscribeSynthetic runs the synthetic source into the hub and two
// real clients, which must both see the same dense stream.
func TestSubscribeSynthetic(t *testing.T) {
	h := hub.New("run-1", hub.Options{})
	src := synthetic.New(synthetic.Options{Rate: 50_000})
	c := start(t, h, src)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s1, start1 := subscribe(t, ctx, c, &pb.SubscribeRequest{})
	s2, start2 := subscribe(t, ctx, c, &pb.SubscribeRequest{MaxBatchSize: 10, MaxBatchDelayMs: 1})
	if start1 != 1 || start2 != 1 {
		t.Fatalf("start sequences %d, %d; want 1", start1, start2)
	}
	srcCtx, stopSource := context.WithTimeout(ctx, 300*time.Millisecond)
	defer stopSource()
	if err := src.Run(srcCtx, h); err != nil {
		t.Fatal(err)
	}
	last := h.LastSequence()
	if last < 5000 {
		t.Fatalf("only %d events produced", last)
	}
	var wg sync.WaitGroup
	var t1, t2 *tally
	var err1, err2 error
	wg.Go(func() { t1, err1 = readStream(s1, start1, last, false) })
	wg.Go(func() { t2, err2 = readStream(s2, start2, last, false) })
	wg.Wait()
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	for i, tl := range []*tally{t1, t2} {
		if uint64(len(tl.events)) != last || tl.gapped != 0 || tl.runID != "run-1" {
			t.Errorf("client %d: %d events, %d gapped, run %q; want %d, 0, run-1", i, len(tl.events), tl.gapped, tl.runID, last)
		}
	}
	for i := range t1.events {
		if !bytes.Equal(t1.events[i].Path, t2.events[i].Path) {
			t.Fatalf("clients differ at %d", i)
		}
	}

	st, err := c.GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.RunId != "run-1" || st.Source != "synthetic" || st.LastSequence != last || st.LoaderVersion != "test-version" ||
		len(st.Subscribers) != 2 || st.Subscribers[0].Delivered != last || st.KernelRelease == "" || st.Loss == nil {
		t.Errorf("status = %v", st)
	}
}

// TestOddPathsRoundTrip sends paths that are not valid UTF-8, contain
// control characters or are PATH_MAX long through real gRPC.
func TestOddPathsRoundTrip(t *testing.T) {
	h := hub.New("run", hub.Options{})
	c := start(t, h, staticStatus{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, startSeq := subscribe(t, ctx, c, &pb.SubscribeRequest{MaxBatchDelayMs: 1})

	paths := [][]byte{
		[]byte("/tmp/\xff\xfe\x80not-utf8"),
		[]byte("/tmp/new\nline"),
		[]byte("/tmp/nul-free\x01\x1b[31mescape"),
		[]byte(`/tmp/quote"'back\slash`),
		[]byte("/tmp/ünïcödé"),
		append([]byte("/"), bytes.Repeat([]byte{'p'}, 4094)...), // 4095 bytes: PATH_MAX less the NUL
	}
	var evs []*pb.FileCreatedEvent
	for i, p := range paths {
		evs = append(evs, &pb.FileCreatedEvent{Path: p, Comm: []byte("c\xffmm"), Pid: uint32(i + 1)})
	}
	h.Publish(evs)
	tl := read(t, stream, startSeq, h.LastSequence(), false)
	for i, ev := range tl.events {
		if !bytes.Equal(ev.Path, paths[i]) || string(ev.Comm) != "c\xffmm" {
			t.Errorf("event %d: path %q comm %q", i, ev.Path, ev.Comm)
		}
	}
}

func TestOverflowCloseEndsStream(t *testing.T) {
	h := hub.New("run", hub.Options{QueueSize: 100})
	c := start(t, h, staticStatus{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, _ := subscribe(t, ctx, c, &pb.SubscribeRequest{OverflowPolicy: pb.OverflowPolicy_OVERFLOW_POLICY_CLOSE})
	evs := make([]*pb.FileCreatedEvent, 101)
	for i := range evs {
		evs[i] = &pb.FileCreatedEvent{Path: []byte("/x")}
	}
	h.Publish(evs)
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stream ended with %v, want RESOURCE_EXHAUSTED", err)
		}
		break
	}
	var loss pb.LossCounters
	h.Loss(&loss)
	if loss.SubscriberDropped != 101 {
		t.Errorf("subscriber_dropped = %d, want 101", loss.SubscriberDropped)
	}
}

func TestInvalidArgument(t *testing.T) {
	h := hub.New("run", hub.Options{})
	c := start(t, h, staticStatus{})
	tests := []struct {
		name string
		req  *pb.SubscribeRequest
	}{
		{"unknown policy", &pb.SubscribeRequest{OverflowPolicy: 99}},
		{"delay too long", &pb.SubscribeRequest{MaxBatchDelayMs: 3_600_000}},
		{"bad glob", &pb.SubscribeRequest{Filter: &pb.Filter{PathGlobs: []string{"["}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stream, err := c.Subscribe(ctx, tt.req)
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("error = %v, want INVALID_ARGUMENT", err)
			}
		})
	}
}

func TestFilterOverGRPC(t *testing.T) {
	h := hub.New("run", hub.Options{})
	c := start(t, h, staticStatus{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, startSeq := subscribe(t, ctx, c, &pb.SubscribeRequest{
		MaxBatchDelayMs: 1,
		Filter:          &pb.Filter{PathPrefixes: [][]byte{[]byte("/home/")}, Uids: []uint32{1000}},
	})
	h.Publish([]*pb.FileCreatedEvent{
		{Path: []byte("/home/a"), Uid: 1000},
		{Path: []byte("/tmp/b"), Uid: 1000},
		{Path: []byte("/home/c"), Uid: 0},
		{Path: []byte("/home/d"), Uid: 1000},
	})
	tl := read(t, stream, startSeq, h.LastSequence(), true)
	if len(tl.events) != 2 || string(tl.events[0].Path) != "/home/a" || string(tl.events[1].Path) != "/home/d" || tl.filtered != 2 {
		t.Errorf("got %d events, %d filtered", len(tl.events), tl.filtered)
	}
}

// TestResumeOverGRPC reconnects with the run id and the last sequence seen
// and must continue exactly after it.
func TestResumeOverGRPC(t *testing.T) {
	h := hub.New("run", hub.Options{ReplaySize: 1000})
	c := start(t, h, staticStatus{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs := func(n int) []*pb.FileCreatedEvent {
		out := make([]*pb.FileCreatedEvent, n)
		for i := range out {
			out[i] = &pb.FileCreatedEvent{Path: []byte("/r")}
		}
		return out
	}
	h.Publish(evs(50))
	stream, startSeq := subscribe(t, ctx, c, &pb.SubscribeRequest{ResumeRunId: "run", ResumeAfterSequence: 20, MaxBatchDelayMs: 1})
	if startSeq != 21 {
		t.Fatalf("start sequence %d, want 21", startSeq)
	}
	h.Publish(evs(10))
	tl := read(t, stream, startSeq, 60, false)
	if len(tl.events) != 40 || tl.events[0].Sequence != 21 {
		t.Errorf("resumed stream: %d events from %d", len(tl.events), tl.events[0].Sequence)
	}
}

func TestShutdownEndsStreams(t *testing.T) {
	h := hub.New("run", hub.Options{})
	c := start(t, h, staticStatus{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, _ := subscribe(t, ctx, c, &pb.SubscribeRequest{MaxBatchDelayMs: 60_000})
	h.Publish([]*pb.FileCreatedEvent{{Path: []byte("/last")}})
	h.Close()
	resp, err := stream.Recv()
	if err != nil || len(resp.Events) != 1 {
		t.Fatalf("queued event not delivered before shutdown: %v", err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stream ended with %v, want UNAVAILABLE", err)
	}
	late, err := c.Subscribe(ctx, &pb.SubscribeRequest{})
	if err == nil {
		_, err = late.Recv()
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("subscribe after shutdown: %v, want UNAVAILABLE", err)
	}
}
