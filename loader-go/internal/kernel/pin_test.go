package kernel

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/bpfobj"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/protobuf/proto"
)

// streamRecord is a record as the BPF program writes it, numbered seq in
// stream (slot, cpu).
func streamRecord(path string, slot, cpu uint32, seq uint64) []byte {
	return encodeRecord(&bpfobj.FilewatcherEventHdr{KtimeNs: 1, Pid: 2, Tgid: 2, PathLen: uint32(len(path)),
		StreamSeq: seq, Cpu: cpu, Slot: slot}, []byte(path))
}

func TestCheckpointRoundTrip(t *testing.T) {
	c := checkpoint{resumes: 3, moduleOwned: true, next: 1234, firedBase: 7, recordsRead: 1100,
		loss: &pb.LossCounters{RingbufFull: 1, KprobeMissed: 2, ReadErrors: 3, SubscriberDropped: 4,
			PathUnresolved: 5, ProgramSkipped: 6, Unexplained: 7, LoaderRestart: 8},
		last: lossCounts{ringbufFullPerCPU: []uint64{9, 10, 11}, readErrors: 12, kprobeMissed: 13,
			programSkipped: 14, eventsFired: 15},
		streams: [streamSlots][]uint64{{16, 17, 18}, {19, 20, 21}, {22, 23, 24}}}
	for i := range c.identity {
		c.identity[i] = byte(i)
	}
	for i := range c.runID {
		c.runID[i] = byte(100 + i)
	}
	b := make([]byte, checkpointSize(3))
	c.marshal(b, 3)
	var got checkpoint
	if err := got.unmarshal(b); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.loss, c.loss) {
		t.Errorf("loss: got %v, want %v", got.loss, c.loss)
	}
	got.loss, c.loss = nil, nil
	if !reflect.DeepEqual(got, c) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, c)
	}
	for name, bad := range map[string][]byte{
		"truncated":   b[:len(b)-8],
		"odd size":    b[:len(b)-1],
		"empty":       nil,
		"other magic": append([]byte{0}, b[1:]...),
	} {
		if err := new(checkpoint).unmarshal(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// fakeCheckpointMap keeps what is written to it.
type fakeCheckpointMap struct{ values []checkpoint }

func (f *fakeCheckpointMap) Put(_, value any) error {
	var c checkpoint
	if err := c.unmarshal(value.([]byte)); err != nil {
		return err
	}
	f.values = append(f.values, c)
	return nil
}

func (f *fakeCheckpointMap) Close() error { return nil }

// checkpointedHub is a hub that checks, at every publication, that the
// checkpoint written last already covers it (and what comes with it in the
// same publication).
type checkpointedHub struct {
	*hub.Hub
	t  *testing.T
	ck *fakeCheckpointMap
}

func (h checkpointedHub) check(n uint64) {
	h.t.Helper()
	if len(h.ck.values) == 0 {
		h.t.Fatal("published before any checkpoint")
	}
	if next := h.ck.values[len(h.ck.values)-1].next; next < h.LastSequence()+1+n {
		h.t.Errorf("publishing %d after sequence %d under a checkpoint whose next is %d", n, h.LastSequence(), next)
	}
}

func (h checkpointedHub) Publish(evs []*pb.FileCreatedEvent) {
	h.check(uint64(len(evs)))
	h.Hub.Publish(evs)
}

func (h checkpointedHub) PublishGap(reason pb.GapReason, n uint64) {
	if n > 0 {
		h.check(n)
	}
	h.Hub.PublishGap(reason, n)
}

// TestTakeOver: a loader takes over a run whose checkpoint stopped at
// sequence 100, with the dead loader's streams at (cpu 0: 10, cpu 1: 20) of
// slot 0 and nothing in slot 1. The kernel had written up to 15 and 25 of
// slot 0, and 5 of slot 1 on cpu 0. What the ring still holds: 9 (handed on
// already: dropped), 13-16 on cpu 0, 25 on cpu 1. So 11-12, 21-24 and all of
// slot 1's 1-5 went with the dead loader: 11 events, one LOADER_RESTART gap
// once the reader has drained the ring, after the 5 events.
func TestTakeOver(t *testing.T) {
	ckMap := &fakeCheckpointMap{}
	p := &pinState{dir: t.TempDir(), m: ckMap, ncpu: 2, buf: make([]byte, checkpointSize(2)),
		ck: checkpoint{next: 101, last: lossCounts{ringbufFullPerCPU: []uint64{0, 0}},
			loss:    &pb.LossCounters{LoaderRestart: 4},
			streams: [streamSlots][]uint64{{10, 20}, {0, 0}, {0, 0}}},
	}
	p.resumed = &Resumed{Next: 101, Loss: proto.Clone(p.ck.loss).(*pb.LossCounters)}
	ring := &fakeRing{clock: time.Unix(1000, 0), steps: []step{
		{raw: streamRecord("/dup", 0, 0, 9), remaining: 5},
		{raw: streamRecord("/a13", 0, 0, 13), remaining: 4},
		{raw: streamRecord("/b25", 0, 1, 25), remaining: 3},
		{raw: streamRecord("/a14", 0, 0, 14), remaining: 2},
		{raw: streamRecord("/a15", 0, 0, 15), remaining: 1},
		{raw: streamRecord("/a16", 0, 0, 16), remaining: 0},
		{err: os.ErrDeadlineExceeded},
		{raw: streamRecord("/b26", 0, 1, 26), remaining: 0},
	}}
	s := &Source{log: slog.New(slog.DiscardHandler), records: ring, timeNow: ring.now, pins: p,
		readLosses:  func(last lossCounts) (lossCounts, error) { return last, nil },
		readWritten: func() ([streamSlots][]uint64, error) { return [streamSlots][]uint64{{15, 25}, {5, 0}, {0, 0}}, nil }}
	s.resumeFrom(p)
	h := hub.New("run", hub.Options{})
	h.Resume(101, p.resumed.Loss)
	sub, err := h.Subscribe(hub.SubscribeOptions{ResumeRunID: "run", ResumeAfter: 98, MaxEvents: 100, MaxDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := s.Run(context.Background(), checkpointedHub{h, t, ckMap}); err != nil {
		t.Fatal(err)
	}
	var got []string
	var seqs []uint64
	var msg hub.Message
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for h.LastSequence() != 117 || len(got) < 8 {
		if err := sub.Next(ctx, &msg); err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		for _, ev := range msg.Response.Events {
			got, seqs = append(got, fmt.Sprintf("%d:%s", ev.Sequence, ev.Path)), append(seqs, ev.Sequence)
		}
		for _, g := range msg.Response.Gaps {
			got, seqs = append(got, fmt.Sprintf("%d-%d:%s", g.FirstSequence, g.LastSequence, g.Reason)), append(seqs, g.FirstSequence)
		}
	}
	// A message carries its events and gaps apart: put them in sequence
	// order.
	sort.Sort(bySeq{got, seqs})
	want := []string{"99-100:GAP_REASON_REPLAY_EXPIRED", "101:/a13", "102:/b25", "103:/a14", "104:/a15", "105:/a16",
		"106-116:GAP_REASON_LOADER_RESTART", "117:/b26"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the subscriber got\n%v\nwant\n%v", got, want)
	}
	var loss pb.LossCounters
	h.Loss(&loss)
	if loss.LoaderRestart != 4+11 {
		t.Errorf("loss.loader_restart = %d, want 15 (4 before, 11 now)", loss.LoaderRestart)
	}
	last := ckMap.values[len(ckMap.values)-1]
	if want := [streamSlots][]uint64{{16, 26}, {5, 0}, {0, 0}}; !reflect.DeepEqual(last.streams, want) || last.next != 118 ||
		last.loss.LoaderRestart != 15 || last.recordsRead != 6 {
		t.Errorf("last checkpoint: streams %v next %d loader_restart %d records_read %d; want streams %v next 118, 15, 6",
			last.streams, last.next, last.loss.LoaderRestart, last.recordsRead, want)
	}
	if p.duplicates != 1 {
		t.Errorf("duplicates = %d, want 1", p.duplicates)
	}
}

type bySeq struct {
	s   []string
	seq []uint64
}

func (b bySeq) Len() int           { return len(b.s) }
func (b bySeq) Less(i, j int) bool { return b.seq[i] < b.seq[j] }
func (b bySeq) Swap(i, j int) {
	b.s[i], b.s[j] = b.s[j], b.s[i]
	b.seq[i], b.seq[j] = b.seq[j], b.seq[i]
}

// TestLockPinDir: a second loader cannot use a pin directory while the
// first holds it, and can once the first is gone.
func TestLockPinDir(t *testing.T) {
	dir := t.TempDir()
	first, err := lockPinDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockPinDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another loader") {
		t.Errorf("second lock: %v; want in use by another loader", err)
	}
	first.Close()
	again, err := lockPinDir(dir)
	if err != nil {
		t.Fatalf("lock after the first let go: %v", err)
	}
	again.Close()
}
