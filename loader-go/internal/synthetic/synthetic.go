// Package synthetic is an event source that needs no kernel: it makes up file
// creations at a given rate, from a configurable mix of directories and names
// that includes the awkward ones (non-UTF-8 bytes, newlines, quotes,
// backslashes, paths near PATH_MAX). Everything above the source is the same
// as with the kernel source, so the user-space path can be tested and
// benchmarked anywhere.
package synthetic

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"golang.org/x/sys/unix"
)

// Sink receives the events; *hub.Hub is one.
type Sink interface {
	Publish(events []*pb.FileCreatedEvent)
}

// Options configures a Source. Zero values mean defaults.
type Options struct {
	// Rate is in events per second; 0 means as fast as possible.
	Rate int
	// Dirs and Names set the path mix: event i is created in directory
	// i mod Dirs under name (i / Dirs) mod Names.
	Dirs, Names int
	// BatchSize bounds the events published at once (default 256).
	BatchSize int
}

// Defaults for Options.
const (
	DefaultDirs      = 100
	DefaultNames     = 1000
	DefaultBatchSize = 256
	pathMax          = 4096 // bytes including the NUL, as in the kernel
)

// Every UnresolvedEvery-th event is marked EVENT_FLAG_PATH_UNRESOLVED and
// carries only its name, as the kernel does when it cannot resolve a path.
const UnresolvedEvery = 997

// OddNames are the first names of the mix (as many as Names allows).
var OddNames = []string{
	"non-utf8-\xff\xfe\x80",
	"new\nline",
	`quote"double'single`,
	`back\slash`,
	"with space and\ttab",
	"ünïcödé-名前",
}

// Source produces synthetic events. Produced counts what it published.
type Source struct {
	opts     Options
	dirs     [][]byte
	names    [][]byte
	comms    [][]byte
	produced atomic.Uint64
}

// New returns a source with opts.
func New(opts Options) *Source {
	opts.Dirs = max(opts.Dirs, 0)
	if opts.Dirs == 0 {
		opts.Dirs = DefaultDirs
	}
	if opts.Names <= 0 {
		opts.Names = DefaultNames
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	s := &Source{opts: opts}
	for i := range opts.Dirs {
		s.dirs = append(s.dirs, dirName(i))
	}
	for i := range opts.Names {
		s.names = append(s.names, fileName(i))
	}
	for i := range 8 {
		s.comms = append(s.comms, fmt.Appendf(nil, "synth-%d", i))
	}
	return s
}

// dirName: directory 1 is deep enough that its paths come close to PATH_MAX
// (4095 bytes with the longest default name), the others are short.
func dirName(i int) []byte {
	if i == 1 {
		const base = "/var/tmp/synthetic/deep"
		seg := "/" + strings.Repeat("d", 254)
		n := (pathMax - 1 - len(base) - 40) / len(seg)
		long := base + strings.Repeat(seg, n)
		return []byte(long + "/" + strings.Repeat("x", pathMax-1-len(long)-1-1-32))
	}
	return fmt.Appendf(nil, "/var/tmp/synthetic/d%03d", i)
}

func fileName(i int) []byte {
	if i < len(OddNames) {
		return []byte(OddNames[i])
	}
	return fmt.Appendf(nil, "file-%05d.log", i)
}

// Name is the source's name in status reports.
func (s *Source) Name() string { return "synthetic" }

// Produced returns how many events the source has published.
func (s *Source) Produced() uint64 { return s.produced.Load() }

// FillStatus adds the source's part of a status report.
func (s *Source) FillStatus(resp *pb.GetStatusResponse) {
	resp.Source = s.Name()
	resp.ModuleEventsFired = s.Produced()
}

// Run publishes events until ctx is done.
func (s *Source) Run(ctx context.Context, sink Sink) error {
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var i uint64
	for ctx.Err() == nil {
		n := s.opts.BatchSize
		if s.opts.Rate > 0 {
			due := uint64(time.Since(start).Seconds() * float64(s.opts.Rate))
			if due <= i {
				wait := time.Duration(float64(i+1)/float64(s.opts.Rate)*float64(time.Second)) - time.Since(start)
				timer.Reset(max(wait, time.Millisecond))
				select {
				case <-ctx.Done():
				case <-timer.C:
				}
				continue
			}
			n = int(min(due-i, uint64(n)))
		}
		sink.Publish(s.Batch(i, n))
		i += uint64(n)
		s.produced.Store(i)
	}
	return nil
}

// Batch makes events i to i+n-1 of the mix, with one allocation each for the events,
// their pointers and their paths.
func (s *Source) Batch(i uint64, n int) []*pb.FileCreatedEvent {
	slab := make([]pb.FileCreatedEvent, n)
	events := make([]*pb.FileCreatedEvent, n)
	size := 0
	for k := range n {
		d, name := s.pick(i + uint64(k))
		size += len(d) + 1 + len(name)
	}
	arena := make([]byte, 0, size)
	var mono unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) // cannot fail with a valid clock
	now := time.Now().UnixNano()
	for k := range events {
		ev := &slab[k]
		s.fill(ev, i+uint64(k), &arena)
		ev.KtimeNs = uint64(mono.Nano())
		ev.TimeUnixNano = now
		events[k] = ev
	}
	return events
}

// pick returns the directory and name of event i.
func (s *Source) pick(i uint64) (dir, name []byte) {
	return s.dirs[i%uint64(len(s.dirs))], s.names[(i/uint64(len(s.dirs)))%uint64(len(s.names))]
}

func (s *Source) fill(ev *pb.FileCreatedEvent, i uint64, arena *[]byte) {
	d, name := s.pick(i)
	start := len(*arena)
	if (i+1)%UnresolvedEvery == 0 {
		ev.Flags = uint32(pb.EventFlag_EVENT_FLAG_PATH_UNRESOLVED)
	} else {
		*arena = append(*arena, d...)
		*arena = append(*arena, '/')
	}
	*arena = append(*arena, name...)
	ev.Path = (*arena)[start:len(*arena):len(*arena)]
	ev.Pid = 1000 + uint32(i%50)
	ev.Tgid = ev.Pid - ev.Pid%5
	ev.Uid = uint32(1000 * (i % 3 / 2))
	ev.Gid = ev.Uid
	ev.Comm = s.comms[i%uint64(len(s.comms))]
	ev.CgroupId = 1 + i%4
}
