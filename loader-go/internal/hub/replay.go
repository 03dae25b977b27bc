package hub

import pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"

// replay keeps the most recent events and kernel gaps so that a client that
// reconnects with (run id, last sequence) can catch up. It holds at most
// capacity events (and at most capacity gaps) and at most capBytes of their
// EventCost.
type replay struct {
	items    deque[item]
	n        int // events held
	bytes    int // their EventCost
	capacity int // 0 disables replay
	capBytes int
	oldest   uint64 // lowest sequence still held, or the next sequence if empty
}

func (r *replay) add(it item) {
	if r.capacity == 0 {
		r.oldest = it.endSeq()
		return
	}
	if r.items.len() == 0 {
		r.oldest = it.firstSeq()
	}
	r.items.pushBack(it)
	if !it.isGap() {
		r.n += it.hi - it.lo
		r.bytes += it.b.cost(it.lo, it.hi)
	}
	r.trim()
}

func (r *replay) trim() {
	for r.items.len() > 0 && (r.n > r.capacity || r.bytes > r.capBytes || r.items.len() > r.capacity) {
		it := r.items.front()
		cut := 0
		if !it.isGap() {
			cut = it.b.cut(it.lo, it.hi-it.lo, r.n-r.capacity, r.bytes-r.capBytes)
		}
		if it.isGap() || cut == it.hi-it.lo || r.items.len() > r.capacity {
			if !it.isGap() {
				r.n -= it.hi - it.lo
				r.bytes -= it.b.cost(it.lo, it.hi)
			}
			r.oldest = it.endSeq()
			r.items.popFront()
			continue
		}
		r.bytes -= it.b.cost(it.lo, it.lo+cut)
		it.lo += cut
		r.n -= cut
	}
	if r.items.len() > 0 {
		r.oldest = r.items.front().firstSeq()
	}
}

// fill queues into q what the buffer holds after sequence after, preceded by
// a REPLAY_EXPIRED gap for anything older that it no longer holds. Replayed
// events bypass q's bounds (the replay buffer bounds them) but count towards
// them, so new events overflow until the subscriber has caught up.
func (r *replay) fill(q *queue, after uint64) {
	if after+1 < r.oldest {
		q.items.pushBack(item{gapFirst: after + 1, gapLast: r.oldest - 1,
			gapReason: pb.GapReason_GAP_REASON_REPLAY_EXPIRED})
	}
	for i := 0; i < r.items.len(); i++ {
		it := *r.items.at(i)
		if it.endSeq() <= after+1 {
			continue
		}
		if it.firstSeq() <= after {
			if it.isGap() {
				it.gapFirst = after + 1
			} else {
				it.lo = int(after + 1 - it.b.first)
			}
		}
		q.items.pushBack(it)
		if !it.isGap() {
			q.n += it.hi - it.lo
			q.bytes += it.b.cost(it.lo, it.hi)
		}
	}
}
