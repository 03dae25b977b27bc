// Package server implements the filewatcher.v1.EventService gRPC service on
// top of a hub.
package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
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

// Defaults of Options. Each stream costs a queue of up to
// --subscriber-queue-bytes, so the caps bound the loader's memory (see
// hub.DefaultQueueBytes).
const (
	DefaultMaxSubscribers        = 16
	DefaultMaxSubscribersPerPeer = 8
	DefaultStallTimeout          = time.Minute
)

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
	// MaxSubscribersPerPeer caps the streams of one peer (access.Identity),
	// so that one client cannot take every slot. Zero means
	// DefaultMaxSubscribersPerPeer.
	MaxSubscribersPerPeer int
	// StallTimeout ends a stream, with RESOURCE_EXHAUSTED, once a message has
	// waited this long for the client to read it, freeing its queue and its
	// slot; the client can resume where it stopped. Zero: never (the
	// loader's --stall-timeout defaults to DefaultStallTimeout).
	StallTimeout time.Duration
	// Status complete status reports, in order.
	Status []StatusFiller
}

// Server serves EventService.
type Server struct {
	pb.UnimplementedEventServiceServer
	hub  *hub.Hub
	opts Options

	mu          sync.Mutex
	subscribers int            // open streams, including those being set up
	perPeer     map[string]int // open streams by access.Identity

	refused        atomic.Uint64 // Subscribe calls refused by either cap
	refusedPerPeer atomic.Uint64 // of which by the per-peer cap
	stalled        atomic.Uint64 // streams ended by StallTimeout
}

// New returns a server for h.
func New(h *hub.Hub, opts Options) *Server {
	if opts.MaxSubscribers <= 0 {
		opts.MaxSubscribers = DefaultMaxSubscribers
	}
	if opts.MaxSubscribersPerPeer <= 0 {
		opts.MaxSubscribersPerPeer = DefaultMaxSubscribersPerPeer
	}
	return &Server{hub: h, opts: opts, perPeer: map[string]int{}}
}

// Register adds the service to g, which must have been created with
// ServerOption.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterEventServiceServer(g, s)
}

// Subscribe streams batches of events and gaps until the client goes away,
// the server shuts down (UNAVAILABLE), or the stream is ended
// (RESOURCE_EXHAUSTED) by the CLOSE overflow policy or because the client
// stalled.
func (s *Server) Subscribe(req *pb.SubscribeRequest, stream grpc.ServerStreamingServer[pb.SubscribeResponse]) error {
	ctx := stream.Context()
	opts, err := s.subscribeOptions(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	p, _ := peer.FromContext(ctx)
	id := access.Identity(p)
	if err := s.admit(id); err != nil {
		return err
	}
	opts.Peer = access.Describe(p)
	sub, err := s.hub.Subscribe(opts)
	if err != nil {
		s.release(id)
		return status.Error(codes.Unavailable, "server shutting down")
	}
	header := metadata.Pairs(HeaderRunID, s.hub.RunID(), HeaderStartSequence, strconv.FormatUint(sub.Start(), 10))
	if err := stream.SendHeader(header); err != nil {
		sub.Close()
		s.release(id)
		return err
	}
	// The stream is served on its own goroutine, so that this one can end
	// it when a send blocks too long: returning ends the gRPC stream, which
	// cancels ctx and so unblocks that send (gRPC cancels for this reason).
	// The goroutine owns sub; once this handler has given up on it, it
	// starts no other send.
	st := &sendState{}
	done := make(chan error, 1)
	go func() {
		err := serve(ctx, sub, stream, st)
		sub.Close()
		s.release(id)
		done <- err
	}()
	if s.opts.StallTimeout <= 0 {
		return <-done
	}
	tick := time.NewTicker(max(s.opts.StallTimeout/4, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case now := <-tick.C:
			blocked, ok := st.abandonIfBlocked(now, s.opts.StallTimeout)
			if !ok {
				continue
			}
			s.stalled.Add(1)
			return status.Errorf(codes.ResourceExhausted,
				"subscriber stalled: a message waited %v for the client to read it (--stall-timeout %v), with %d events queued; resume after the last sequence received",
				blocked.Round(time.Millisecond), s.opts.StallTimeout, sub.Status().QueueDepth)
		}
	}
}

// sendState is shared by a stream's handler and its sending goroutine.
type sendState struct {
	mu        sync.Mutex
	since     time.Time // when the send in progress began; zero if none
	abandoned bool      // the handler has returned: send no more
}

// begin marks a send as started, unless the handler has given up.
func (st *sendState) begin() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.abandoned {
		return false
	}
	st.since = time.Now()
	return true
}

func (st *sendState) end() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.since = time.Time{}
}

// abandonIfBlocked gives up on the stream if a send has been in progress
// for at least timeout, and says for how long.
func (st *sendState) abandonIfBlocked(now time.Time, timeout time.Duration) (time.Duration, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.since.IsZero() || now.Sub(st.since) < timeout {
		return 0, false
	}
	st.abandoned = true
	return now.Sub(st.since), true
}

// serve sends sub's messages on stream until one of them ends it.
func serve(ctx context.Context, sub *hub.Subscription, stream grpc.ServerStreamingServer[pb.SubscribeResponse], st *sendState) error {
	var msg hub.Message
	for {
		err := sub.Next(ctx, &msg)
		switch {
		case err == nil:
			if !st.begin() {
				return nil // the handler ended the stream
			}
			// SendMsg, not Send: the codec encodes a *hub.Message.
			err := stream.SendMsg(&msg)
			st.end()
			if err != nil {
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

// admit takes a stream slot for the peer id, or says why there is none.
func (s *Server) admit(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subscribers >= s.opts.MaxSubscribers {
		s.refused.Add(1)
		return status.Errorf(codes.ResourceExhausted, "too many subscribers: %d streams are open, the loader allows %d (--max-subscribers)",
			s.subscribers, s.opts.MaxSubscribers)
	}
	if n := s.perPeer[id]; n >= s.opts.MaxSubscribersPerPeer {
		s.refused.Add(1)
		s.refusedPerPeer.Add(1)
		return status.Errorf(codes.ResourceExhausted, "too many subscribers from %s: it has %d streams open, the loader allows %d per peer (--max-subscribers-per-peer)",
			id, n, s.opts.MaxSubscribersPerPeer)
	}
	s.subscribers++
	s.perPeer[id]++
	return nil
}

func (s *Server) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscribers--
	if s.perPeer[id]--; s.perPeer[id] == 0 {
		delete(s.perPeer, id)
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

		MaxSubscribersPerPeer:     uint32(s.opts.MaxSubscribersPerPeer),
		SubscribersRefusedPerPeer: s.refusedPerPeer.Load(),
		SubscribersStalled:        s.stalled.Load(),
		StallTimeoutMs:            uint64(max(s.opts.StallTimeout, 0).Milliseconds()),
	}
	events, bytes := s.hub.ReplayHeld()
	resp.ReplayEvents, resp.ReplayBytes = uint64(events), uint64(bytes)
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
