package server

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// serveWith serves h with opts on 127.0.0.1:0 and returns its address.
func serveWith(t *testing.T, h *hub.Hub, opts Options) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(ServerOption())
	New(h, opts).Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// dialFrom connects to addr from the loopback address local (127.0.0.0/8 is
// all loopback on Linux, so each address is another peer).
func dialFrom(t *testing.T, addr, local string, opts ...grpc.DialOption) pb.EventServiceClient {
	t.Helper()
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		return d.DialContext(ctx, "tcp", addr)
	}
	opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(dialer))
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewEventServiceClient(conn)
}

// TestMaxSubscribersPerPeer: one peer cannot open more than its share of
// streams; another peer still can, and a closed stream frees its slot.
func TestMaxSubscribersPerPeer(t *testing.T) {
	h := hub.New("run", hub.Options{})
	addr := serveWith(t, h, Options{MaxSubscribers: 10, MaxSubscribersPerPeer: 2})
	a := dialFrom(t, addr, "127.0.0.1")
	b := dialFrom(t, addr, "127.0.0.2")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first, cancelFirst := context.WithCancel(ctx)
	subscribe(t, first, a, &pb.SubscribeRequest{})
	subscribe(t, ctx, a, &pb.SubscribeRequest{})
	third, err := a.Subscribe(ctx, &pb.SubscribeRequest{})
	if err == nil {
		_, err = third.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "ip=127.0.0.1") ||
		!strings.Contains(err.Error(), "--max-subscribers-per-peer") {
		t.Fatalf("third stream of one peer: %v; want RESOURCE_EXHAUSTED naming the peer and --max-subscribers-per-peer", err)
	}
	subscribe(t, ctx, b, &pb.SubscribeRequest{}) // another peer
	st, err := b.GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Subscribers) != 3 || st.SubscribersRefused != 1 || st.SubscribersRefusedPerPeer != 1 || st.MaxSubscribersPerPeer != 2 {
		t.Errorf("status: %d subscribers, refused %d (per peer %d), max per peer %d; want 3, 1 (1), 2",
			len(st.Subscribers), st.SubscribersRefused, st.SubscribersRefusedPerPeer, st.MaxSubscribersPerPeer)
	}
	cancelFirst()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := a.Subscribe(ctx, &pb.SubscribeRequest{})
		if err == nil {
			if _, err = s.Header(); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after one stream closed, the peer still cannot subscribe: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStallTimeout: a client that stops reading while messages wait for it
// has its stream ended with a status that says why, its slot and queue freed;
// a client that keeps up, and then has nothing to read for longer than the
// timeout, keeps its stream.
func TestStallTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	h := hub.New("run", hub.Options{ReplaySize: 0})
	addr := serveWith(t, h, Options{StallTimeout: timeout})
	// Small fixed windows (no BDP growth), so that a few hundred kB fill them.
	stalled := dialFrom(t, addr, "127.0.0.1", grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	other := dialFrom(t, addr, "127.0.0.2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	readerStream, readerStart := subscribe(t, ctx, other, &pb.SubscribeRequest{MaxBatchDelayMs: 1})
	reader := &tallyStream{stream: readerStream, start: readerStart}
	stream, _ := subscribe(t, ctx, stalled, &pb.SubscribeRequest{})

	long := append([]byte("/"), bytes.Repeat([]byte{'x'}, 1000)...)
	deadline := time.Now().Add(20 * time.Second)
	var st *pb.GetStatusResponse
	for {
		if h.LastSequence() < 2000 {
			evs := make([]*pb.FileCreatedEvent, 100)
			for i := range evs {
				evs[i] = &pb.FileCreatedEvent{Path: long}
			}
			h.Publish(evs)
		}
		if err := reader.readUntil(h.LastSequence()); err != nil {
			t.Fatalf("reader: %v", err)
		}
		var err error
		if st, err = other.GetStatus(ctx, &pb.GetStatusRequest{}); err != nil {
			t.Fatal(err)
		}
		if st.SubscribersStalled > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(timeout / 10)
	}
	if st.SubscribersStalled != 1 || st.StallTimeoutMs != uint64(timeout.Milliseconds()) {
		t.Fatalf("status: %d stalled, stall timeout %d ms; want 1, %d", st.SubscribersStalled, st.StallTimeoutMs, timeout.Milliseconds())
	}
	published := h.LastSequence()
	// The stalled stream is gone from the server, though its client has not
	// read anything yet; the reader's stays.
	for time.Now().Before(deadline) && len(st.Subscribers) != 1 {
		time.Sleep(10 * time.Millisecond)
		st, _ = other.GetStatus(ctx, &pb.GetStatusRequest{})
	}
	if len(st.Subscribers) != 1 || !strings.HasPrefix(st.Subscribers[0].Peer, "tcp:127.0.0.2:") {
		t.Errorf("subscribers after the stall: %v; want only the reader", st.Subscribers)
	}
	// The stalled client, reading at last, gets what was sent and then the
	// reason.
	var got int
	var err error
	for {
		var m *pb.SubscribeResponse
		if m, err = stream.Recv(); err != nil {
			break
		}
		got += len(m.Events)
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "subscriber stalled") ||
		!strings.Contains(err.Error(), "--stall-timeout") {
		t.Errorf("stalled stream ended with %v; want RESOURCE_EXHAUSTED saying it stalled", err)
	}
	if got == 0 || uint64(got) >= published {
		t.Errorf("stalled client got %d of %d events before the end; want some, not all", got, published)
	}
	// The reader, with nothing to read for longer than the timeout, keeps
	// its stream.
	time.Sleep(3 * timeout)
	h.Publish(mixedEvents(5))
	if err := reader.readUntil(h.LastSequence()); err != nil {
		t.Fatalf("reader after %v without events: %v", 3*timeout, err)
	}
	if n := len(reader.tally.events); uint64(n) != h.LastSequence() {
		t.Errorf("reader got %d events, want %d", n, h.LastSequence())
	}
}
