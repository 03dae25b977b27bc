package server

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// rawCodec sends []byte as the request as it is, so that the fuzzer can
// send the server bytes no protobuf library would produce.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// FuzzSubscribeRequest sends arbitrary bytes as a SubscribeRequest to a
// real server. Each must either subscribe (headers arrive) or fail with
// INVALID_ARGUMENT (bad options) or INTERNAL (gRPC could not decode it);
// nothing may panic or hang. Requests that decode and validate are also
// run through a subscription directly: filter, batching, resume.
func FuzzSubscribeRequest(f *testing.F) {
	for _, req := range []*pb.SubscribeRequest{
		{},
		{MaxBatchSize: 1, MaxBatchDelayMs: 1, OverflowPolicy: pb.OverflowPolicy_OVERFLOW_POLICY_CLOSE},
		{Filter: &pb.Filter{PathGlobs: []string{"/home/*/*.txt"}, Uids: []uint32{1000}, Comms: [][]byte{[]byte("cp")}}},
		{Filter: &pb.Filter{PathGlobs: []string{"[z-a]"}}},
		{ResumeRunId: "fuzz", ResumeAfterSequence: 3},
		{OverflowPolicy: 7, MaxBatchDelayMs: 1 << 31},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff, 0xff})

	h := hub.New("fuzz", hub.Options{QueueSize: 100})
	h.Publish(mixedEvents(10))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	gs := grpc.NewServer(ServerOption())
	New(h, Options{MaxSubscribers: 1 << 20}).Register(gs)
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})))
	if err != nil {
		f.Fatal(err)
	}
	defer conn.Close()
	desc := &grpc.StreamDesc{ServerStreams: true}
	srv := New(h, Options{})

	f.Fuzz(func(t *testing.T, raw []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stream, err := conn.NewStream(ctx, desc, pb.EventService_Subscribe_FullMethodName)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.SendMsg(&raw); err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		md, err := stream.Header()
		if err == nil && len(md.Get(HeaderRunID)) == 0 {
			var resp []byte
			err = stream.RecvMsg(&resp)
		}
		code := status.Code(err)
		if code != codes.OK && code != codes.InvalidArgument && code != codes.Internal {
			t.Fatalf("request %x: %v", raw, err)
		}
		cancel()

		var req pb.SubscribeRequest
		if proto.Unmarshal(raw, &req) != nil {
			return
		}
		opts, err := srv.subscribeOptions(&req)
		if (err == nil) != (code == codes.OK) {
			t.Fatalf("request %v: over gRPC %v, directly %v", &req, code, err)
		}
		if err != nil {
			return
		}
		runSubscription(t, opts)
	})
}

// runSubscription runs opts against a hub of its own: publish, a gap, and
// every message the subscription makes of them.
func runSubscription(t *testing.T, opts hub.SubscribeOptions) {
	h := hub.New("fuzz", hub.Options{QueueSize: 64, ReplaySize: 32})
	h.Publish(mixedEvents(40))
	s, err := h.Subscribe(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h.Publish(mixedEvents(200))
	h.PublishGap(pb.GapReason_GAP_REASON_PROGRAM_SKIPPED, 3)
	h.Close() // Next sends what is queued at once, then ErrClosed
	var m hub.Message
	for range 1000 {
		err := s.Next(context.Background(), &m)
		if errors.Is(err, hub.ErrClosed) || errors.Is(err, hub.ErrOverflow) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		m.Wire()
	}
	t.Fatal("subscription did not end")
}
