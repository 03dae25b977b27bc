//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// subscription collects everything one Subscribe stream delivers.
type subscription struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	runIDs   map[string]bool
	events   []*fwv1.FileCreatedEvent
	gaps     []*fwv1.Gap
	filtered uint64
	err      error
}

// subscribe opens a stream with req and collects it in the background until
// the test ends. It returns once the loader sent the response headers, which
// it does after registering the subscriber: every file created afterwards is
// matched against this stream's filter.
func subscribe(t *testing.T, client fwv1.EventServiceClient, req *fwv1.SubscribeRequest) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.Subscribe(ctx, req)
	if err != nil {
		cancel()
		t.Fatalf("Subscribe: %v", err)
	}
	if _, err := stream.Header(); err != nil {
		cancel()
		t.Fatalf("Subscribe: waiting for the response headers: %v", err)
	}
	s := &subscription{cancel: cancel, done: make(chan struct{}), runIDs: map[string]bool{}}
	go s.collect(stream)
	t.Cleanup(s.stop)
	return s
}

func (s *subscription) collect(stream fwv1.EventService_SubscribeClient) {
	defer close(s.done)
	for {
		msg, err := stream.Recv()
		s.mu.Lock()
		if err != nil {
			if status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
				s.err = err
			}
			s.mu.Unlock()
			return
		}
		s.runIDs[msg.GetRunId()] = true
		s.events = append(s.events, msg.GetEvents()...)
		s.gaps = append(s.gaps, msg.GetGaps()...)
		s.filtered += msg.GetFilteredCount()
		s.mu.Unlock()
	}
}

func (s *subscription) stop() {
	s.cancel()
	<-s.done
}

// snapshot returns what arrived so far.
func (s *subscription) snapshot() (events []*fwv1.FileCreatedEvent, gaps []*fwv1.Gap, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*fwv1.FileCreatedEvent(nil), s.events...), append([]*fwv1.Gap(nil), s.gaps...), s.err
}

// waitPath waits until an event for path arrives and returns its index in
// the stream, or -1 after timeout.
func (s *subscription) waitPath(path []byte, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		events, _, err := s.snapshot()
		for i, e := range events {
			if bytes.Equal(e.GetPath(), path) {
				return i
			}
		}
		if err != nil || time.Now().After(deadline) {
			return -1
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runIDList returns the run ids seen on the stream.
func (s *subscription) runIDList() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.runIDs {
		ids = append(ids, id)
	}
	return ids
}

// filteredCount is the sum of the stream's filtered_count fields.
func (s *subscription) filteredCount() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filtered
}
