// Package kernel is the event source that reads file creations from the
// kernel: it loads the BPF programs of one probe of bpf/filewatcher.bpf.c
// (ProbeModule: on the module's filewatcher/file_created tracepoint;
// ProbeBPF: the eBPF-only probe, on security_file_open and the open
// function's return), reads the ring buffer and turns every loss the kernel
// side counted (ring buffer full, unreadable records, missed probe runs)
// into gaps.
package kernel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"github.com/filewatcher/filewatcher/loader-go/internal/bpfobj"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"github.com/filewatcher/filewatcher/loader-go/internal/kernelmodule"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"golang.org/x/sys/unix"
)

// Sink receives events and losses; *hub.Hub is one.
type Sink interface {
	Publish(events []*pb.FileCreatedEvent)
	// PublishGap reports n events lost: they consume sequence numbers.
	PublishGap(reason pb.GapReason, n uint64)
	// CountMissedOpens reports n calls of the open function the probe
	// missed. Most opens create nothing, so these are an upper bound on
	// creations missed, not events: they consume no sequence numbers.
	CountMissedOpens(n uint64)
}

// Probe is the kernel side that sees file creations.
type Probe string

const (
	// ProbeModule: the kernel module's kretprobe on the open function fires
	// its tracepoint, and the program file_created forwards each event.
	ProbeModule Probe = "kmod"
	// ProbeBPF: no module; the programs fentry_security_file_open and
	// fexit_open see the creations themselves (needs BPF trampolines on
	// kernel functions: x86-64 since 5.5, arm64 since 6.4, which added ftrace
	// direct calls).
	ProbeBPF Probe = "bpf"
)

// OpenFunctions are the names the open function has had, which the eBPF-only
// probe's fexit_open attaches to: the first the kernel's BTF has. Linux 7.0
// renamed do_filp_open do_file_open, prototype unchanged. (The module carries
// its own list, FW_OPEN_FUNCTIONS in kmod/filewatcher.c.)
var OpenFunctions = []string{"do_filp_open", "do_file_open"}

// Options configures a Source.
type Options struct {
	// Probe says which programs to load: ProbeModule (the default) or
	// ProbeBPF.
	Probe Probe
	// RingbufSize is the BPF ring buffer's size in bytes.
	RingbufSize uint32
	// Module supplies kretprobe misses and status under ProbeModule; nil
	// skips them.
	Module *kernelmodule.Module
	// Log receives warnings; nil discards.
	Log *slog.Logger
	// MountTracefs mounts tracefs at /sys/kernel/tracing if no tracing
	// filesystem is mounted (minimal systems such as an initramfs): attaching
	// to a tracepoint needs it to look the tracepoint up.
	MountTracefs bool
	// PinDir, a directory in a bpf filesystem, keeps the probe attached and
	// its ring buffer and counters alive across loader restarts, with the
	// run's checkpoint (see pin.go); a loader opening the same PinDir takes
	// the run over. Empty: nothing is pinned.
	PinDir string
	// RunID is the id of a new run, written in its checkpoint (with
	// PinDir). A run taken over keeps its own: see Resumed.
	RunID string
}

// Timing of the reader.
//
// The BPF program writes records without waking the reader until 1/8 of the
// ring is unread, so at ordinary rates a record waits in the ring until the
// reader's deadline. While files are being created the deadline comes every
// drainInterval: that bounds the latency this adds to delivery, far below
// what a scrape or a human notices. Each deadline that finds the ring empty
// doubles the interval, up to pollInterval, so that an idle loader wakes 10
// times a second (as it did before writes stopped waking it), not 50: on the
// 2-core VMs we test on such a wakeup costs ~130 µs, ~0.15% of a CPU at
// 100 ms against ~0.7% at 20 ms; in bench's TCG guest, where timers are far
// dearer, ~6% of a vCPU against ~13%. The price: the first file created
// after a quiet spell can wait up to pollInterval.
//
// Loss counters are polled at least every pollInterval, and when the reader
// has drained the ring, at most every minPollInterval.
const (
	drainInterval   = 20 * time.Millisecond
	pollInterval    = 100 * time.Millisecond
	minPollInterval = 10 * time.Millisecond
	batchSize       = 256
)

// recordReader is what Run needs of *ringbuf.Reader.
type recordReader interface {
	ReadInto(*ringbuf.Record) error
	SetDeadline(time.Time)
}

// lossCounts are cumulative loss counters as read from the kernel, and the
// module's count of events fired, which they are reconciled against.
type lossCounts struct {
	ringbufFullPerCPU []uint64
	readErrors        uint64
	kprobeMissed      uint64
	programSkipped    uint64
	eventsFired       uint64 // the module's; 0 without it
}

func (l *lossCounts) ringbufFull() uint64 {
	var n uint64
	for _, v := range l.ringbufFullPerCPU {
		n += v
	}
	return n
}

// The maps every probe uses, and each probe's programs, as LoadAndAssign
// loads them: only what is named here (and the maps it uses) goes into the
// kernel.
type ProbeMaps struct {
	Events  *ebpf.Map `ebpf:"events"`
	Losses  *ebpf.Map `ebpf:"losses"`
	Streams *ebpf.Map `ebpf:"streams"`
}

type moduleObjects struct {
	ProbeMaps
	FileCreated *ebpf.Program `ebpf:"file_created"`
}

// moduleRawObjects is the module probe on the tracepoint's raw form, whose
// attachment can be pinned on every kernel we run on (see pin.go).
type moduleRawObjects struct {
	ProbeMaps
	FileCreatedRaw *ebpf.Program `ebpf:"file_created_raw"`
}

type bpfObjects struct {
	ProbeMaps
	SecurityFileOpen *ebpf.Program `ebpf:"fentry_security_file_open"`
	OpenExit         *ebpf.Program `ebpf:"fexit_open"`
}

// bpfRouteObjects are the eBPF-only probe's programs for the creations
// without an open (mknod, O_TMPFILE links), under the names routePrograms
// gives the variants that fit the running kernel.
type bpfRouteObjects struct {
	PathMknod *ebpf.Program `ebpf:"fexit_path_mknod"`
	PathLink  *ebpf.Program `ebpf:"fexit_path_link"`
	VfsCreate *ebpf.Program `ebpf:"route_vfs_create"`
	VfsLink   *ebpf.Program `ebpf:"route_vfs_link"`
}

// Source reads events from the kernel.
type Source struct {
	probe    Probe
	function string // the open function hooked
	maps     ProbeMaps
	progs    []*ebpf.Program
	links    []link.Link
	reader   *ringbuf.Reader
	// mountedTracefs: Open mounted tracefs (MountTracefs), Close unmounts it.
	mountedTracefs bool
	module         *kernelmodule.Module
	ringbufSize    uint32
	log            *slog.Logger

	// For Run, injectable by tests.
	records recordReader
	// readLosses reads the counters over a copy of last: one it cannot read
	// keeps its last value, so that its growth is published once it can be
	// read again, and its error is returned (joined) while the others are
	// still read.
	readLosses func(last lossCounts) (lossCounts, error)
	lossErr    string           // the last poll's error, logged when it changes
	timeNow    func() time.Time // nil: time.Now

	last    lossCounts // as of the last poll
	dec     decoder
	pending []*pb.FileCreatedEvent

	// Reconciliation with the module's events_fired (see reconcile).
	reconciles  bool   // the module counts the events it fires
	recordsRead uint64 // ring records read this run, decoded or not
	firedBase   uint64 // events_fired when the program was attached
	unexplained uint64 // published as UNEXPLAINED gaps so far

	status atomic.Pointer[lossCounts] // last poll, for FillStatus

	// With Options.PinDir: the pins and checkpoint (nil when nothing is
	// pinned, pinDetail then says why), the sink's position for the
	// checkpoint, and the events lost with a loader this one replaced.
	pins        *pinState
	pinDetail   string
	position    Positioner
	readWritten func() ([streamSlots][]uint64, error) // the streams map; injectable by tests
	// Events lost with a dead loader: counted so far this run (published),
	// and found since the last publication.
	restartLost    uint64
	restartPending uint64
	pinLock        *os.File // held while this source uses the pin directory
}

// Open loads and attaches the programs of opts.Probe. ProbeModule needs the
// module loaded.
func Open(opts Options) (_ *Source, err error) {
	if opts.Probe == "" {
		opts.Probe = ProbeModule
	}
	s := &Source{probe: opts.Probe, module: opts.Module, ringbufSize: opts.RingbufSize, log: opts.Log}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	tookOver := false
	defer func() {
		switch {
		case err == nil:
		case tookOver:
			s.release() // the run stays pinned for a loader that can open it
		default:
			s.Close()
		}
	}()
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	spec, err := bpfobj.LoadFilewatcher()
	if err != nil {
		return nil, fmt.Errorf("load BPF spec: %w", err)
	}
	spec.Maps[bpfobj.FilewatcherMapEvents].MaxEntries = opts.RingbufSize
	id := identity(opts.Probe, opts.RingbufSize)
	if opts.PinDir != "" {
		if tookOver, err = s.openPinned(opts, id); err != nil {
			return nil, err
		}
	}
	if !tookOver {
		switch opts.Probe {
		case ProbeModule:
			err = s.openModuleProbe(spec, opts)
		case ProbeBPF:
			err = s.openBPFProbe(spec)
		default:
			err = fmt.Errorf("unknown probe %q", opts.Probe)
		}
		if err != nil {
			return nil, err
		}
	}
	s.reader, err = ringbuf.NewReader(s.maps.Events)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer reader: %w", err)
	}
	s.records = s.reader
	s.readLosses = s.readKernelLosses
	s.reconciles = s.module != nil && s.probe == ProbeModule
	if tookOver {
		s.resumeFrom(s.pins)
	} else {
		// Misses before this run are not this run's losses, nor events the
		// module fired before the program was attached (read after it).
		if s.last, err = s.readLosses(lossCounts{}); err != nil {
			return nil, err
		}
		s.firedBase = s.last.eventsFired
		if opts.PinDir != "" {
			if s.pinDetail, err = s.pin(opts.PinDir, id, opts.RunID); err != nil {
				return nil, err
			}
			if s.pinDetail != "" {
				s.log.Warn("--pin-dir: nothing pinned; a loader that replaces this one starts a new run", "reason", s.pinDetail)
			}
		}
	}
	s.status.Store(&s.last)
	return s, nil
}

// openPinned takes over what an earlier loader left in opts.PinDir, or
// clears what cannot be taken over, and says whether it took over.
func (s *Source) openPinned(opts Options, id [32]byte) (bool, error) {
	if err := prepareDir(opts.PinDir); err != nil {
		return false, err
	}
	lock, err := lockPinDir(opts.PinDir)
	if err != nil {
		return false, err
	}
	s.pinLock = lock
	nprogs := 1
	if opts.Probe == ProbeBPF {
		nprogs = 2 // fentry security_file_open, fexit of the open function
		if kspec, err := btf.LoadKernelSpec(); err == nil {
			if r, _ := routePrograms(kspec); r != nil {
				nprogs += 4
			}
		}
	}
	ok, why := s.takeOver(opts.PinDir, id, nprogs)
	if ok {
		return true, nil
	}
	if why != "" {
		s.log.Warn("not taking over what an earlier loader pinned: unpinning it and starting a new run",
			"dir", opts.PinDir, "reason", why)
	}
	// Leftovers without a checkpoint (a loader that died while pinning)
	// are unpinned too.
	return false, removePins(opts.PinDir)
}

// resumeFrom continues the run of p's checkpoint: its counters' baselines,
// the module's ownership, and a window per stream for what the dead loader
// had read but not handed on.
func (s *Source) resumeFrom(p *pinState) {
	ck := &p.ck
	s.last, s.firedBase, s.recordsRead = ck.last, ck.firedBase, ck.recordsRead
	s.unexplained, s.restartLost = ck.loss.Unexplained, ck.loss.LoaderRestart
	if s.module != nil {
		s.function, _ = s.module.Function()
		if ck.moduleOwned {
			s.module.Adopt()
		}
	} else if kspec, err := btf.LoadKernelSpec(); err == nil {
		s.function, _ = openFunction(kspec)
	}
	if s.readWritten == nil {
		s.readWritten = func() ([streamSlots][]uint64, error) { return readWritten(s.maps.Streams) }
	}
	if written, err := s.readWritten(); err != nil {
		// Without the counts, what the dead loader lost cannot be told
		// apart from what is in the ring: say so, and count nothing.
		s.log.Error("taking over the run: cannot count what the dead loader lost", "error", err)
	} else {
		p.openWindows(written)
	}
	s.log.Info("took over the run an earlier loader left pinned", "dir", p.dir, "run_id", p.resumed.RunID,
		"next_sequence", ck.next, "resumes", ck.resumes, "unread", p.describeWindows())
}

// Resumed describes the run this source took over from an earlier loader
// (Options.PinDir), nil for a new run.
func (s *Source) Resumed() *Resumed {
	if s.pins == nil {
		return nil
	}
	return s.pins.resumed
}

func (s *Source) load(spec *ebpf.CollectionSpec, to any) error {
	if err := spec.LoadAndAssign(to, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			s.log.Error("BPF verifier log", "log", fmt.Sprintf("%+v", verr))
		}
		return fmt.Errorf("load BPF objects: %w", err)
	}
	return nil
}

func (s *Source) openModuleProbe(spec *ebpf.CollectionSpec, opts Options) error {
	// Pinned, the program goes on the raw tracepoint: the tracepoint's perf
	// event can be pinned only since Linux 5.15, a raw tracepoint's link on
	// every kernel we support.
	raw := opts.PinDir != ""
	if raw {
		var objs moduleRawObjects
		if err := s.load(spec, &objs); err != nil {
			return err
		}
		s.maps, s.progs = objs.ProbeMaps, []*ebpf.Program{objs.FileCreatedRaw}
	} else {
		var objs moduleObjects
		if err := s.load(spec, &objs); err != nil {
			return err
		}
		s.maps, s.progs = objs.ProbeMaps, []*ebpf.Program{objs.FileCreated}
	}
	if s.module != nil {
		s.function, _ = s.module.Function()
		if routes, err := s.module.Routes(); err == nil && routes != kernelmodule.AllRoutes {
			s.log.Warn("the module watches only some creation routes: mknod(2) and O_TMPFILE links are not reported (a kernel without CONFIG_SECURITY_PATH)", "routes", routes)
		}
	}
	if opts.MountTracefs {
		mounted, err := mountTracefs(s.log)
		if err != nil {
			return err
		}
		s.mountedTracefs = mounted
	}
	// Attach only to a tracepoint laid out as the program reads it (its
	// format, and with it the module's version, which fixes TP_PROTO).
	if err := checkTracepoint(spec.Types); err != nil {
		return err
	}
	var l link.Link
	var err error
	if raw {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: tracepointName, Program: s.progs[0]})
	} else {
		l, err = link.Tracepoint(tracepointGroup, tracepointName, s.progs[0], nil)
	}
	if err != nil {
		return fmt.Errorf("attach to tracepoint filewatcher/file_created (is the module loaded?): %w", err)
	}
	s.links = append(s.links, l)
	return nil
}

// errnoENOTSUPP is the kernel's internal ENOTSUPP (524), which reaches user
// space from attaching where the architecture has no BPF trampolines.
const errnoENOTSUPP = unix.Errno(524)

// ErrBPFProbe is wrapped when the eBPF-only probe cannot run on this kernel.
var ErrBPFProbe = errors.New("the eBPF-only probe cannot run on this kernel")

func (s *Source) openBPFProbe(spec *ebpf.CollectionSpec) error {
	kspec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("%w: it needs the kernel's BTF (%s): %w", ErrBPFProbe, kernelBTF, err)
	}
	s.function, err = openFunction(kspec)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBPFProbe, err)
	}
	spec.Programs[bpfobj.FilewatcherProgFexitOpen].AttachTo = s.function
	routes, why := routePrograms(kspec)
	var objs struct {
		bpfObjects
		bpfRouteObjects
	}
	if routes != nil {
		spec.Programs["route_vfs_create"] = spec.Programs[routes.vfsCreate]
		spec.Programs["route_vfs_link"] = spec.Programs[routes.vfsLink]
		err = s.load(spec, &objs)
	} else {
		s.log.Warn("eBPF-only probe: mknod(2) and O_TMPFILE links are not reported", "reason", why)
		err = s.load(spec, &objs.bpfObjects)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBPFProbe, err)
	}
	type attach struct {
		prog *ebpf.Program
		name string
	}
	// The open function's first (a kernel without trampolines refuses it,
	// and says so by its name); marks before what reads them; fexit before
	// fentry: an event fentry keeps for an ->atomic_open filesystem waits
	// for it.
	order := []attach{{objs.OpenExit, "fexit " + s.function}}
	if routes != nil {
		order = append(order,
			attach{objs.PathMknod, "fexit security_path_mknod"},
			attach{objs.PathLink, "fexit security_path_link"},
			attach{objs.VfsCreate, "fexit vfs_create"},
			attach{objs.VfsLink, "fexit vfs_link"})
	}
	order = append(order, attach{objs.SecurityFileOpen, "fentry security_file_open"})
	s.maps = objs.ProbeMaps
	for _, p := range order {
		s.progs = append(s.progs, p.prog)
	}
	for _, p := range order {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog})
		if err != nil {
			if errors.Is(err, errnoENOTSUPP) || errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("%w: attach %s: %w (no BPF trampolines on kernel functions: x86-64 has them since Linux 5.5, arm64 since 6.4)", ErrBPFProbe, p.name, err)
			}
			return fmt.Errorf("%w: attach %s: %w", ErrBPFProbe, p.name, err)
		}
		s.links = append(s.links, l)
	}
	return nil
}

// bpfRoutes names the variants of the route programs that fit the running
// kernel's prototypes (one program per prototype: the verifier checks each
// argument read against the function's BTF).
type bpfRoutes struct {
	vfsCreate, vfsLink string
}

// routePrograms checks, in the kernel's BTF, the four functions the route
// programs attach to, and picks the vfs_create and vfs_link variants. nil
// and the reason when the kernel lacks one (security_path_*() exist only
// with CONFIG_SECURITY_PATH) or has a prototype the programs do not know.
func routePrograms(spec *btf.Spec) (*bpfRoutes, string) {
	var r bpfRoutes
	for _, f := range []struct {
		fn, param string
		index     int
		nparams   int
		prog      *string
	}{
		{"security_path_mknod", "dentry", 1, 4, nil},
		{"security_path_link", "new_dentry", 2, 3, nil},
		{"vfs_create", "dentry", 1, 4, &r.vfsCreate},
		{"vfs_create", "dentry", 2, 5, &r.vfsCreate},
		{"vfs_link", "new_dentry", 2, 4, &r.vfsLink},
		{"vfs_link", "new_dentry", 3, 5, &r.vfsLink},
	} {
		proto, err := funcProto(spec, f.fn)
		if err != nil {
			return nil, err.Error()
		}
		i, err := paramIndex(proto, f.fn, f.param)
		if err != nil {
			return nil, err.Error()
		}
		switch {
		case i == f.index && len(proto.Params) == f.nparams && f.prog != nil:
			*f.prog = fmt.Sprintf("fexit_%s_%d", f.fn, f.nparams)
		case f.prog == nil && (i != f.index || len(proto.Params) != f.nparams):
			return nil, f.fn + " has a prototype the eBPF-only probe does not know"
		}
	}
	if r.vfsCreate == "" || r.vfsLink == "" {
		return nil, "vfs_create or vfs_link has a prototype the eBPF-only probe does not know"
	}
	return &r, ""
}

// paramIndex returns the position of fn's parameter param (a struct dentry
// pointer) in its prototype proto.
func paramIndex(proto *btf.FuncProto, fn, param string) (int, error) {
	for i, p := range proto.Params {
		if p.Name == param && pointsTo(p.Type, "dentry") {
			return i, nil
		}
	}
	return 0, fmt.Errorf("%s in the kernel's BTF has no parameter %s (struct dentry *)", fn, param)
}

func funcProto(spec *btf.Spec, name string) (*btf.FuncProto, error) {
	var fn *btf.Func
	if err := spec.TypeByName(name, &fn); errors.Is(err, btf.ErrNotFound) {
		return nil, fmt.Errorf("the kernel's BTF has no %s: %w", name, err)
	} else if err != nil {
		return nil, fmt.Errorf("look up %s in the kernel's BTF: %w", name, err)
	}
	proto, _ := fn.Type.(*btf.FuncProto)
	if proto == nil {
		return nil, fmt.Errorf("%s in the kernel's BTF is not a function", name)
	}
	return proto, nil
}

// pointsTo says whether t is a pointer to (const) struct name.
func pointsTo(t btf.Type, name string) bool {
	p, ok := btf.UnderlyingType(t).(*btf.Pointer)
	if !ok {
		return false
	}
	st, ok := btf.UnderlyingType(p.Target).(*btf.Struct)
	return ok && st.Name == name
}

// openFunction returns the first of OpenFunctions in the kernel's BTF. It
// must return a struct file pointer: fexit_open reads the return value as the
// struct file the open made (the verifier checks the rest against the same
// BTF when the program loads).
func openFunction(spec *btf.Spec) (string, error) {
	for _, name := range OpenFunctions {
		proto, err := funcProto(spec, name)
		if errors.Is(err, btf.ErrNotFound) {
			continue
		} else if err != nil {
			return "", err
		}
		if p, ok := btf.UnderlyingType(proto.Return).(*btf.Pointer); ok {
			if st, ok := btf.UnderlyingType(p.Target).(*btf.Struct); ok && st.Name == "file" {
				return name, nil
			}
		}
		return "", fmt.Errorf("%s does not return a struct file pointer: it is not the open function this probe knows", name)
	}
	return "", fmt.Errorf("the kernel's BTF has none of %s", strings.Join(OpenFunctions, ", "))
}

const tracefsDir = "/sys/kernel/tracing"

// mountTracefs mounts tracefs unless tracefs or debugfs already provides the
// tracing events, and says whether it did (Close unmounts it then).
func mountTracefs(log *slog.Logger) (bool, error) {
	for _, dir := range []string{tracefsDir + "/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(dir); err == nil {
			return false, nil
		}
	}
	if err := unix.Mount("nodev", tracefsDir, "tracefs", 0, ""); err != nil {
		return false, fmt.Errorf("mount tracefs at %s: %w", tracefsDir, err)
	}
	log.Info("mounted tracefs", "path", tracefsDir)
	return true, nil
}

// Close detaches the program and frees its maps, pinned or not: a
// deliberate stop. It interrupts Run.
func (s *Source) Close() error {
	var errs []error
	if s.pins != nil {
		errs = append(errs, removePins(s.pins.dir))
	}
	return errors.Join(append(errs, s.release())...)
}

// Pinned says whether the probe is pinned with a valid checkpoint, so that
// Handover leaves a run for the next loader to take over.
func (s *Source) Pinned() bool { return s.pins != nil && !s.pins.failed.Load() }

// Handover closes the source but leaves what is pinned in the kernel, with
// its checkpoint, for the loader that takes over; without pins it is Close.
// Call it after Run has returned.
func (s *Source) Handover() error {
	if !s.Pinned() {
		return s.Close()
	}
	s.log.Info("handing over: the probe stays attached for the next loader", "dir", s.pins.dir)
	return s.release()
}

func (s *Source) release() error {
	var errs []error
	if s.pins != nil {
		errs = append(errs, s.pins.m.Close())
	}
	if s.pinLock != nil {
		errs = append(errs, s.pinLock.Close())
		s.pinLock = nil
	}
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
	}
	for _, l := range s.links {
		errs = append(errs, l.Close())
	}
	for _, p := range s.progs {
		errs = append(errs, p.Close())
	}
	for _, m := range []*ebpf.Map{s.maps.Events, s.maps.Losses, s.maps.Streams} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	// What this run mounted goes with it (lazily: a shell may still be in
	// it).
	if s.mountedTracefs {
		if err := unix.Unmount(tracefsDir, unix.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmount tracefs at %s: %w", tracefsDir, err))
		} else {
			s.log.Info("unmounted tracefs", "path", tracefsDir)
		}
		s.mountedTracefs = false
	}
	return errors.Join(errs...)
}

// Name is the source's name in status reports.
func (s *Source) Name() string { return "kernel" }

// Run reads the ring buffer and publishes events in batches, and losses as
// gaps, until ctx is done or the source is closed.
//
// Losses are polled only right after a flush, so a gap never overtakes an
// event that was read before it.
func (s *Source) Run(ctx context.Context, sink Sink) error {
	now := s.timeNow
	if now == nil {
		now = time.Now
	}
	if s.pins != nil {
		pos, ok := sink.(Positioner)
		if !ok {
			return fmt.Errorf("a pinned source needs a sink that reports its position (%T does not)", sink)
		}
		s.position = pos
	}
	s.refreshClock()
	var rec ringbuf.Record
	lastPoll := now()
	nextPoll := lastPoll.Add(pollInterval)
	// arm sets the reader's deadline to the next drain, or to the next poll
	// if that comes first. pollArmed says which: epoll rounds the timeout
	// down to whole milliseconds, so the deadline can expire up to 1 ms
	// before nextPoll and must still count as the poll's.
	var pollArmed bool
	drain := drainInterval // grows while the ring stays empty
	read := false          // a record was read since the last deadline
	arm := func(t time.Time) {
		d := t.Add(drain)
		pollArmed = !d.Before(nextPoll)
		if pollArmed {
			d = nextPoll
		}
		s.records.SetDeadline(d)
	}
	poll := func(drained bool) {
		s.poll(sink, drained)
		lastPoll = now()
		nextPoll = lastPoll.Add(pollInterval)
		arm(lastPoll)
	}
	arm(lastPoll)
	defer func() { s.flush(sink); s.poll(sink, false) }()
	for {
		err := s.records.ReadInto(&rec)
		switch {
		case err == nil:
			s.add(rec.RawSample, sink)
			drain, read = drainInterval, true
			if len(s.pending) < batchSize && rec.Remaining > 0 {
				continue
			}
			s.flush(sink)
			// A drain after a takeover settles what the dead loader lost.
			takenOver := s.pins != nil && s.pins.open
			if t := now(); !t.Before(nextPoll) || (rec.Remaining == 0 && (takenOver || t.Sub(lastPoll) >= minPollInterval)) {
				poll(rec.Remaining == 0)
			} else if rec.Remaining == 0 {
				// Drained by a forced wakeup: what is written from now on
				// is read within drainInterval, not at a deadline armed
				// while the ring was idle.
				arm(t)
			}
			if ctx.Err() != nil {
				return nil
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The reader reports the deadline only after it has read
			// every record in the ring: the ring has been drained.
			s.flush(sink)
			if !read {
				drain = min(2*drain, pollInterval)
			}
			read = false
			if t := now(); pollArmed || !t.Before(nextPoll) {
				poll(true)
			} else {
				arm(t)
			}
			if ctx.Err() != nil {
				return nil
			}
		case errors.Is(err, ringbuf.ErrClosed), errors.Is(err, os.ErrClosed):
			return nil
		default:
			return fmt.Errorf("read ring buffer: %w", err)
		}
	}
}

// add decodes a record into the pending batch; a record that cannot be
// decoded is a lost event.
func (s *Source) add(raw []byte, sink Sink) {
	if s.pins != nil && len(raw) >= headerSize {
		handOn, lost := s.pins.track(streamOf(raw))
		s.restartPending += lost
		if !handOn {
			return
		}
	}
	s.recordsRead++
	ev, err := s.dec.decode(raw)
	if err != nil {
		s.flush(sink) // keep the gap in order
		s.commit(sink, nil, []gap{{pb.GapReason_GAP_REASON_READ_ERROR, 1}}, 0)
		s.log.Warn("dropped a ring buffer record", "error", err)
		return
	}
	s.pending = append(s.pending, ev)
}

func (s *Source) flush(sink Sink) {
	if len(s.pending) == 0 && s.restartPending == 0 {
		return
	}
	s.commit(sink, s.pending, nil, 0)
	s.pending = make([]*pb.FileCreatedEvent, 0, batchSize)
}

// gap is a count of events lost for a reason.
type gap struct {
	reason pb.GapReason
	n      uint64
}

// commit hands events, then gaps, and missed opens to the sink: one
// publication. Pinned, it first writes the checkpoint as it will be after
// the publication, with the losses to a takeover found so far: a loader that
// replaces this one then never numbers anything again under a sequence this
// one may have delivered.
func (s *Source) commit(sink Sink, events []*pb.FileCreatedEvent, gaps []gap, missedOpens uint64) {
	if s.restartPending > 0 {
		gaps = append(gaps, gap{pb.GapReason_GAP_REASON_LOADER_RESTART, s.restartPending})
		s.restartLost += s.restartPending
		s.restartPending = 0
	}
	if s.pins != nil && !s.pins.failed.Load() {
		n := uint64(len(events))
		var unresolved uint64
		for _, ev := range events {
			if ev.Flags&uint32(pb.EventFlag_EVENT_FLAG_PATH_UNRESOLVED) != 0 {
				unresolved++
			}
		}
		for _, g := range gaps {
			n += g.n
		}
		err := s.saveCheckpoint(n, missedOpens, func(l *pb.LossCounters) {
			l.PathUnresolved += unresolved
			for _, g := range gaps {
				hub.AddLoss(l, g.reason, g.n)
			}
		})
		if err != nil {
			s.checkpointFailed(err)
		}
	}
	if len(events) > 0 {
		sink.Publish(events)
	}
	for _, g := range gaps {
		sink.PublishGap(g.reason, g.n)
	}
	if missedOpens > 0 {
		sink.CountMissedOpens(missedOpens)
	}
}

// poll publishes the growth of the kernel's loss counters as gaps. A
// counter that cannot be read is reported (once per new error) and holds
// back only its own gaps. drained says that the reader has just found the
// ring empty, so that the module's count can be reconciled.
func (s *Source) poll(sink Sink, drained bool) {
	s.refreshClock()
	now, err := s.readLosses(s.last)
	if msg := errorText(err); msg != s.lossErr {
		if err != nil {
			s.log.Warn("cannot read a loss counter; its losses are reported once it can be read again", "error", err)
		} else {
			s.log.Info("loss counters readable again")
		}
		s.lossErr = msg
	}
	gaps := []gap{
		{pb.GapReason_GAP_REASON_RINGBUF_FULL, delta(now.ringbufFull(), s.last.ringbufFull())},
		{pb.GapReason_GAP_REASON_READ_ERROR, delta(now.readErrors, s.last.readErrors)},
		{pb.GapReason_GAP_REASON_PROGRAM_SKIPPED, delta(now.programSkipped, s.last.programSkipped)},
	}
	if drained && s.pins != nil && s.pins.open {
		lost := s.pins.closeWindows()
		s.restartLost += lost
		gaps = append(gaps, gap{pb.GapReason_GAP_REASON_LOADER_RESTART, lost})
		s.log.Info("took over a run: counted what the dead loader had read but not numbered",
			"lost", s.restartLost-s.pins.resumed.Loss.GetLoaderRestart(), "duplicates_dropped", s.pins.duplicates)
	}
	// A counter that could not be read holds its old value, too low to
	// reconcile against: wait until every one is read. Nor can the module's
	// count be reconciled while what a dead loader lost is still unknown.
	if drained && err == nil && (s.pins == nil || !s.pins.open) {
		gaps = append(gaps, gap{pb.GapReason_GAP_REASON_UNEXPLAINED, s.reconcile(now)})
	}
	missed := delta(now.kprobeMissed, s.last.kprobeMissed)
	s.last = now
	s.commit(sink, nil, gaps, missed)
	s.status.Store(&now)
}

// reconcile returns how many more events the module has fired than were
// read or lost for a known reason, beyond those already reported. It is
// called right after the reader found the ring empty, with the counters just
// read, and compares them with the module's count as of the previous poll
// (s.last): the module counts an event after its tracepoint call returns,
// so every event in that count had its record in the ring — read by now —
// or its loss counted — in now, which can only have grown since. Events
// fired after that count was read make the reads and losses larger, never
// smaller, so the difference is a lower bound of what was lost unseen, and
// exact once creations pause: an unexplained gap is never a false alarm.
func (s *Source) reconcile(now lossCounts) uint64 {
	if !s.reconciles || s.last.eventsFired < s.firedBase {
		return 0 // the eBPF-only probe has no independent count
	}
	fired := s.last.eventsFired - s.firedBase
	accounted := s.recordsRead + now.ringbufFull() + now.readErrors + now.programSkipped + s.unexplained + s.restartLost
	if fired <= accounted {
		return 0
	}
	n := fired - accounted
	s.unexplained += n
	s.log.Warn("the module fired events that were neither read nor counted lost", "events", n,
		"events_fired", fired, "records_read", s.recordsRead)
	return n
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// delta is how much a counter grew. Every counter here only grows while the
// loader runs (the attached program pins the module, so it cannot be
// reloaded under us) except the module's kprobe_missed, whose kretprobe part
// is a 32-bit int in the kernel and wraps: a drop of more than 2^31 but at
// most 2^32 is taken for that wrap (the counter went past 2^32 - 1 and on);
// any other drop counts nothing.
func delta(now, before uint64) uint64 {
	if now >= before {
		return now - before
	}
	if drop := before - now; drop > 1<<31 && drop <= 1<<32 {
		return now + 1<<32 - before
	}
	return 0
}

func (s *Source) readKernelLosses(last lossCounts) (lossCounts, error) {
	l := last
	l.ringbufFullPerCPU = slices.Clone(last.ringbufFullPerCPU)
	var errs []error
	var perCPU []bpfobj.FilewatcherLossCounters
	if err := s.maps.Losses.Lookup(uint32(0), &perCPU); err != nil {
		errs = append(errs, fmt.Errorf("read BPF loss counters: %w", err))
	} else {
		l.ringbufFullPerCPU = make([]uint64, len(perCPU))
		l.readErrors = 0
		for i, c := range perCPU {
			l.ringbufFullPerCPU[i] = c.RingbufFull
			l.readErrors += c.ReadErrors
		}
	}
	if s.module != nil {
		if missed, err := s.module.KprobeMissed(); err != nil {
			errs = append(errs, err)
		} else {
			l.kprobeMissed = missed
		}
		if fired, err := s.module.EventsFired(); err != nil {
			errs = append(errs, err)
		} else {
			l.eventsFired = fired
		}
	}
	// Runs of our programs the kernel skipped because another BPF program
	// was running on that CPU (Linux 5.12+; older kernels report 0). On the
	// module's tracepoint each was one event fired and lost; in the eBPF-only
	// probe each was an open that may have created a file, an upper bound
	// like the kretprobe's misses.
	var skipped uint64
	var statsErr error
	for _, p := range s.progs {
		st, err := p.Stats()
		if err != nil {
			statsErr = fmt.Errorf("read BPF program stats: %w", err)
			break
		}
		skipped += st.RecursionMisses
	}
	switch {
	case statsErr != nil:
		errs = append(errs, statsErr)
	case s.probe == ProbeBPF:
		l.kprobeMissed = skipped
	default:
		l.programSkipped = skipped
	}
	return l, errors.Join(errs...)
}

// refreshClock recomputes the offset from CLOCK_MONOTONIC (bpf_ktime_get_ns)
// to wall-clock time, following clock adjustments.
func (s *Source) refreshClock() {
	var mono, real unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) != nil || unix.ClockGettime(unix.CLOCK_REALTIME, &real) != nil {
		return
	}
	s.dec.offset = real.Nano() - mono.Nano()
}

// FillStatus adds the kernel's side to a status report.
func (s *Source) FillStatus(resp *pb.GetStatusResponse) {
	resp.Source = s.Name()
	resp.Probe = string(s.probe)
	resp.ProbeFunction = s.function
	resp.RingbufSizeBytes = s.ringbufSize
	resp.PinDir, resp.PinDetail, resp.Resumes = s.pinStatus()
	if l := s.status.Load(); l != nil {
		resp.RingbufFullPerCpu = l.ringbufFullPerCPU
	}
	if s.module == nil {
		return
	}
	resp.ModuleVersion = s.module.Version()
	if c, err := s.module.Counters(); err == nil {
		resp.KprobeMaxactive = uint32(c.MaxActive)
		resp.ModuleEventsFired = c.EventsFired
	}
}
