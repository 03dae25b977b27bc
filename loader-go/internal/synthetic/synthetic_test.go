package synthetic

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

type collector struct {
	mu      sync.Mutex
	events  []*pb.FileCreatedEvent
	batches int
}

func (c *collector) Publish(evs []*pb.FileCreatedEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, evs...)
	c.batches++
}

func run(t *testing.T, s *Source, d time.Duration) *collector {
	t.Helper()
	c := &collector{}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.Run(ctx, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRate(t *testing.T) {
	s := New(Options{Rate: 4000})
	c := run(t, s, 500*time.Millisecond)
	if n := len(c.events); n < 1600 || n > 2100 {
		t.Errorf("%d events in 500ms at 4000/s, want about 2000", n)
	}
	if s.Produced() != uint64(len(c.events)) {
		t.Errorf("produced = %d, published %d", s.Produced(), len(c.events))
	}
}

func TestUnlimitedRateBatches(t *testing.T) {
	s := New(Options{BatchSize: 100})
	c := run(t, s, 50*time.Millisecond)
	if len(c.events) < 10_000 || len(c.events) != 100*c.batches {
		t.Errorf("%d events in %d batches", len(c.events), c.batches)
	}
}

func TestPathMix(t *testing.T) {
	s := New(Options{Dirs: 3, Names: 10})
	c := &collector{}
	for i := uint64(0); i < 30; i += 10 {
		c.Publish(s.Batch(i, 10))
	}
	seen := map[string]bool{}
	var nonUTF8, newline, long bool
	for _, ev := range c.events {
		seen[string(ev.Path)] = true
		nonUTF8 = nonUTF8 || !utf8.Valid(ev.Path)
		newline = newline || bytes.Contains(ev.Path, []byte("\n"))
		long = long || len(ev.Path) > 4000
		if len(ev.Path) > pathMax-1 {
			t.Errorf("path of %d bytes exceeds PATH_MAX", len(ev.Path))
		}
		if ev.Path[0] != '/' && ev.Flags == 0 {
			t.Errorf("relative path %q without EVENT_FLAG_PATH_UNRESOLVED", ev.Path)
		}
		if ev.Pid == 0 || len(ev.Comm) == 0 || ev.TimeUnixNano == 0 || ev.KtimeNs == 0 {
			t.Errorf("incomplete event %v", ev)
		}
	}
	if len(seen) != 30 {
		t.Errorf("%d distinct paths of 3 dirs x 10 names, want 30", len(seen))
	}
	if !nonUTF8 || !newline || !long {
		t.Errorf("mix lacks odd paths: non-UTF-8 %v, newline %v, near PATH_MAX %v", nonUTF8, newline, long)
	}
}

func TestUnresolved(t *testing.T) {
	s := New(Options{})
	evs := s.Batch(0, UnresolvedEvery)
	last := evs[UnresolvedEvery-1]
	if last.Flags != uint32(pb.EventFlag_EVENT_FLAG_PATH_UNRESOLVED) || bytes.IndexByte(last.Path, '/') >= 0 {
		t.Errorf("event %d = %q flags %d, want a bare name marked unresolved", UnresolvedEvery, last.Path, last.Flags)
	}
	if evs[0].Flags != 0 {
		t.Errorf("first event flagged")
	}
}
