package hub

import pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"

// batch is a run of events with consecutive sequence numbers, shared
// read-only by every queue and the replay buffer once published.
type batch struct {
	first  uint64 // sequence of events[0]
	events []*pb.FileCreatedEvent
	enc    wireBatch // encoded on first use by a subscriber
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
