// Package hub numbers events and fans them out to subscribers.
//
// A source publishes batches of events and counts of events it knows it lost;
// the hub gives each event the next sequence number of the run (dense from 1),
// turns each loss into a gap that consumes as many sequence numbers, and hands
// both to every subscriber's bounded queue. Publishing never blocks on a
// subscriber: a full queue applies that subscriber's overflow policy, and
// whatever it discards reaches the subscriber as a SUBSCRIBER_OVERFLOW gap. So
// for every subscriber, sequence numbers = events delivered + gap sizes.
//
// Queues hold references to shared batches, so fan-out costs O(1) per batch
// and subscriber; filtering and message building happen on the subscriber's
// own goroutine (see Subscription.Next).
package hub

import (
	"errors"
	"sync"
	"sync/atomic"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// Default sizes, in events and in bytes of EventCost. The byte budgets bind
// first when paths are longer than about 110 bytes; the event counts bound
// the short-path case. Memory pinned by events is at most ReplayBytes plus,
// per subscriber, max(QueueBytes, ReplayBytes) (a resumed subscriber's queue
// starts with the replayed events).
const (
	DefaultQueueSize   = 65536
	DefaultReplaySize  = 65536
	DefaultQueueBytes  = 32 << 20
	DefaultReplayBytes = 32 << 20
	// MinBudgetBytes is the least byte budget allowed: it holds a few
	// events of the longest path (PATH_MAX), so a budget never refuses an
	// event outright.
	MinBudgetBytes = 64 << 10
)

var (
	// ErrOverflow ends a subscription whose policy is OVERFLOW_POLICY_CLOSE
	// when its queue overflows.
	ErrOverflow = errors.New("subscriber queue overflowed")
	// ErrClosed ends every subscription, once drained, after Hub.Close.
	ErrClosed = errors.New("hub closed")
)

// Options configures a Hub.
type Options struct {
	// QueueSize is the default capacity of a subscriber queue, in events.
	QueueSize int
	// QueueBytes is the default byte budget of a subscriber queue, in
	// EventCost: its overflow policy applies when either bound is reached.
	QueueBytes int
	// ReplaySize is how many recent events are kept for resuming clients;
	// 0 disables replay.
	ReplaySize int
	// ReplayBytes bounds the replay buffer in EventCost, besides ReplaySize.
	ReplayBytes int
}

// Hub assigns sequence numbers and fans events out. It is safe for
// concurrent use.
type Hub struct {
	runID      string
	queueSize  int
	queueBytes int

	mu     sync.Mutex // serializes publishing, so every queue sees sequence order
	next   uint64     // next sequence number to assign
	subs   []*Subscription
	nextID uint64
	replay replay
	closed bool

	lastSeq           atomic.Uint64
	ringbufFull       atomic.Uint64
	kprobeMissed      atomic.Uint64
	programSkipped    atomic.Uint64
	unexplained       atomic.Uint64
	loaderRestart     atomic.Uint64
	readErrors        atomic.Uint64
	subscriberDropped atomic.Uint64
	pathUnresolved    atomic.Uint64
}

// New returns a hub for the run runID.
func New(runID string, opts Options) *Hub {
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = DefaultQueueBytes
	}
	if opts.ReplayBytes <= 0 {
		opts.ReplayBytes = DefaultReplayBytes
	}
	return &Hub{
		runID:      runID,
		queueSize:  opts.QueueSize,
		queueBytes: opts.QueueBytes, // at least MinBudgetBytes: withDefaults
		next:       1,
		replay: replay{capacity: max(opts.ReplaySize, 0), capBytes: max(opts.ReplayBytes, MinBudgetBytes),
			oldest: 1},
	}
}

// Resume continues a run that an earlier loader process numbered up to
// next-1 and whose loss counters were loss (its checkpoint: see
// loader-go/internal/kernel). Nothing of it is in the replay buffer, so a
// client resuming from before next is told those sequences expired. Call it
// before anything is published or subscribed.
func (h *Hub) Resume(next uint64, loss *pb.LossCounters) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next = max(next, 1)
	h.lastSeq.Store(h.next - 1)
	h.replay.oldest = h.next
	h.ringbufFull.Store(loss.GetRingbufFull())
	h.kprobeMissed.Store(loss.GetKprobeMissed())
	h.readErrors.Store(loss.GetReadErrors())
	h.subscriberDropped.Store(loss.GetSubscriberDropped())
	h.pathUnresolved.Store(loss.GetPathUnresolved())
	h.programSkipped.Store(loss.GetProgramSkipped())
	h.unexplained.Store(loss.GetUnexplained())
	h.loaderRestart.Store(loss.GetLoaderRestart())
}

// AddLoss adds a gap of n events for reason to the counter l keeps for it:
// the one place that says which LossCounters field counts which gap.
func AddLoss(l *pb.LossCounters, reason pb.GapReason, n uint64) {
	switch reason {
	case pb.GapReason_GAP_REASON_RINGBUF_FULL:
		l.RingbufFull += n
	case pb.GapReason_GAP_REASON_READ_ERROR:
		l.ReadErrors += n
	case pb.GapReason_GAP_REASON_PROGRAM_SKIPPED:
		l.ProgramSkipped += n
	case pb.GapReason_GAP_REASON_UNEXPLAINED:
		l.Unexplained += n
	case pb.GapReason_GAP_REASON_LOADER_RESTART:
		l.LoaderRestart += n
	}
}

// RunID identifies this run; sequence numbers restart with every run.
func (h *Hub) RunID() string { return h.runID }

// LastSequence returns the last sequence number assigned, 0 if none.
func (h *Hub) LastSequence() uint64 { return h.lastSeq.Load() }

// Publish numbers events and queues them for every subscriber. The hub owns
// the events afterwards: they must not be modified again.
func (h *Hub) Publish(events []*pb.FileCreatedEvent) {
	if len(events) == 0 {
		return
	}
	unresolved := uint64(0)
	b := newBatch(events) // costs outside the lock
	h.mu.Lock()
	defer h.mu.Unlock()
	b.first = h.next
	for i, ev := range events {
		ev.Sequence = b.first + uint64(i)
		if ev.Flags&uint32(pb.EventFlag_EVENT_FLAG_PATH_UNRESOLVED) != 0 {
			unresolved++
		}
	}
	h.advance(uint64(len(events)))
	h.pathUnresolved.Add(unresolved)
	h.replay.add(item{b: b, hi: len(events)})
	dropped := 0
	for _, s := range h.subs {
		dropped += s.q.push(b, 0, len(events))
	}
	h.subscriberDropped.Add(uint64(dropped))
}

// PublishGap records that n events were lost for reason before reaching the
// hub: it consumes n sequence numbers and reports them to every subscriber.
func (h *Hub) PublishGap(reason pb.GapReason, n uint64) {
	if n == 0 {
		return
	}
	var add pb.LossCounters
	AddLoss(&add, reason, n)
	h.ringbufFull.Add(add.RingbufFull)
	h.readErrors.Add(add.ReadErrors)
	h.programSkipped.Add(add.ProgramSkipped)
	h.unexplained.Add(add.Unexplained)
	h.loaderRestart.Add(add.LoaderRestart)
	h.mu.Lock()
	defer h.mu.Unlock()
	first := h.next
	h.advance(n)
	last := h.next - 1
	h.replay.add(item{gapFirst: first, gapLast: last, gapReason: reason})
	for _, s := range h.subs {
		s.q.pushGap(first, last, reason)
	}
}

// CountMissedOpens records that the probe missed n calls of the open
// function (LossCounters.kprobe_missed). Each may or may not have created a
// file, so they are an upper bound on creations missed and consume no
// sequence numbers: numbering them would report every ordinary open missed
// (a hung NFS mount exhausts the kretprobe's instances) as a lost event.
func (h *Hub) CountMissedOpens(n uint64) {
	h.kprobeMissed.Add(n)
}

func (h *Hub) advance(n uint64) {
	h.next += n
	h.lastSeq.Store(h.next - 1)
}

// Loss fills l with the run's cumulative loss counters.
func (h *Hub) Loss(l *pb.LossCounters) {
	l.RingbufFull = h.ringbufFull.Load()
	l.KprobeMissed = h.kprobeMissed.Load()
	l.ReadErrors = h.readErrors.Load()
	l.SubscriberDropped = h.subscriberDropped.Load()
	l.PathUnresolved = h.pathUnresolved.Load()
	l.ProgramSkipped = h.programSkipped.Load()
	l.Unexplained = h.unexplained.Load()
	l.LoaderRestart = h.loaderRestart.Load()
}

// Subscribers describes the live subscriptions, oldest first.
func (h *Hub) Subscribers() []*pb.SubscriberStatus {
	h.mu.Lock()
	subs := append([]*Subscription(nil), h.subs...)
	h.mu.Unlock()
	out := make([]*pb.SubscriberStatus, 0, len(subs))
	for _, s := range subs {
		out = append(out, s.Status())
	}
	return out
}

// Close ends every subscription once it has drained its queue, and refuses
// new ones.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, s := range h.subs {
		s.q.close(ErrClosed)
	}
}

func (h *Hub) remove(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.subs {
		if x == s {
			h.subs = append(h.subs[:i], h.subs[i+1:]...)
			return
		}
	}
}

// ReplayHeld returns the events the replay buffer holds and their EventCost.
func (h *Hub) ReplayHeld() (events, bytes int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.replay.n, h.replay.bytes
}
