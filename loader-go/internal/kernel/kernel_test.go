package kernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"github.com/filewatcher/filewatcher/loader-go/internal/bpfobj"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// record encodes a ring-buffer record as the BPF program writes it: the C
// struct event_hdr, as bpf2go generated it from bpf/filewatcher.bpf.c (not
// the decoder's own offsets, which this test checks), then the path.
func record(path []byte, comm string, pid uint32) []byte {
	hdr := bpfobj.FilewatcherEventHdr{
		KtimeNs: 123456789, CgroupId: 42, Pid: pid, Tgid: pid - 1, Uid: 1000, Gid: 100,
		Flags: 0, PathLen: uint32(len(path)), Fsuid: 0, Fsgid: 5,
	}
	for i := range min(len(comm), len(hdr.Comm)) {
		hdr.Comm[i] = int8(comm[i])
	}
	return encodeRecord(&hdr, path)
}

// encodeRecord lays out hdr, then path, as bpf_ringbuf_output writes them.
func encodeRecord(hdr *bpfobj.FilewatcherEventHdr, path []byte) []byte {
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, hdr); err != nil {
		panic(err)
	}
	b.Write(path)
	return b.Bytes()
}

func TestDecode(t *testing.T) {
	long := append([]byte("/"), bytes.Repeat([]byte("a"), 4094)...)
	tests := []struct {
		name string
		path []byte
		comm string
	}{
		{"plain", []byte("/tmp/riptides"), "touch"},
		{"non-UTF-8", []byte("/tmp/\xff\xfe\x80"), "bash"},
		{"newline and quotes", []byte("/tmp/a\nb\"c'd\\e"), "python3"},
		{"PATH_MAX - 1 bytes", long, "cp"},
		{"full comm without NUL", []byte("/x"), "0123456789abcdef"},
		{"empty path", nil, "x"},
	}
	var d decoder
	d.offset = 1_000_000_000
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := record(tt.path, tt.comm, 77)
			ev, err := d.decode(raw)
			if err != nil {
				t.Fatal(err)
			}
			clear(raw) // the event must not alias the record
			if !bytes.Equal(ev.Path, tt.path) || string(ev.Comm) != tt.comm {
				t.Errorf("path %q comm %q, want %q %q", ev.Path, ev.Comm, tt.path, tt.comm)
			}
			if ev.KtimeNs != 123456789 || ev.TimeUnixNano != 1_123_456_789 || ev.CgroupId != 42 ||
				ev.Pid != 77 || ev.Tgid != 76 || ev.Uid != 1000 || ev.Gid != 100 || ev.Fsuid != 0 || ev.Fsgid != 5 ||
				ev.Kind != pb.EventKind_EVENT_KIND_OPEN {
				t.Errorf("event = %v", ev)
			}
		})
	}
}

// TestDecodeKind: bits 8 to 15 of the record's flags are the kind (0: an
// open), the rest stay flags.
func TestDecodeKind(t *testing.T) {
	tests := []struct {
		flags     uint32
		kind      pb.EventKind
		wantFlags uint32
	}{
		{0, pb.EventKind_EVENT_KIND_OPEN, 0},
		{1, pb.EventKind_EVENT_KIND_OPEN, 1},
		{2 << 8, pb.EventKind_EVENT_KIND_MKNOD, 0},
		{3<<8 | 1, pb.EventKind_EVENT_KIND_TMPFILE_LINK, 1},
		{0x42 << 8, pb.EventKind(0x42), 0}, // unknown to this loader: passed on
	}
	var d decoder
	for _, tt := range tests {
		raw := record([]byte("/x"), "c", 1)
		binary.LittleEndian.PutUint32(raw[offFlags:], tt.flags)
		ev, err := d.decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind != tt.kind || ev.Flags != tt.wantFlags {
			t.Errorf("flags %#x: kind %v flags %#x, want %v %#x", tt.flags, ev.Kind, ev.Flags, tt.kind, tt.wantFlags)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := record([]byte("/tmp/x"), "c", 1)
	tests := []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"short header", good[:headerSize-1]},
		{"path overruns", good[:len(good)-1]},
	}
	var d decoder
	for _, tt := range tests {
		if _, err := d.decode(tt.raw); !errors.Is(err, errRecord) {
			t.Errorf("%s: error = %v", tt.name, err)
		}
	}
}

// fakeRing replays a script of records and errors, as *ringbuf.Reader would
// return them, then reports itself closed. Its clock stands still except at a
// deadline step, which moves it to the deadline, as if the reader had waited.
type fakeRing struct {
	steps    []step
	clock    time.Time
	deadline time.Time
}

type step struct {
	raw       []byte
	remaining int
	err       error
}

func (f *fakeRing) SetDeadline(t time.Time) { f.deadline = t }

func (f *fakeRing) now() time.Time { return f.clock }

func (f *fakeRing) ReadInto(rec *ringbuf.Record) error {
	if len(f.steps) == 0 {
		return ringbuf.ErrClosed
	}
	s := f.steps[0]
	f.steps = f.steps[1:]
	if errors.Is(s.err, os.ErrDeadlineExceeded) && f.deadline.After(f.clock) {
		f.clock = f.deadline
	}
	if s.err != nil {
		return s.err
	}
	rec.RawSample = append(rec.RawSample[:0], s.raw...)
	rec.Remaining = s.remaining
	return nil
}

// TestRun drives the reader loop with a scripted ring and scripted loss
// counters into a real hub and checks what a subscriber sees.
func TestRun(t *testing.T) {
	var steps []step
	for i := range 300 { // more than a batch, then the ring drains
		steps = append(steps, step{raw: record(fmt.Appendf(nil, "/f%d", i), "w", 10), remaining: 299 - i})
	}
	// Idle for 100 ms: four drain deadlines, then the fifth is the poll's,
	// which finds 5 + 2 ringbuf-full events lost.
	for range pollInterval / drainInterval {
		steps = append(steps, step{err: os.ErrDeadlineExceeded})
	}
	steps = append(steps,
		step{raw: []byte("garbage"), remaining: 1},
		step{raw: record([]byte("/last"), "w", 11), remaining: 0},
	)
	polls := []lossCounts{
		{ringbufFullPerCPU: []uint64{5, 2}, readErrors: 1, kprobeMissed: 3},
	}
	ring := &fakeRing{steps: steps, clock: time.Unix(1000, 0)}
	s := &Source{
		log:     slog.New(slog.DiscardHandler),
		records: ring,
		timeNow: ring.now,
		readLosses: func(lossCounts) (lossCounts, error) {
			if len(polls) == 0 {
				return lossCounts{ringbufFullPerCPU: []uint64{5, 2}, readErrors: 1, kprobeMissed: 3}, nil
			}
			l := polls[0]
			polls = polls[1:]
			return l, nil
		},
	}
	h := hub.New("run", hub.Options{})
	sub, err := h.Subscribe(hub.SubscribeOptions{MaxEvents: 4096, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := s.Run(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	// 300 events, gaps 301-307 ringbuf, 308 read error (BPF), 309 read error
	// (garbage record), event 310. The 3 kprobe misses are counted, not
	// numbered: they were opens, most of which create nothing.
	var events []*pb.FileCreatedEvent
	var gaps []string
	var msg hub.Message
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for h.LastSequence() != 310 || len(events)+countGaps(gaps) < 310 {
		if err := sub.Next(ctx, &msg); err != nil {
			t.Fatalf("after %d events: %v (last sequence %d)", len(events), err, h.LastSequence())
		}
		events = append(events, msg.Response.Events...)
		for _, g := range msg.Response.Gaps {
			gaps = append(gaps, fmt.Sprintf("%d-%d:%s", g.FirstSequence, g.LastSequence, strings.TrimPrefix(g.Reason.String(), "GAP_REASON_")))
		}
	}
	// The gaps after the events cover 301-309 densely: 7 ring-buffer-full
	// and 2 read errors. Their order within the run depends
	// on whether the subscriber read between them: a queue packs a run of
	// gaps with no events between into one gap per reason (hub.packGaps).
	perReason := map[string]int{}
	next := 301
	for _, g := range gaps {
		var a, b int
		var reason string
		fmt.Sscanf(strings.Replace(g, ":", " ", 1), "%d-%d %s", &a, &b, &reason)
		if a != next || b < a {
			t.Errorf("gaps = %v: want them to cover 301-309 in order", gaps)
			break
		}
		next = b + 1
		perReason[reason] += b - a + 1
	}
	if want := "map[READ_ERROR:2 RINGBUF_FULL:7]"; next != 310 || fmt.Sprint(perReason) != want {
		t.Errorf("gaps = %v: %v up to %d, want %s up to 310", gaps, perReason, next, want)
	}
	if len(events) != 301 || string(events[0].Path) != "/f0" || string(events[299].Path) != "/f299" || string(events[300].Path) != "/last" {
		t.Errorf("got %d events", len(events))
	}
	var loss pb.LossCounters
	h.Loss(&loss)
	if loss.RingbufFull != 7 || loss.ReadErrors != 2 || loss.KprobeMissed != 3 {
		t.Errorf("loss = %v", &loss)
	}
}

func countGaps(gaps []string) int {
	n := 0
	for _, g := range gaps {
		var a, b int
		fmt.Sscanf(g, "%d-%d", &a, &b)
		n += b - a + 1
	}
	return n
}

// gapSink records the gaps published to it.
type gapSink struct{ gaps []string }

func (g *gapSink) Publish([]*pb.FileCreatedEvent) {}
func (g *gapSink) PublishGap(reason pb.GapReason, n uint64) {
	if n > 0 {
		g.gaps = append(g.gaps, fmt.Sprintf("%s:%d", strings.TrimPrefix(reason.String(), "GAP_REASON_"), n))
	}
}
func (g *gapSink) CountMissedOpens(n uint64) {
	if n > 0 {
		g.gaps = append(g.gaps, fmt.Sprintf("missed opens (no gap):%d", n))
	}
}

// TestPollCounterUnreadable: a counter that cannot be read holds back only
// its own gaps, which follow in full once it can be read again; the others
// are reported meanwhile.
func TestPollCounterUnreadable(t *testing.T) {
	type read struct {
		l   lossCounts
		err error
	}
	unreadable := errors.New("read /sys/kernel/filewatcher/kprobe_missed: no such device")
	reads := []read{
		{lossCounts{ringbufFullPerCPU: []uint64{2, 0}}, unreadable},           // kprobe_missed kept at 0
		{lossCounts{ringbufFullPerCPU: []uint64{2, 1}, kprobeMissed: 4}, nil}, // readable again
		{lossCounts{ringbufFullPerCPU: []uint64{2, 1}, kprobeMissed: 4, programSkipped: 3}, nil},
	}
	var logs bytes.Buffer
	s := &Source{log: slog.New(slog.NewTextHandler(&logs, nil))}
	s.readLosses = func(last lossCounts) (lossCounts, error) {
		r := reads[0]
		reads = reads[1:]
		if r.err != nil {
			r.l.kprobeMissed = last.kprobeMissed // as readKernelLosses keeps what it cannot read
		}
		return r.l, r.err
	}
	var sink gapSink
	for range 3 {
		s.poll(&sink, false)
	}
	if want := "[RINGBUF_FULL:2 RINGBUF_FULL:1 missed opens (no gap):4 PROGRAM_SKIPPED:3]"; fmt.Sprint(sink.gaps) != want {
		t.Errorf("gaps %v, want %s", sink.gaps, want)
	}
	if n := strings.Count(logs.String(), "cannot read a loss counter"); n != 1 || !strings.Contains(logs.String(), "loss counters readable again") {
		t.Errorf("logs:\n%s\nwant one warning and one recovery", logs.String())
	}
}

// TestDelta: counters only grow while the loader runs, but the module's
// kprobe_missed wraps at 2^32 (the kretprobe's int nmissed).
func TestDelta(t *testing.T) {
	for _, tt := range []struct{ now, before, want uint64 }{
		{10, 3, 7},
		{5, 5, 0},
		{3, 1<<32 - 5, 8},       // the 32-bit part wrapped
		{1 << 32, 1<<32 + 9, 0}, // a small drop is no wrap: count nothing
		{1, 1 << 40, 0},         // nor a drop beyond 32 bits
	} {
		if got := delta(tt.now, tt.before); got != tt.want {
			t.Errorf("delta(%d, %d) = %d, want %d", tt.now, tt.before, got, tt.want)
		}
	}
}

// TestReconcile: with the module, events it fired that were neither read
// from the ring nor counted lost become UNEXPLAINED gaps, once and exactly;
// events fired after its count was read, still in the ring, or read while
// the ring was not yet drained never make a false one.
func TestReconcile(t *testing.T) {
	s := &Source{log: slog.New(slog.DiscardHandler), reconciles: true, firedBase: 100, last: lossCounts{eventsFired: 100}}
	var reads []lossCounts
	var readErr error
	s.readLosses = func(last lossCounts) (lossCounts, error) {
		r := reads[0]
		reads = reads[1:]
		if readErr != nil {
			r.ringbufFullPerCPU = last.ringbufFullPerCPU // kept, as readKernelLosses keeps what it cannot read
		}
		return r, readErr
	}
	var sink gapSink
	step := func(records uint64, drained bool, l lossCounts) {
		s.recordsRead += records
		reads = append(reads, l)
		s.poll(&sink, drained)
	}
	// 10 fired; read only after this poll: nothing to reconcile yet.
	step(0, true, lossCounts{eventsFired: 110})
	// Of the 10, 7 were read and 2 lost to a full ring: one is missing, but
	// 5 fired after the count are read too and hide it for now (a lower
	// bound: never a false alarm).
	step(12, true, lossCounts{ringbufFullPerCPU: []uint64{2}, eventsFired: 115})
	// Not drained: 20 fired, none read yet; no verdict either way.
	step(0, false, lossCounts{ringbufFullPerCPU: []uint64{2}, eventsFired: 135})
	step(0, false, lossCounts{ringbufFullPerCPU: []uint64{2}, eventsFired: 135})
	// Drained: 18 of the 20 read and one skipped by the kernel: of the 35
	// fired, 30 were read and 3 lost for a known reason, so 2 unexplained.
	step(18, true, lossCounts{ringbufFullPerCPU: []uint64{2}, programSkipped: 1, eventsFired: 135})
	// Quiet: nothing new, nothing reported again.
	step(0, true, lossCounts{ringbufFullPerCPU: []uint64{2}, programSkipped: 1, eventsFired: 135})
	if want := "[RINGBUF_FULL:2 PROGRAM_SKIPPED:1 UNEXPLAINED:2]"; fmt.Sprint(sink.gaps) != want {
		t.Errorf("gaps %v, want %s", sink.gaps, want)
	}
	// One more lost unseen, then quiet: reported exactly.
	step(0, true, lossCounts{ringbufFullPerCPU: []uint64{2}, programSkipped: 1, eventsFired: 136})
	step(0, true, lossCounts{ringbufFullPerCPU: []uint64{2}, programSkipped: 1, eventsFired: 136})
	if want := "[RINGBUF_FULL:2 PROGRAM_SKIPPED:1 UNEXPLAINED:2 UNEXPLAINED:1]"; fmt.Sprint(sink.gaps) != want {
		t.Errorf("gaps %v, want %s", sink.gaps, want)
	}
	// 4 fired and lost to a full ring while the ring counters cannot be
	// read: no verdict against their stale values; once they are read
	// again, the 4 are ring-full gaps, not unexplained ones.
	step(0, true, lossCounts{ringbufFullPerCPU: []uint64{2}, programSkipped: 1, eventsFired: 140})
	readErr = errors.New("read BPF loss counters: bad file descriptor")
	step(0, true, lossCounts{ringbufFullPerCPU: []uint64{6}, programSkipped: 1, eventsFired: 140})
	readErr = nil
	step(0, true, lossCounts{ringbufFullPerCPU: []uint64{6}, programSkipped: 1, eventsFired: 140})
	if want := "[RINGBUF_FULL:2 PROGRAM_SKIPPED:1 UNEXPLAINED:2 UNEXPLAINED:1 RINGBUF_FULL:4]"; fmt.Sprint(sink.gaps) != want {
		t.Errorf("gaps %v, want %s", sink.gaps, want)
	}
	// The eBPF-only probe has no count to reconcile against.
	s = &Source{log: slog.New(slog.DiscardHandler), last: lossCounts{}}
	reads = []lossCounts{{}}
	sink.gaps = nil
	s.readLosses = func(lossCounts) (lossCounts, error) { r := reads[0]; reads = reads[1:]; return r, nil }
	s.poll(&sink, true)
	if len(sink.gaps) != 0 {
		t.Errorf("eBPF-only probe: gaps %v", sink.gaps)
	}
}
