// Package server implements the filewatcher.v1.EventService gRPC service on
// top of a hub.
package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/access"
	"github.com/filewatcher/filewatcher/loader-go/internal/filter"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Response header keys sent when a subscription starts, before any message:
// the run and the first sequence the stream accounts for. A client that
// waits for the header knows it is subscribed.
const (
	HeaderRunID         = "filewatcher-run-id"
	HeaderStartSequence = "filewatcher-start-sequence"
)

// MaxBatchDelay bounds SubscribeRequest.max_batch_delay_ms.
const MaxBatchDelay = time.Minute

// DefaultMaxSubscribers is the subscriber cap when Options leaves it zero.
const DefaultMaxSubscribers = 64

// StatusFiller adds its part of a status report: the event source's, the
// access guard's.
type StatusFiller interface {
	FillStatus(*pb.GetStatusResponse)
}

// Options configures a Server.
type Options struct {
	// Version is the loader's version.
	Version string
	// MaxSubscribers caps concurrent Subscribe streams; more are refused
	// with RESOURCE_EXHAUSTED. Zero means DefaultMaxSubscribers.
	MaxSubscribers int
	// Status complete status reports, in order.
	Status []StatusFiller
}

// Server serves EventService.
type Server struct {
	pb.UnimplementedEventServiceServer
	hub  *hub.Hub
	opts Options

	subscribers atomic.Int64  // open streams, including those being set up
	refused     atomic.Uint64 // Subscribe calls refused by the cap
}

// New returns a server for h.
func New(h *hub.Hub, opts Options) *Server {
	if opts.MaxSubscribers <= 0 {
		opts.MaxSubscribers = DefaultMaxSubscribers
	}
	return &Server{hub: h, opts: opts}
}

// Register adds the service to g, which must have been created with
// ServerOption.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterEventServiceServer(g, s)
}

// Subscribe streams batches of events and gaps until the client goes away,
// the server shuts down (UNAVAILABLE) or the CLOSE overflow policy ends the
// stream (RESOURCE_EXHAUSTED).
func (s *Server) Subscribe(req *pb.SubscribeRequest, stream grpc.ServerStreamingServer[pb.SubscribeResponse]) error {
	ctx := stream.Context()
	opts, err := s.subscribeOptions(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if n := s.subscribers.Add(1); n > int64(s.opts.MaxSubscribers) {
		s.subscribers.Add(-1)
		s.refused.Add(1)
		return status.Errorf(codes.ResourceExhausted, "too many subscribers: %d streams are open, the loader allows %d (--max-subscribers)", n-1, s.opts.MaxSubscribers)
	}
	defer s.subscribers.Add(-1)
	p, _ := peer.FromContext(ctx)
	opts.Peer = access.Describe(p)
	sub, err := s.hub.Subscribe(opts)
	if err != nil {
		return status.Error(codes.Unavailable, "server shutting down")
	}
	defer sub.Close()
	header := metadata.Pairs(HeaderRunID, s.hub.RunID(), HeaderStartSequence, strconv.FormatUint(sub.Start(), 10))
	if err := stream.SendHeader(header); err != nil {
		return err
	}
	var msg hub.Message
	for {
		err := sub.Next(ctx, &msg)
		switch {
		case err == nil:
			// SendMsg, not Send: the codec encodes a *hub.Message.
			if err := stream.SendMsg(&msg); err != nil {
				return err
			}
		case errors.Is(err, hub.ErrOverflow):
			return status.Error(codes.ResourceExhausted, "subscriber queue overflowed (overflow_policy CLOSE)")
		case errors.Is(err, hub.ErrClosed):
			return status.Error(codes.Unavailable, "server shutting down")
		default:
			return status.FromContextError(err).Err()
		}
	}
}

// subscribeOptions validates a request; its errors are INVALID_ARGUMENT
// messages for the client.
func (s *Server) subscribeOptions(req *pb.SubscribeRequest) (hub.SubscribeOptions, error) {
	if _, ok := pb.OverflowPolicy_name[int32(req.OverflowPolicy)]; !ok {
		return hub.SubscribeOptions{}, fmt.Errorf("unknown overflow_policy %d: want 0-3 (UNSPECIFIED, DROP_OLDEST, DROP_NEWEST, CLOSE)", req.OverflowPolicy)
	}
	if req.MaxBatchDelayMs > uint32(MaxBatchDelay.Milliseconds()) {
		return hub.SubscribeOptions{}, fmt.Errorf("max_batch_delay_ms %d exceeds %d", req.MaxBatchDelayMs, MaxBatchDelay.Milliseconds())
	}
	delay := time.Duration(req.MaxBatchDelayMs) * time.Millisecond
	if req.ResumeRunId == s.hub.RunID() && req.ResumeAfterSequence > s.hub.LastSequence() {
		return hub.SubscribeOptions{}, fmt.Errorf("resume_after_sequence %d is beyond the last sequence %d of run %s",
			req.ResumeAfterSequence, s.hub.LastSequence(), req.ResumeRunId)
	}
	match, err := filter.Compile(req.Filter)
	if err != nil {
		return hub.SubscribeOptions{}, fmt.Errorf("filter: %w", err)
	}
	return hub.SubscribeOptions{
		Policy:      req.OverflowPolicy,
		MaxEvents:   int(min(req.MaxBatchSize, hub.MaxMaxEvents)),
		MaxDelay:    delay,
		Match:       match,
		ResumeRunID: req.ResumeRunId,
		ResumeAfter: req.ResumeAfterSequence,
	}, nil
}

// GetStatus reports versions, loss counters, the source's health and the
// subscribers.
func (s *Server) GetStatus(ctx context.Context, _ *pb.GetStatusRequest) (*pb.GetStatusResponse, error) {
	resp := &pb.GetStatusResponse{
		RunId:              s.hub.RunID(),
		LoaderVersion:      s.opts.Version,
		KernelRelease:      kernelRelease(),
		LastSequence:       s.hub.LastSequence(),
		Loss:               &pb.LossCounters{},
		Subscribers:        s.hub.Subscribers(),
		MaxSubscribers:     uint32(s.opts.MaxSubscribers),
		SubscribersRefused: s.refused.Load(),
	}
	s.hub.Loss(resp.Loss)
	for _, f := range s.opts.Status {
		f.FillStatus(resp)
	}
	return resp, nil
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}
