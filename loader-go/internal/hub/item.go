package hub

import (
	"sort"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// EventFixedBytes is the memory an event takes besides its path and command
// name, rounded up: the message struct, its slot in the batch, the size
// classes its byte slices round up to, its encoding's framing and offset.
const EventFixedBytes = 256

// EventCost is the memory, in bytes, that holding ev in a queue or the
// replay buffer pins: the event and its cached wire encoding, which repeats
// the path and command name. Byte budgets are counted in it.
func EventCost(ev *pb.FileCreatedEvent) int {
	return 2*(len(ev.Path)+len(ev.Comm)) + EventFixedBytes
}

// batch is a run of events with consecutive sequence numbers, shared
// read-only by every queue and the replay buffer once published.
type batch struct {
	first  uint64 // sequence of events[0]
	events []*pb.FileCreatedEvent
	// cum[i] is the EventCost of events[:i], so that the cost of any run
	// of the batch is one subtraction.
	cum []int
	enc wireBatch // encoded on first use by a subscriber
}

// newBatch wraps events with their costs; the publisher numbers it.
func newBatch(events []*pb.FileCreatedEvent) *batch {
	b := &batch{events: events, cum: make([]int, len(events)+1)}
	for i, ev := range events {
		b.cum[i+1] = b.cum[i] + EventCost(ev)
	}
	return b
}

// cost is the EventCost of events[lo:hi].
func (b *batch) cost(lo, hi int) int { return b.cum[hi] - b.cum[lo] }

// fitFront is the largest k <= maxN such that events[lo:lo+k] cost at most
// budget.
func (b *batch) fitFront(lo, maxN, budget int) int {
	return sort.Search(maxN+1, func(k int) bool { return k > 0 && b.cost(lo, lo+k) > budget }) - 1
}

// fitBack is the largest k <= maxN such that events[hi-k:hi] cost at most
// budget.
func (b *batch) fitBack(hi, maxN, budget int) int {
	return sort.Search(maxN+1, func(k int) bool { return k > 0 && b.cost(hi-k, hi) > budget }) - 1
}

// cut is the smallest k <= maxN such that events[lo:lo+k] number at least n
// and cost at least bytes; maxN if none does.
func (b *batch) cut(lo, maxN, n, bytes int) int {
	return sort.Search(maxN, func(k int) bool { return k >= n && b.cost(lo, lo+k) >= bytes })
}

// item is one entry of a subscriber queue or of the replay buffer: either the
// events b.events[lo:hi] or, when b is nil, a gap of sequences
// [gapFirst, gapLast] for gapReason.
type item struct {
	b      *batch
	lo, hi int

	gapFirst, gapLast uint64
	gapReason         pb.GapReason
}

func (it *item) isGap() bool { return it.b == nil }

// firstSeq is the lowest sequence number the item covers.
func (it *item) firstSeq() uint64 {
	if it.isGap() {
		return it.gapFirst
	}
	return it.b.first + uint64(it.lo)
}

// endSeq is one past the highest sequence number the item covers.
func (it *item) endSeq() uint64 {
	if it.isGap() {
		return it.gapLast + 1
	}
	return it.b.first + uint64(it.hi)
}
