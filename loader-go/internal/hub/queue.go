package hub

import (
	"sync"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// queue is one subscriber's bounded queue. The hub pushes with push and
// pushGap and never blocks; the subscriber pops under mu. Capacity bounds the
// queued events and capBytes their EventCost; the overflow policy applies
// when either would be exceeded. Gaps are not counted against them, but a run of gap items
// with no events between them is kept as at most one item per reason
// (packGaps), so a queue holds at most about (capacity + 1) x reasons gap
// items whatever the kernel reports while its subscriber is stalled.
//
// Events the overflow policy discards leave holes in the queued sequence
// numbers; the subscriber reports every hole as a SUBSCRIBER_OVERFLOW gap,
// so a queue needs no bookkeeping per drop.
type queue struct {
	mu       sync.Mutex
	items    deque[item]
	n        int // queued events
	bytes    int // their EventCost
	capacity int
	capBytes int
	policy   pb.OverflowPolicy
	offered  uint64 // one past the highest sequence pushed so far
	dropped  uint64 // events discarded by the overflow policy
	err      error  // set once: ErrOverflow or ErrClosed
	notify   chan struct{}
}

func newQueue(capacity, capBytes int, policy pb.OverflowPolicy, next uint64) *queue {
	return &queue{
		capacity: capacity,
		capBytes: capBytes,
		policy:   policy,
		offered:  next,
		notify:   make(chan struct{}, 1),
	}
}

// wake tells the subscriber, if it waits, that the queue changed.
func (q *queue) wake() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// push offers the events b.events[lo:hi] and applies the overflow policy if
// they do not fit. It returns how many events it discarded.
func (q *queue) push(b *batch, lo, hi int) (dropped int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return 0
	}
	q.offered = b.first + uint64(hi)
	n, cost := hi-lo, b.cost(lo, hi)
	space, spaceBytes := max(q.capacity-q.n, 0), max(q.capBytes-q.bytes, 0)
	if n > space || cost > spaceBytes {
		switch q.policy {
		case pb.OverflowPolicy_OVERFLOW_POLICY_CLOSE:
			dropped = q.n + n
			q.closeLocked(ErrOverflow)
			q.dropped += uint64(dropped)
			return dropped
		case pb.OverflowPolicy_OVERFLOW_POLICY_DROP_OLDEST:
			// Keep the newest of the offered that fit an empty queue,
			// then make room for them.
			keep := b.fitBack(hi, min(n, q.capacity), q.capBytes)
			dropped = n - keep
			lo, n = hi-keep, keep
			cost = b.cost(lo, hi)
			dropped += q.dropOldest(q.n+n-q.capacity, q.bytes+cost-q.capBytes)
		default: // DROP_NEWEST
			keep := b.fitFront(lo, min(n, space), spaceBytes)
			dropped = n - keep
			hi, n = lo+keep, keep
			cost = b.cost(lo, hi)
		}
		q.dropped += uint64(dropped)
	}
	if n > 0 {
		q.items.pushBack(item{b: b, lo: lo, hi: hi})
		q.n += n
		q.bytes += cost
	}
	q.wake()
	return dropped
}

// pushGap queues a gap. Gaps bypass the capacity: dropping one would turn a
// known loss into a mislabelled one. It joins the trailing run of gaps.
func (q *queue) pushGap(first, last uint64, reason pb.GapReason) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return
	}
	q.offered = last + 1
	q.items.pushBack(item{gapFirst: first, gapLast: last, gapReason: reason})
	start := q.items.len() - 1
	for start > 0 && q.items.at(start-1).isGap() {
		start--
	}
	if groups := q.packGaps(start, q.items.len()); groups != nil {
		for k, g := range groups {
			*q.items.at(start + k) = g
		}
		for q.items.len() > start+len(groups) {
			q.items.popBack()
		}
	}
	q.wake()
}

// packGaps returns the gap items items[i:j] as at most one item per reason,
// in the order the reasons first appear, numbered contiguously from the
// first one's first sequence; nil if they are that already. The sequence
// numbers of a run with no events between its gaps are interchangeable:
// each gap was numbered when its loss was detected, and the numbers between
// them that no item covers are what the overflow policy discarded, which the
// subscriber reports after the run (overflowUntil) as before. So the count
// per reason, and of the discarded, is kept exactly; only where in the run
// each number falls changes.
func (q *queue) packGaps(i, j int) []item {
	if j-i < 2 {
		return nil
	}
	var groups []item
	for k := i; k < j; k++ {
		it := q.items.at(k)
		n := it.gapLast - it.gapFirst + 1
		found := false
		for g := range groups {
			if groups[g].gapReason == it.gapReason {
				groups[g].gapLast += n // a size for now
				found = true
				break
			}
		}
		if !found {
			groups = append(groups, item{gapLast: n, gapReason: it.gapReason})
		}
	}
	if len(groups) == j-i && q.items.at(j-1).gapLast-q.items.at(i).gapFirst+1 == sumSizes(groups) {
		return nil // one item per reason, contiguous already
	}
	next := q.items.at(i).gapFirst
	for g := range groups {
		n := groups[g].gapLast
		groups[g].gapFirst, groups[g].gapLast = next, next+n-1
		next += n
	}
	return groups
}

func sumSizes(groups []item) uint64 {
	var n uint64
	for _, g := range groups {
		n += g.gapLast
	}
	return n
}

// dropOldest discards the oldest queued events until at least k of them and
// at least bytes of their EventCost are gone (or the queue has no events
// left), and returns how many it discarded.
func (q *queue) dropOldest(k, bytes int) int {
	done, doneBytes := 0, 0
	for i := 0; (done < k || doneBytes < bytes) && i < q.items.len(); i++ {
		it := q.items.at(i)
		if it.isGap() {
			continue
		}
		m := it.b.cut(it.lo, it.hi-it.lo, k-done, bytes-doneBytes)
		doneBytes += it.b.cost(it.lo, it.lo+m)
		it.lo += m
		done += m
	}
	q.n -= done
	q.bytes -= doneBytes
	q.compactFront()
	return done
}

// compactFront removes emptied event items from the front run of gaps and
// empty items, keeping the gaps in order, so a stalled subscriber's queue
// does not grow with husks.
func (q *queue) compactFront() {
	j := 0
	for j < q.items.len() {
		it := q.items.at(j)
		if !it.isGap() && it.lo < it.hi {
			break
		}
		j++
	}
	w := j
	for r := j - 1; r >= 0; r-- {
		if q.items.at(r).isGap() {
			w--
			*q.items.at(w) = *q.items.at(r)
		}
	}
	for ; w > 0; w-- {
		q.items.popFront()
	}
	// The gaps left at the front form one run: pack it (the events the
	// overflow policy discarded around them come after it).
	g := 0
	for g < q.items.len() && q.items.at(g).isGap() {
		g++
	}
	if groups := q.packGaps(0, g); groups != nil {
		for k, it := range groups {
			*q.items.at(g - len(groups) + k) = it
		}
		for range g - len(groups) {
			q.items.popFront()
		}
	}
}

// close ends the queue with err unless it has ended already.
func (q *queue) close(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closeLocked(err)
}

func (q *queue) closeLocked(err error) {
	if q.err != nil {
		return
	}
	q.err = err
	if err == ErrOverflow {
		for q.items.len() > 0 {
			q.items.popFront()
		}
		q.n, q.bytes = 0, 0
	}
	q.wake()
}
