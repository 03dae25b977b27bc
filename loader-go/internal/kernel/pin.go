package kernel

// Surviving a loader restart (Options.PinDir, the loader's --pin-dir).
//
// The loader pins its programs, their links, the ring buffer and the loss
// and stream counters in a bpffs directory, with a checkpoint of the run.
// When the loader dies (kill -9, a crash, the OOM killer), the kernel keeps
// all of it: the probe stays attached and keeps writing into the ring. The
// next loader with the same --pin-dir finds the pins, takes them over and
// continues the same run: same run id, sequences from where the checkpoint
// left off, loss counters from its baselines, so that a client resuming from
// the last sequence it saw ends up with every creation once or counted lost.
//
// What the dead loader had taken out of the ring is where the accounting is
// subtle. The checkpoint is written before every publication to the hub
// (events, gaps, or both: commit), so it never claims less than was handed
// on. Records taken out of the ring after it and not handed on are gone; each
// record carries its number in its stream (a program slot on one CPU, see
// streams in bpf/filewatcher.bpf.c), and the checkpoint the last number
// handed on per stream, so the new loader counts them exactly: at open it
// reads how many records each stream has written (the window's end); every
// number in (checkpoint, end] that it does not read by the time it first
// drains the ring was lost with the old process. The reader drains only past
// every record reserved before it looked (it waits for a record still being
// written), so by then all of them have been read or are gone. They become
// one GAP_REASON_LOADER_RESTART gap. Sequences the old process numbered but
// could not deliver are not in the new replay buffer: resuming clients get
// them as REPLAY_EXPIRED (hub.Resume).
//
// A deliberate stop (Close: SIGTERM) removes the pins, so the programs
// detach and the maps are freed; Handover (SIGUSR2) keeps them for the next
// loader. While a loader runs it holds the directory's lock, which the kernel
// drops when it dies: a second loader on the same directory refuses to start
// rather than read the same ring.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/filewatcher/filewatcher/loader-go/internal/bpfobj"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Stream slots, as STREAM_* in bpf/filewatcher.bpf.c.
const streamSlots = 3

// Names of the pinned objects in the pin directory; links and programs are
// link0, prog0, link1, prog1 in the order the probe attaches them.
const (
	pinEvents     = "events"
	pinLosses     = "losses"
	pinStreams    = "streams"
	pinCheckpoint = "checkpoint"
)

// Resumed describes the run a loader took over.
type Resumed struct {
	RunID string
	// Next is the first sequence this loader assigns.
	Next uint64
	// Loss is the run's loss counters as the dead loader last published
	// them.
	Loss *pb.LossCounters
	// Resumes counts the takeovers of this run, this one included.
	Resumes uint32
}

// Positioner is what the checkpoint needs of the sink (*hub.Hub is one):
// where its numbering stands and its loss counters.
type Positioner interface {
	LastSequence() uint64
	Loss(*pb.LossCounters)
}

// checkpoint is the state of a run that a loader taking it over needs.
type checkpoint struct {
	identity    [32]byte
	runID       [16]byte
	resumes     uint32
	moduleOwned bool
	next        uint64
	loss        *pb.LossCounters // never nil
	firedBase   uint64
	recordsRead uint64
	last        lossCounts // the loss counters' baselines
	// streams[slot][cpu] is the last stream_seq handed on.
	streams [streamSlots][]uint64
}

const (
	checkpointMagic = 0x31_54504B43_5746 // "FWCKPT1", little-endian
	// Words of a checkpoint before its per-CPU arrays.
	checkpointFixed = 24
)

func checkpointSize(ncpu int) int { return 8 * (checkpointFixed + (1+streamSlots)*ncpu) }

// marshal encodes c for ncpu CPUs into b (checkpointSize(ncpu) bytes).
func (c *checkpoint) marshal(b []byte, ncpu int) {
	w := make([]uint64, 0, len(b)/8)
	w = append(w, checkpointMagic)
	for i := 0; i < 32; i += 8 {
		w = append(w, binary.LittleEndian.Uint64(c.identity[i:]))
	}
	w = append(w, binary.LittleEndian.Uint64(c.runID[:]), binary.LittleEndian.Uint64(c.runID[8:]))
	flags := uint64(c.resumes) << 32
	if c.moduleOwned {
		flags |= 1
	}
	l := c.loss
	w = append(w, flags, c.next, c.firedBase, c.recordsRead,
		l.RingbufFull, l.KprobeMissed, l.ReadErrors, l.SubscriberDropped,
		l.PathUnresolved, l.ProgramSkipped, l.Unexplained, l.LoaderRestart,
		c.last.readErrors, c.last.kprobeMissed, c.last.programSkipped, c.last.eventsFired,
		uint64(ncpu))
	w = appendCPUs(w, c.last.ringbufFullPerCPU, ncpu)
	for slot := range c.streams {
		w = appendCPUs(w, c.streams[slot], ncpu)
	}
	for i, v := range w {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
}

func appendCPUs(w, v []uint64, ncpu int) []uint64 {
	for i := range ncpu {
		var x uint64
		if i < len(v) {
			x = v[i]
		}
		w = append(w, x)
	}
	return w
}

// unmarshal decodes a checkpoint written by marshal.
func (c *checkpoint) unmarshal(b []byte) error {
	if len(b)%8 != 0 || len(b) < 8*checkpointFixed {
		return fmt.Errorf("checkpoint of %d bytes", len(b))
	}
	w := make([]uint64, len(b)/8)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	if w[0] != checkpointMagic {
		return errors.New("not a checkpoint of this loader version")
	}
	ncpu := int(w[checkpointFixed-1])
	if ncpu <= 0 || len(w) != checkpointFixed+(1+streamSlots)*ncpu {
		return fmt.Errorf("checkpoint for %d CPUs in %d bytes", ncpu, len(b))
	}
	for i := range 4 {
		binary.LittleEndian.PutUint64(c.identity[8*i:], w[1+i])
	}
	binary.LittleEndian.PutUint64(c.runID[:], w[5])
	binary.LittleEndian.PutUint64(c.runID[8:], w[6])
	c.moduleOwned, c.resumes = w[7]&1 != 0, uint32(w[7]>>32)
	c.next, c.firedBase, c.recordsRead = w[8], w[9], w[10]
	c.loss = &pb.LossCounters{RingbufFull: w[11], KprobeMissed: w[12], ReadErrors: w[13], SubscriberDropped: w[14],
		PathUnresolved: w[15], ProgramSkipped: w[16], Unexplained: w[17], LoaderRestart: w[18]}
	c.last = lossCounts{readErrors: w[19], kprobeMissed: w[20], programSkipped: w[21], eventsFired: w[22]}
	per := w[checkpointFixed:]
	c.last.ringbufFullPerCPU = append([]uint64(nil), per[:ncpu]...)
	for slot := range c.streams {
		per = per[ncpu:]
		c.streams[slot] = append([]uint64(nil), per[:ncpu]...)
	}
	return nil
}

// pinState is a Source's pins and checkpoint.
type pinState struct {
	dir     string
	m       checkpointMap
	ncpu    int
	buf     []byte
	ck      checkpoint
	resumed *Resumed
	// window[slot][cpu] is the end of a taken-over stream's window: the
	// last record it had written when this loader took over; 0 when it has
	// none or it is closed.
	window [streamSlots][]uint64
	open   bool // some window is still open
	// duplicates counts records at or before the checkpoint's position in
	// their stream, which the dead loader had handed on: dropped.
	duplicates uint64
	failed     atomic.Bool // a checkpoint could not be written: pinning is off
}

// checkpointMap holds the checkpoint: an *ebpf.Map of one value.
type checkpointMap interface {
	Put(key, value any) error
	Close() error
}

// identity is what must match for a loader to take pins over: the object,
// the probe and the ring's size.
func identity(probe Probe, ringbufSize uint32) [32]byte {
	obj := bpfobj.ObjectSHA256()
	return sha256.Sum256(fmt.Appendf(obj[:], "probe=%s ringbuf=%d", probe, ringbufSize))
}

// bpfFSMagic is BPF_FS_MAGIC (include/uapi/linux/magic.h).
const bpfFSMagic = 0xcafe4a11

// prepareDir makes dir, which must be in a bpf filesystem.
func prepareDir(dir string) error {
	parent := filepath.Dir(dir)
	var st unix.Statfs_t
	if err := unix.Statfs(parent, &st); err != nil {
		return fmt.Errorf("--pin-dir %s: %w", dir, err)
	}
	if uint32(st.Type) != bpfFSMagic {
		return fmt.Errorf("--pin-dir %s: %s is not a bpf filesystem (mount it: mount -t bpf bpf /sys/fs/bpf)", dir, parent)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("--pin-dir: %w", err)
	}
	return nil
}

// lockPinDir takes dir's lock for as long as the process lives (the kernel
// drops it when the process dies, however it dies): two loaders reading one
// ring would number its records twice.
func lockPinDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("--pin-dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("--pin-dir %s is in use by another loader (it holds the directory's lock)", dir)
		}
		return nil, fmt.Errorf("--pin-dir %s: lock: %w", dir, err)
	}
	return f, nil
}

// removePins unpins everything in dir (the objects go once nothing else
// holds them) and leaves the directory.
func removePins(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("read pin directory: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("unpin: %w", err))
		}
	}
	return errors.Join(errs...)
}

func pinLink(i int) string { return fmt.Sprintf("link%d", i) }
func pinProg(i int) string { return fmt.Sprintf("prog%d", i) }

// takeOver loads what an earlier loader pinned in dir, if it is complete and
// of this identity: the maps into s.maps, the programs and links, and the
// checkpoint. It returns false with a reason when there is nothing to take
// over.
func (s *Source) takeOver(dir string, id [32]byte, nprogs int) (ok bool, why string) {
	ckMap, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinCheckpoint), nil)
	if errors.Is(err, os.ErrNotExist) {
		return false, ""
	} else if err != nil {
		return false, fmt.Sprintf("cannot open the pinned checkpoint: %v", err)
	}
	p := &pinState{dir: dir, m: ckMap}
	keep := false
	defer func() {
		if !keep {
			ckMap.Close()
		}
	}()
	buf := make([]byte, ckMap.ValueSize())
	if err := ckMap.Lookup(uint32(0), &buf); err != nil {
		return false, fmt.Sprintf("cannot read the pinned checkpoint: %v", err)
	}
	if err := p.ck.unmarshal(buf); err != nil {
		return false, err.Error()
	}
	if p.ck.identity != id {
		return false, "they are of another BPF object, probe or ring size"
	}
	var objs []interface{ Close() error }
	defer func() {
		if !keep {
			for _, o := range objs {
				o.Close()
			}
		}
	}()
	var pm ProbeMaps
	var progs []*ebpf.Program
	var links []link.Link
	maps := map[string]**ebpf.Map{pinEvents: &pm.Events, pinLosses: &pm.Losses, pinStreams: &pm.Streams}
	for name, to := range maps {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			return false, fmt.Sprintf("map %s: %v", name, err)
		}
		objs = append(objs, m)
		*to = m
	}
	for i := range nprogs {
		prog, err := ebpf.LoadPinnedProgram(filepath.Join(dir, pinProg(i)), nil)
		if err != nil {
			return false, fmt.Sprintf("program %d: %v", i, err)
		}
		objs = append(objs, prog)
		l, err := link.LoadPinnedLink(filepath.Join(dir, pinLink(i)), nil)
		if err != nil {
			return false, fmt.Sprintf("link %d: %v", i, err)
		}
		objs = append(objs, l)
		progs, links = append(progs, prog), append(links, l)
	}
	p.ncpu = len(p.ck.last.ringbufFullPerCPU)
	if cpus, err := ebpf.PossibleCPU(); err != nil || cpus != p.ncpu {
		return false, fmt.Sprintf("the checkpoint is for %d CPUs", p.ncpu)
	}
	keep = true
	s.maps, s.progs, s.links = pm, progs, links
	p.buf = buf
	p.ck.resumes++
	p.resumed = &Resumed{RunID: hex.EncodeToString(p.ck.runID[:]), Next: p.ck.next,
		Loss: proto.Clone(p.ck.loss).(*pb.LossCounters), Resumes: p.ck.resumes}
	s.pins = p
	return true, ""
}

// readWritten reads how many records each stream has written: the streams
// map, per slot and CPU.
func readWritten(streams *ebpf.Map) (written [streamSlots][]uint64, err error) {
	for slot := range streamSlots {
		if err := streams.Lookup(uint32(slot), &written[slot]); err != nil {
			return written, fmt.Errorf("read the stream counters: %w", err)
		}
	}
	return written, nil
}

// openWindows opens a window for each stream the dead loader had not handed
// on to the last record written.
func (p *pinState) openWindows(written [streamSlots][]uint64) {
	for slot := range streamSlots {
		p.window[slot] = make([]uint64, p.ncpu)
		for cpu := range min(len(written[slot]), p.ncpu) {
			if written[slot][cpu] > p.ck.streams[slot][cpu] {
				p.window[slot][cpu] = written[slot][cpu]
				p.open = true
			}
		}
	}
}

// pin pins a new run's objects in dir and writes its first checkpoint. A
// kernel that cannot pin a link (a perf event attached by ioctl, which the
// module probe avoids when pinning: see openModuleProbe) gets nothing
// pinned, and the reason.
func (s *Source) pin(dir string, id [32]byte, runID string) (why string, err error) {
	var pinned []string
	defer func() {
		if why != "" || err != nil {
			for _, path := range pinned {
				os.Remove(path)
			}
		}
	}()
	for i, l := range s.links {
		path := filepath.Join(dir, pinLink(i))
		if err := l.Pin(path); errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, link.ErrNotSupported) {
			return fmt.Sprintf("this kernel cannot pin the probe's attachment: %v", err), nil
		} else if err != nil {
			return "", fmt.Errorf("pin link: %w", err)
		}
		pinned = append(pinned, path)
	}
	for i, prog := range s.progs {
		path := filepath.Join(dir, pinProg(i))
		if err := prog.Pin(path); err != nil {
			return "", fmt.Errorf("pin program: %w", err)
		}
		pinned = append(pinned, path)
	}
	for name, m := range map[string]*ebpf.Map{pinEvents: s.maps.Events, pinLosses: s.maps.Losses, pinStreams: s.maps.Streams} {
		path := filepath.Join(dir, name)
		if err := m.Pin(path); err != nil {
			return "", fmt.Errorf("pin map %s: %w", name, err)
		}
		pinned = append(pinned, path)
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return "", err
	}
	ckMap, err := ebpf.NewMap(&ebpf.MapSpec{Name: "fw_checkpoint", Type: ebpf.Array, KeySize: 4,
		ValueSize: uint32(checkpointSize(ncpu)), MaxEntries: 1})
	if err != nil {
		return "", fmt.Errorf("create the checkpoint map: %w", err)
	}
	p := &pinState{dir: dir, m: ckMap, ncpu: ncpu, buf: make([]byte, checkpointSize(ncpu))}
	p.ck.identity, p.ck.loss = id, &pb.LossCounters{}
	if b, err := hex.DecodeString(runID); err != nil || len(b) != len(p.ck.runID) {
		ckMap.Close()
		return "", fmt.Errorf("run id %q is not 32 hex digits", runID)
	} else {
		copy(p.ck.runID[:], b)
	}
	p.ck.next = 1
	if p.ck.streams, err = readWritten(s.maps.Streams); err != nil {
		ckMap.Close()
		return "", err
	}
	s.pins = p
	if err := s.saveCheckpoint(0, 0, nil); err != nil {
		ckMap.Close()
		s.pins = nil
		return "", err
	}
	// Pinned last: a checkpoint file means the rest is there.
	path := filepath.Join(dir, pinCheckpoint)
	if err := ckMap.Pin(path); err != nil {
		ckMap.Close()
		s.pins = nil
		return "", fmt.Errorf("pin the checkpoint: %w", err)
	}
	return "", nil
}

// saveCheckpoint writes the checkpoint as it will be once n more sequences
// are assigned with loss added to the counters (and the Source's state as
// it is now). sinkPos supplies where the hub stands; nil is a new run's
// start.
func (s *Source) saveCheckpoint(n uint64, missedOpens uint64, add func(*pb.LossCounters)) error {
	p := s.pins
	ck := &p.ck
	if s.position != nil {
		s.position.Loss(ck.loss)
		ck.next = s.position.LastSequence() + 1
	}
	ck.next += n
	ck.loss.KprobeMissed += missedOpens
	if add != nil {
		add(ck.loss)
	}
	ck.moduleOwned = s.module != nil && s.module.Owned()
	ck.firedBase, ck.recordsRead, ck.last = s.firedBase, s.recordsRead, s.last
	ck.marshal(p.buf, p.ncpu)
	if err := p.m.Put(uint32(0), p.buf); err != nil {
		return fmt.Errorf("write the checkpoint: %w", err)
	}
	return nil
}

// checkpointFailed turns pinning off after a checkpoint could not be
// written: a stale checkpoint would make the next loader number events again
// under sequences already used, so its pin is removed and the next loader
// starts a new run.
func (s *Source) checkpointFailed(err error) {
	s.log.Error("cannot write the checkpoint: unpinning it, so a loader that replaces this one starts a new run", "error", err)
	os.Remove(filepath.Join(s.pins.dir, pinCheckpoint))
	s.pins.failed.Store(true)
}

// track accounts for a record of stream (slot, cpu) numbered seq. It says
// whether to hand the record on (not one the dead loader handed on already)
// and how many records of its stream were lost with the dead loader: those
// between the checkpoint's position and the first record read of a stream
// with a window. A stream's records enter the ring in order and are read in
// that order, so what the ring kept of a stream is a run of its numbers
// that ends at the window's end, or goes past it.
func (p *pinState) track(slot, cpu uint32, seq uint64) (handOn bool, lost uint64) {
	if int(slot) >= streamSlots || int(cpu) >= p.ncpu {
		return true, 0
	}
	last := &p.ck.streams[slot][cpu]
	if seq <= *last {
		p.duplicates++
		return false, 0
	}
	if p.open {
		if end := p.window[slot][cpu]; end != 0 {
			lost = min(seq-1, end) - *last
			p.window[slot][cpu] = 0
		}
	}
	*last = seq
	return true, lost
}

// closeWindows returns how many records of the windows still open were lost
// with the dead loader: all of them, for the reader has drained the ring and
// so read every record written before this loader took over (it waits for
// one still being written). Called at the first drain.
func (p *pinState) closeWindows() uint64 {
	var lost uint64
	for slot := range streamSlots {
		for cpu, end := range p.window[slot] {
			if end != 0 {
				lost += end - p.ck.streams[slot][cpu]
				p.ck.streams[slot][cpu] = end // counted: not again
				p.window[slot][cpu] = 0
			}
		}
	}
	p.open = false
	return lost
}

// pinStatus says where the probe is pinned (empty: it is not) and, if
// --pin-dir was given but nothing could be pinned, why.
func (s *Source) pinStatus() (dir, detail string, resumes uint32) {
	if s.pins != nil && !s.pins.failed.Load() {
		return s.pins.dir, "", s.pins.ck.resumes
	}
	return "", s.pinDetail, 0
}

var _ Positioner = (*hub.Hub)(nil)

// describeWindows is for the log line of a takeover.
func (p *pinState) describeWindows() string {
	var parts []string
	for slot := range streamSlots {
		for cpu, end := range p.window[slot] {
			if end != 0 {
				parts = append(parts, fmt.Sprintf("slot %d cpu %d: %d-%d", slot, cpu, p.ck.streams[slot][cpu]+1, end))
			}
		}
	}
	return strings.Join(parts, ", ")
}
