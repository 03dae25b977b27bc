package kernel

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// simRing simulates, in simulated time, the ring buffer as the BPF program
// fills it and *ringbuf.Reader reads it: records are written without a
// wakeup, except that the one that brings the unread records to wakeAt wakes
// the reader (BPF_RB_FORCE_WAKEUP at 1/8 of the ring). A blocked reader wakes
// at that write or at its deadline, whichever comes first; a deadline
// expires early by early (epoll rounds its timeout down to milliseconds).
// After either wakeup the reader returns every record in the ring, and after
// a deadline's it then returns os.ErrDeadlineExceeded. Run's own work takes
// no simulated time.
type simRing struct {
	t        time.Time
	deadline time.Time
	end      time.Time // a reader that would block past end is closed
	early    time.Duration
	wakeAt   int
	writes   []time.Time // every record's write time, ascending
	lost     []time.Time // when the program counted a loss, ascending

	written, read int  // records written so far, and read
	reading       bool // returning what a wakeup found
	expired       bool // that wakeup was the deadline's

	waits, expiries int
	polls           []time.Time
}

func (r *simRing) now() time.Time { return r.t }

func (r *simRing) SetDeadline(t time.Time) { r.deadline = t }

// write admits every record written by r.t.
func (r *simRing) write() {
	for r.written < len(r.writes) && !r.writes[r.written].After(r.t) {
		r.written++
	}
}

func (r *simRing) ReadInto(rec *ringbuf.Record) error {
	for {
		r.write()
		if r.reading {
			if r.read < r.written {
				rec.RawSample = record([]byte("/"+strconv.Itoa(r.read)), "w", 1)
				r.read++
				rec.Remaining = r.written - r.read
				return nil
			}
			r.reading = false
			if r.expired {
				r.expired = false
				return os.ErrDeadlineExceeded
			}
		}
		// Block until the deadline or the write that forces a wakeup.
		wake, expire := r.deadline.Add(-r.early), true
		if wake.Before(r.t) {
			wake = r.t // a deadline in the past: epoll_wait with timeout 0
		}
		if i := r.read + r.wakeAt - 1; i < len(r.writes) && r.writes[i].Before(wake) {
			wake, expire = r.writes[i], false
			if wake.Before(r.t) {
				wake = r.t
			}
		}
		if wake.After(r.end) {
			return ringbuf.ErrClosed
		}
		if r.waits > 100_000 {
			return errors.New("the reader spins")
		}
		r.t = wake
		r.waits++
		if expire {
			r.expiries++
		}
		r.reading, r.expired = true, expire
	}
}

func (r *simRing) readLosses(lossCounts) (lossCounts, error) {
	r.polls = append(r.polls, r.t)
	n := 0
	for n < len(r.lost) && !r.lost[n].After(r.t) {
		n++
	}
	return lossCounts{ringbufFullPerCPU: []uint64{uint64(n)}}, nil
}

// simSink records what Run publishes, at what simulated time.
type simSink struct {
	ring *simRing
	log  []published
}

type published struct {
	at    time.Time
	event int // the record's index, or -1 for a gap
	gap   uint64
}

func (s *simSink) Publish(events []*pb.FileCreatedEvent) {
	for _, ev := range events {
		i, err := strconv.Atoi(string(ev.Path[1:]))
		if err != nil {
			panic(err)
		}
		s.log = append(s.log, published{at: s.ring.t, event: i})
	}
}

func (s *simSink) PublishGap(reason pb.GapReason, n uint64) {
	if n > 0 {
		s.log = append(s.log, published{at: s.ring.t, event: -1, gap: n})
	}
}

func (s *simSink) CountMissedOpens(uint64) {}

func runSim(t *testing.T, r *simRing) *simSink {
	t.Helper()
	s := &Source{log: slog.New(slog.DiscardHandler), records: r, readLosses: r.readLosses, timeNow: r.now}
	sink := &simSink{ring: r}
	if err := s.Run(t.Context(), sink); err != nil {
		t.Fatal(err)
	}
	return sink
}

var simStart = time.Unix(1000, 0)

func ms(f float64) time.Time { return simStart.Add(time.Duration(f * float64(time.Millisecond))) }

// TestRunIdle checks what an idle reader costs: after backing off, a wakeup
// every pollInterval, which polls, also when epoll wakes it early, and no
// spinning on a deadline that has just passed.
func TestRunIdle(t *testing.T) {
	for _, early := range []time.Duration{0, 900 * time.Microsecond} {
		t.Run(fmt.Sprint("early ", early), func(t *testing.T) {
			r := &simRing{t: simStart, end: ms(1000), early: early, wakeAt: 64}
			runSim(t, r)
			polls := r.polls[:len(r.polls)-1] // the last is Run's final one
			if len(polls) != 10 {
				t.Errorf("%d polls in 1 s: %v", len(polls), polls)
			}
			for i := 1; i < len(polls); i++ {
				if d := polls[i].Sub(polls[i-1]); d > pollInterval || d < pollInterval-time.Millisecond {
					t.Errorf("poll %d came %v after the one before", i, d)
				}
			}
			// Backing off from drainInterval: deadlines at 20 and 60 ms,
			// then one per poll. Spinning would be far more.
			want := 12
			if r.waits != r.expiries || r.waits != want {
				t.Errorf("%d wakeups (%d deadlines) in 1 s, want %d", r.waits, r.expiries, want)
			}
		})
	}
}

// TestRunLatency checks, in simulated time, that records written without a
// wakeup are published within drainInterval while files are being created
// and within pollInterval after a quiet spell, that a burst is read when it
// forces a wakeup, that every loss is published within pollInterval, and
// that a gap comes after every event written before the loss it reports.
func TestRunLatency(t *testing.T) {
	var writes, lost []time.Time
	for i := range 150 { // sparse: 4-13 ms apart
		writes = append(writes, ms(float64(i*10+3*(i%3)+1)))
	}
	for i := range 1000 { // a burst of 1000 in 10 ms
		writes = append(writes, ms(1600+float64(i)/100))
	}
	for i := range 40 { // then sparse again, 45 ms apart: the reader backs off in between
		writes = append(writes, ms(1700+float64(i)*45))
	}
	for _, at := range []float64{5.5, 333, 333.5, 1605, 1750} {
		lost = append(lost, ms(at))
	}
	for _, early := range []time.Duration{0, 900 * time.Microsecond} {
		t.Run(fmt.Sprint("early ", early), func(t *testing.T) {
			r := &simRing{t: simStart, end: ms(4000), early: early, wakeAt: 64, writes: writes, lost: lost}
			sink := runSim(t, r)

			next, gaps, quiet := 0, 0, 0
			for _, p := range sink.log {
				if p.event < 0 {
					// The gap reports the losses up to gaps + p.gap.
					for _, l := range lost[gaps : gaps+int(p.gap)] {
						if d := p.at.Sub(l); d > pollInterval {
							t.Errorf("loss at %v reported %v later", l.Sub(simStart), d)
						}
						if next < len(writes) && writes[next].Before(l) {
							t.Errorf("loss at %v reported before event %d written at %v", l.Sub(simStart), next, writes[next].Sub(simStart))
						}
					}
					gaps += int(p.gap)
					continue
				}
				if p.event != next {
					t.Fatalf("event %d published after event %d", p.event, next-1)
				}
				next++
				// Within drainInterval while files are created (this one
				// came at most drainInterval after the one before), else
				// within pollInterval, to which an idle reader backs off.
				bound := pollInterval
				if p.event > 0 && writes[p.event].Sub(writes[p.event-1]) <= drainInterval {
					bound = drainInterval
				}
				if d := p.at.Sub(writes[p.event]); d > bound {
					t.Errorf("event %d written at %v published %v later (bound %v)", p.event, writes[p.event].Sub(simStart), d, bound)
				}
				if p.event > 0 && writes[p.event].Sub(writes[p.event-1]) > drainInterval {
					quiet++
				}
			}
			if quiet != 41 {
				t.Errorf("%d events after a quiet spell, want 41: the burst's first and the 40 written 45 ms apart", quiet)
			}
			if next != len(writes) || gaps != len(lost) {
				t.Errorf("published %d events and %d losses, want %d and %d", next, gaps, len(writes), len(lost))
			}
			// The burst forces a wakeup every 64 records (one fewer if a
			// deadline drains it in between).
			if forced := r.waits - r.expiries; forced < 1000/64-1 || forced > 1000/64 {
				t.Errorf("%d forced wakeups", forced)
			}
			for i := 1; i < len(r.polls)-1; i++ {
				if d := r.polls[i].Sub(r.polls[i-1]); d < minPollInterval {
					t.Errorf("poll %d at %v, %v after the one before", i, r.polls[i].Sub(simStart), d)
				}
			}
		})
	}
}

// TestRunTrickleAfterBurst: an idle reader polls at 500 ms (TestRunIdle) and
// arms its next deadline 100 ms later; a burst 3 ms after the poll forces a
// wakeup, too soon for another poll, and a trickle follows. The trickle must
// be read within drainInterval, not at the deadline the idle reader armed.
func TestRunTrickleAfterBurst(t *testing.T) {
	var writes []time.Time
	for i := range 64 {
		writes = append(writes, ms(503+float64(i)/100))
	}
	for _, at := range []float64{505, 512, 520} {
		writes = append(writes, ms(at))
	}
	for _, early := range []time.Duration{0, 900 * time.Microsecond} {
		t.Run(fmt.Sprint("early ", early), func(t *testing.T) {
			r := &simRing{t: simStart, end: ms(1000), early: early, wakeAt: 64, writes: writes}
			sink := runSim(t, r)
			n := 0
			for _, p := range sink.log {
				if p.event < 0 {
					continue
				}
				n++
				if d := p.at.Sub(writes[p.event]); d > drainInterval {
					t.Errorf("event %d written at %v published %v later", p.event, writes[p.event].Sub(simStart), d)
				}
			}
			if n != len(writes) {
				t.Errorf("published %d events, want %d", n, len(writes))
			}
		})
	}
}
