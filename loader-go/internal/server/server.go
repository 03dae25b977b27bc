// Package server implements the filewatcher.v1.EventService gRPC service on
// top of a hub.
package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

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

// StatusFiller adds an event source's part of a status report.
type StatusFiller interface {
	FillStatus(*pb.GetStatusResponse)
}

// Server serves EventService.
type Server struct {
	pb.UnimplementedEventServiceServer
	hub     *hub.Hub
	source  StatusFiller
	version string
}

// New returns a server for h. source completes status reports; version is
// the loader's version.
func New(h *hub.Hub, source StatusFiller, version string) *Server {
	return &Server{hub: h, source: source, version: version}
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
	opts, err := subscribeOptions(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		opts.Peer = p.Addr.Network() + ":" + p.Addr.String()
	}
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

func subscribeOptions(req *pb.SubscribeRequest) (hub.SubscribeOptions, error) {
	if _, ok := pb.OverflowPolicy_name[int32(req.OverflowPolicy)]; !ok {
		return hub.SubscribeOptions{}, fmt.Errorf("unknown overflow_policy %d", req.OverflowPolicy)
	}
	delay := time.Duration(req.MaxBatchDelayMs) * time.Millisecond
	if delay > MaxBatchDelay {
		return hub.SubscribeOptions{}, fmt.Errorf("max_batch_delay_ms %d exceeds %d", req.MaxBatchDelayMs, MaxBatchDelay.Milliseconds())
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
		RunId:         s.hub.RunID(),
		LoaderVersion: s.version,
		KernelRelease: kernelRelease(),
		LastSequence:  s.hub.LastSequence(),
		Loss:          &pb.LossCounters{},
		Subscribers:   s.hub.Subscribers(),
	}
	s.hub.Loss(resp.Loss)
	s.source.FillStatus(resp)
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
