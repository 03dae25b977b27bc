package hub

import (
	"context"
	"sync/atomic"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// Batching defaults and limits of SubscribeOptions.
const (
	DefaultMaxEvents   = 256
	MaxMaxEvents       = 4096
	DefaultMaxDelay    = 20 * time.Millisecond
	DefaultMaxBytes    = 1 << 20
	eventOverheadBytes = 64 // fixed fields of an encoded event, rounded up
	gapBytes           = 32 // an encoded gap, rounded up (three varints and tags)
)

// SubscribeOptions configures a subscription. Zero values mean defaults.
type SubscribeOptions struct {
	// Peer describes the client, for status reports.
	Peer string
	// Policy applies when the queue is full; UNSPECIFIED means DROP_NEWEST.
	Policy pb.OverflowPolicy
	// QueueSize overrides the hub's queue capacity, in events.
	QueueSize int
	// QueueBytes overrides the hub's queue byte budget (EventCost).
	QueueBytes int
	// MaxEvents bounds the events per message.
	MaxEvents int
	// MaxDelay bounds how long a partial message waits for more events.
	MaxDelay time.Duration
	// MaxBytes bounds the approximate encoded size of a message, so that
	// long paths cannot exceed a client's receive limit (4 MiB in gRPC).
	MaxBytes int
	// Match selects events; nil selects all. It runs on the subscriber's
	// goroutine, outside any lock the publisher needs. Events it rejects are
	// counted in filtered_count.
	Match func(*pb.FileCreatedEvent) bool
	// ResumeRunID and ResumeAfter ask for the events after sequence
	// ResumeAfter of run ResumeRunID. A run other than the hub's starts live.
	ResumeRunID string
	ResumeAfter uint64
}

// Subscription is one subscriber's view of the stream. Next must be called
// from one goroutine at a time.
type Subscription struct {
	hub  *Hub
	id   uint64
	peer string
	q    *queue
	opts SubscribeOptions

	start     uint64 // first sequence this subscriber accounts for
	next      uint64 // next sequence this subscriber accounts for
	deadline  time.Time
	timer     *time.Timer
	filtered  uint64
	delivered atomic.Uint64
}

// Subscribe registers a subscriber. Close it when done.
func (h *Hub) Subscribe(opts SubscribeOptions) (*Subscription, error) {
	opts = withDefaults(opts, h.queueSize, h.queueBytes)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	h.nextID++
	s := &Subscription{
		hub:   h,
		id:    h.nextID,
		peer:  opts.Peer,
		q:     newQueue(opts.QueueSize, opts.QueueBytes, opts.Policy, h.next),
		opts:  opts,
		next:  h.next,
		timer: time.NewTimer(time.Hour),
	}
	s.timer.Stop()
	if opts.ResumeRunID == h.runID && opts.ResumeAfter < h.next-1 { // not +1: it may overflow
		h.replay.fill(s.q, opts.ResumeAfter)
		s.next = opts.ResumeAfter + 1
	}
	s.start = s.next
	h.subs = append(h.subs, s)
	return s, nil
}

func withDefaults(o SubscribeOptions, queueSize, queueBytes int) SubscribeOptions {
	if o.Policy == pb.OverflowPolicy_OVERFLOW_POLICY_UNSPECIFIED {
		o.Policy = pb.OverflowPolicy_OVERFLOW_POLICY_DROP_NEWEST
	}
	if o.QueueSize <= 0 {
		o.QueueSize = queueSize
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = queueBytes
	}
	o.QueueBytes = max(o.QueueBytes, MinBudgetBytes)
	if o.MaxEvents <= 0 {
		o.MaxEvents = DefaultMaxEvents
	}
	o.MaxEvents = min(o.MaxEvents, MaxMaxEvents)
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	return o
}

// ID identifies the subscription within the run.
func (s *Subscription) ID() uint64 { return s.id }

// Start returns the first sequence number the subscription accounts for:
// the next one to be assigned, or the one after the resume point.
func (s *Subscription) Start() uint64 { return s.start }

// Close deregisters the subscription and releases its queue.
func (s *Subscription) Close() {
	s.hub.remove(s)
	s.q.close(ErrClosed)
	s.q.mu.Lock()
	for s.q.items.len() > 0 {
		s.q.items.popFront()
	}
	s.q.n, s.q.bytes = 0, 0
	s.q.mu.Unlock()
	s.timer.Stop()
}

// Status describes the subscription.
func (s *Subscription) Status() *pb.SubscriberStatus {
	s.q.mu.Lock()
	defer s.q.mu.Unlock()
	return &pb.SubscriberStatus{
		Id:                 s.id,
		Peer:               s.peer,
		QueueDepth:         uint32(s.q.n),
		QueueCapacity:      uint32(s.q.capacity),
		QueueBytes:         uint64(s.q.bytes),
		QueueCapacityBytes: uint64(s.q.capBytes),
		Delivered:          s.delivered.Load(),
		Dropped:            s.q.dropped,
	}
}

// Next blocks until it has a message for the subscriber and fills m with it:
// up to MaxEvents matching events and the gaps among them, in sequence order.
// A partial message waits at most MaxDelay for more. m's slices are reused,
// so it must be sent (or Wire called) before Next is called again.
//
// Next returns ErrOverflow when the CLOSE policy ended the subscription,
// ErrClosed once the hub is closed and the queue drained, or ctx's error.
func (s *Subscription) Next(ctx context.Context, m *Message) error {
	q := s.q
	for {
		q.mu.Lock()
		if q.err == ErrOverflow {
			q.mu.Unlock()
			return ErrOverflow
		}
		pending := q.items.len() > 0 || q.offered > s.next
		if !pending && q.err != nil {
			q.mu.Unlock()
			return q.err
		}
		if pending && s.deadline.IsZero() {
			s.deadline = time.Now().Add(s.opts.MaxDelay)
		}
		if pending && (q.n >= s.opts.MaxEvents || q.err != nil || !time.Now().Before(s.deadline)) {
			s.fill(m)
			drained := q.items.len() == 0 && q.offered == s.next
			q.mu.Unlock()
			if drained {
				s.deadline = time.Time{}
			}
			// Filter outside the lock: a costly filter must not hold up
			// publishing. Filtered events count towards MaxEvents.
			if s.opts.Match != nil {
				s.filtered += m.filter(s.opts.Match)
			}
			if len(m.Response.Events) > 0 || len(m.Response.Gaps) > 0 {
				s.finish(&m.Response)
				return nil
			}
			continue // everything was filtered out
		}
		q.mu.Unlock()
		if err := s.wait(ctx); err != nil {
			return err
		}
	}
}

func (s *Subscription) wait(ctx context.Context) error {
	var expired <-chan time.Time
	if !s.deadline.IsZero() {
		s.timer.Reset(time.Until(s.deadline))
		defer s.timer.Stop()
		expired = s.timer.C
	}
	select {
	case <-s.q.notify:
	case <-expired:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// fill moves items from the queue into m; q.mu must be held. It neither
// filters nor encodes, so publishers are not held up.
func (s *Subscription) fill(m *Message) {
	q := s.q
	m.reset()
	resp := &m.Response
	size := 0
	for q.items.len() > 0 && len(resp.Events) < s.opts.MaxEvents && size < s.opts.MaxBytes {
		it := q.items.front()
		size += s.overflowUntil(resp, it.firstSeq())
		if it.isGap() {
			size += addGap(resp, it.gapFirst, it.gapLast, it.gapReason)
			s.next = it.gapLast + 1
			q.items.popFront()
			continue
		}
		lo := it.lo
		for it.lo < it.hi && len(resp.Events) < s.opts.MaxEvents && size < s.opts.MaxBytes {
			ev := it.b.events[it.lo]
			m.addEvent(it.b, it.lo)
			size += len(ev.Path) + len(ev.Comm) + eventOverheadBytes
			it.lo++
		}
		q.n -= it.lo - lo
		q.bytes -= it.b.cost(lo, it.lo)
		s.next = it.b.first + uint64(it.lo)
		if it.lo == it.hi {
			q.items.popFront()
		}
	}
	if q.items.len() == 0 {
		s.overflowUntil(resp, q.offered)
	}
}

// overflowUntil reports sequences from s.next up to end (exclusive) that
// were offered but are not queued: the overflow policy discarded them. It
// returns the bytes it added to the message.
func (s *Subscription) overflowUntil(resp *pb.SubscribeResponse, end uint64) int {
	if end > s.next {
		n := addGap(resp, s.next, end-1, pb.GapReason_GAP_REASON_SUBSCRIBER_OVERFLOW)
		s.next = end
		return n
	}
	return 0
}

// addGap appends a gap, merging it into the previous one when contiguous and
// of the same reason, and returns the bytes it added to the message (gaps
// count towards MaxBytes like events).
func addGap(resp *pb.SubscribeResponse, first, last uint64, reason pb.GapReason) int {
	if n := len(resp.Gaps); n > 0 {
		g := resp.Gaps[n-1]
		if g.Reason == reason && g.LastSequence+1 == first {
			g.LastSequence = last
			return 0
		}
	}
	resp.Gaps = append(resp.Gaps, &pb.Gap{FirstSequence: first, LastSequence: last, Reason: reason})
	return gapBytes
}

func (s *Subscription) finish(resp *pb.SubscribeResponse) {
	s.delivered.Add(uint64(len(resp.Events)))
	resp.RunId = s.hub.runID
	resp.FilteredCount = s.filtered
	s.filtered = 0
	if resp.Loss == nil {
		resp.Loss = &pb.LossCounters{}
	}
	s.hub.Loss(resp.Loss)
}
