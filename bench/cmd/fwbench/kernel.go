package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// Reconcile is one creation storm through the whole kernel path, with every
// event accounted for.
type Reconcile struct {
	Probe       string // the loader's --probe: probeModule or probeBPF
	Pinned      bool   // --pin-dir: checkpointed before every publication
	RingSize    int
	Storm       Storm
	Fired       uint64 // module events_fired delta (probeModule only)
	Missed      uint64 // module kprobe_missed delta (probeModule only)
	Delivered   uint64 // events received under the storm's directory
	Other       uint64 // events received from elsewhere
	Lost        map[string]uint64
	LostTotal   uint64
	Unexplained uint64 // sequence numbers neither delivered nor in a gap
	LoaderCPU   time.Duration
	IdleCPU     time.Duration // the loader's CPU over the same time while idle, measured before the storm
	OK          bool
	Why         string
}

// Ratio is alternating runs without (A) and with (B) the module and program.
type Ratio struct {
	Mode    string
	N       int
	A, B    []Storm
	Cost    Sample // wall time per operation with / without, per pair
	CPUCost Sample // CPU time (user + system) per operation with / without, per pair
}

// Breakdown splits the cost of a create between the pieces: runs without
// anything, with the module alone (tracepoint off: no path is built), with
// the module and bpftrace counting in the kernel (path built, tiny program,
// nothing sent to user space), and with filewatcher (our program, ring
// buffer, loader, subscriber), one after the other in each round.
type Breakdown struct {
	N, Opens int
	Rounds   int
	Stages   []string
	Runs     map[string][]Storm
	OpenRuns map[string][]Storm
	Cost     map[string]Sample // wall time per create ÷ the same round's "without"
	CPU      map[string]Sample // CPU time per create ÷ the same round's "without"
	OpenCost map[string]Sample // wall time per open of an existing file ÷ the same round's "without"
	// The eBPF-only probe's wall time per create and per open ÷ the
	// module's (stageBPF ÷ stageOurs), per round.
	BPFvsModule, BPFvsModuleOpen Sample
	// Rounds in which fsnotifywait exited during its storm (why), so that
	// stage's cost lacks part of its consumer.
	FanotifyExits []string
}

// PeerRun is one consumer of the tracepoint during a creation storm.
type PeerRun struct {
	Name        string
	Storm       Storm
	Seen        uint64
	Lost        uint64 // what the consumer reported lost
	ConsumerCPU time.Duration
	IdleCPU     time.Duration // the consumer's CPU over the same time while idle
	Note        string
}

// KernelPath is sections 3 and 4.
type KernelPath struct {
	Kernel     string
	BootTime   time.Duration
	Reconciles []Reconcile
	Ratios     []Ratio
	Breakdown  *Breakdown
	Peers      []PeerRun
	PeerNote   string
	Routes     []Route // filewatcher and fanotify on each creation route
	// Why the fanotify peer did not run ("" when it did).
	FanotifyNote string
}

func (b *Bench) kernelPath(ctx context.Context) (*KernelPath, error) {
	logf("3/4 kernel path in a %s guest", b.kernelSeries)
	v, err := b.guest(ctx)
	if err != nil {
		return nil, err
	}
	defer v.down()
	k := &KernelPath{Kernel: v.Kernel, BootTime: v.BootTime}
	logf("  guest %s up in %.0fs", v.Kernel, v.BootTime.Seconds())

	for _, run := range []struct {
		probe  string
		ring   int
		pinned bool
	}{{probeModule, 0, false}, {probeModule, b.cfg.smallRing, false}, {probeBPF, 0, false}, {probeModule, 0, true}} {
		r, err := b.reconcile(ctx, v, run.ring, run.probe, run.pinned)
		if err != nil {
			return k, err
		}
		k.Reconciles = append(k.Reconciles, r)
	}
	if k.Ratios, err = b.ratios(ctx, v); err != nil {
		return k, err
	}
	if v.Bpftrace && b.cfg.breakdownRounds > 0 {
		if k.Breakdown, err = b.breakdown(ctx, v); err != nil {
			return k, err
		}
	}
	logf("4/4 peers: bpftrace on the same tracepoint, fanotify on the same filesystem")
	ours := k.Reconciles[0]
	k.Peers = append(k.Peers, PeerRun{Name: "filewatcher (module + BPF ring buffer + loader + gRPC subscriber)",
		Storm: ours.Storm, Seen: ours.Delivered, Lost: ours.LostTotal, ConsumerCPU: ours.LoaderCPU, IdleCPU: ours.IdleCPU,
		Note: "the loader's CPU; events seen = delivered to a gRPC subscriber on the host"})
	if v.Bpftrace {
		for _, mode := range []string{"count", "printf"} {
			p, err := b.bpftracePeer(ctx, v, mode)
			if err != nil {
				return k, err
			}
			k.Peers = append(k.Peers, p)
		}
	} else {
		k.PeerNote = "bpftrace is not installed on this host, so it could not be put in the guest: apt-get install bpftrace"
	}
	if !v.Fsnotify {
		k.FanotifyNote = "fsnotifywait is not installed on this host, so it could not be put in the guest: apt-get install inotify-tools"
		return k, nil
	}
	p, err := b.fanotifyPeer(ctx, v)
	if err != nil {
		return k, err
	}
	k.Peers = append(k.Peers, p)
	if k.Routes, err = b.routes(ctx, v); err != nil {
		return k, err
	}
	return k, nil
}

// The loader's --probe values the benchmark runs.
const (
	probeModule = "kmod"
	probeBPF    = "bpf"
)

func (b *Bench) reconcile(ctx context.Context, v *VM, ring int, probe string, pinned bool) (Reconcile, error) {
	r := Reconcile{Probe: probe, Pinned: pinned, RingSize: ring, Lost: map[string]uint64{}}
	tag := probe + "-default-ring"
	if ring > 0 {
		tag = fmt.Sprintf("%s-ring-%d", probe, ring)
	}
	var extra []string
	if pinned {
		tag += "-pinned"
		extra = []string{"--pin-dir", "/sys/fs/bpf/fwbench"}
	}
	dir := "/tmp/fwb-" + tag
	g, err := v.startLoader(ctx, tag, ring, probe, extra...)
	if err != nil {
		return r, err
	}
	defer g.stop(ctx)
	st, err := g.Status(ctx)
	if err != nil {
		return r, err
	}
	if r.RingSize == 0 {
		r.RingSize = int(st.RingbufSizeBytes)
	}
	c, err := g.subscribe(ctx, dir+"/")
	if err != nil {
		return r, err
	}
	defer c.Close()
	if err := c.waitDrained(ctx, g.Loader, 500*time.Millisecond, time.Minute); err != nil {
		return r, err
	}
	s0 := c.Snapshot()
	// The module's counters; the eBPF-only probe has none.
	counters := v.counters
	if probe == probeBPF {
		counters = func(context.Context) (uint64, uint64, error) { return 0, 0, nil }
	}
	fired0, missed0, err := counters(ctx)
	if err != nil {
		return r, err
	}
	idle, err := v.idleCPU(ctx, g.pid, b.cfg.idleTime)
	if err != nil {
		return r, err
	}
	cpu0, err := v.cpu(ctx, g.pid)
	if err != nil {
		return r, err
	}
	start := time.Now()
	if r.Storm, err = v.storm(ctx, "create", b.cfg.stormWorkers, dir, b.cfg.stormN); err != nil {
		return r, err
	}
	if err := c.waitDrained(ctx, g.Loader, time.Second, 5*time.Minute); err != nil {
		return r, err
	}
	cpu1, err := v.cpu(ctx, g.pid)
	if err != nil {
		return r, err
	}
	r.IdleCPU = time.Duration(idle * float64(time.Since(start)))
	fired1, missed1, err := counters(ctx)
	if err != nil {
		return r, err
	}
	s1 := c.Snapshot()
	r.LoaderCPU = cpu1 - cpu0
	r.Fired, r.Missed = fired1-fired0, missed1-missed0
	r.Delivered = s1.Matching - s0.Matching
	r.Other = (s1.Events - s0.Events) - r.Delivered
	r.Unexplained = s1.Unexplained - s0.Unexplained
	for reason, n := range s1.Gaps {
		if d := n - s0.Gaps[reason]; d > 0 {
			r.Lost[gapName(reason)] = d
			r.LostTotal += d
		}
	}
	r.OK, r.Why = reconciled(r)
	logf("  %s (pinned %v), ring %8d B: created %d, fired %d, delivered %d, lost %d %v, other %d, unexplained %d, missed %d -> %v %s (%.0f creates/s)",
		r.Probe, r.Pinned, r.RingSize, r.Storm.OK, r.Fired, r.Delivered, r.LostTotal, r.Lost, r.Other, r.Unexplained, r.Missed, r.OK, r.Why, r.Storm.PerSec)
	return r, nil
}

func gapName(r pb.GapReason) string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "GAP_REASON_"))
}

// reconciled checks created = fired = delivered + lost, exactly (without
// the module: created = delivered + lost).
func reconciled(r Reconcile) (bool, string) {
	switch {
	case r.Storm.Failed > 0:
		return false, fmt.Sprintf("%d creates failed", r.Storm.Failed)
	case r.Other > 0:
		return false, fmt.Sprintf("%d other files were created meanwhile: cannot attribute losses", r.Other)
	case r.Unexplained > 0:
		return false, fmt.Sprintf("%d sequence numbers neither delivered nor reported lost", r.Unexplained)
	case r.Probe == probeBPF && r.Delivered+r.LostTotal != r.Storm.OK:
		return false, fmt.Sprintf("delivered %d + lost %d != created %d", r.Delivered, r.LostTotal, r.Storm.OK)
	case r.Probe == probeBPF:
		return true, ""
	case r.Missed > 0 && r.Fired+r.Missed < r.Storm.OK:
		return false, fmt.Sprintf("module fired %d + missed %d < created %d", r.Fired, r.Missed, r.Storm.OK)
	case r.Missed == 0 && r.Fired != r.Storm.OK:
		return false, fmt.Sprintf("module fired %d for %d creates", r.Fired, r.Storm.OK)
	case r.Missed == 0 && r.Delivered+r.LostTotal != r.Storm.OK:
		return false, fmt.Sprintf("delivered %d + lost %d != created %d", r.Delivered, r.LostTotal, r.Storm.OK)
	}
	return true, ""
}

// ratios alternates runs without (A) and with (B) the module and program
// loaded, in the order A B B A A B B A ...: the loader (module + program +
// a subscriber on the host) is started before each B B and stopped after it,
// and a drift in the guest's speed affects A and B alike. Each run is the
// create storm and then the open loop. Pair i is the i-th A and the i-th B.
// One untimed round first warms the guest up (TCG translates code on first use).
func (b *Bench) ratios(ctx context.Context, v *VM) ([]Ratio, error) {
	create := Ratio{Mode: "create", N: b.cfg.ratioCreates}
	open := Ratio{Mode: "open", N: b.cfg.ratioOpens}
	const existing = "/tmp/fwb-existing"
	runs := 0
	both := func() (Storm, Storm, error) {
		runs++
		c, err := v.storm(ctx, "create", 1, fmt.Sprintf("/tmp/fwb-ratio-%d", runs), create.N)
		if err != nil {
			return c, Storm{}, err
		}
		o, err := v.storm(ctx, "open", 1, existing, open.N)
		return c, o, err
	}
	without := func() error {
		c, o, err := both()
		create.A, open.A = append(create.A, c), append(open.A, o)
		return err
	}
	with := func(times int) error {
		g, err := v.startLoader(ctx, fmt.Sprintf("ratio-%d", runs), 0, probeModule)
		if err != nil {
			return err
		}
		defer g.stop(ctx)
		sub, err := g.subscribe(ctx, "/tmp/")
		if err != nil {
			return err
		}
		defer sub.Close()
		for range times {
			c, o, err := both()
			if err != nil {
				return err
			}
			create.B, open.B = append(create.B, c), append(open.B, o)
		}
		return nil
	}
	logf("  alternating runs without/with the module and program: %d pairs (A B B A ...)", b.cfg.ratioPairs)
	if _, _, err := both(); err != nil { // warm-up, not counted
		return nil, err
	}
	for len(create.B) < b.cfg.ratioPairs {
		if err := without(); err != nil {
			return nil, err
		}
		if err := with(min(2, b.cfg.ratioPairs-len(create.B))); err != nil {
			return nil, err
		}
		if len(create.A) < b.cfg.ratioPairs {
			if err := without(); err != nil {
				return nil, err
			}
		}
	}
	for _, r := range []*Ratio{&create, &open} {
		for i := range min(len(r.A), len(r.B)) {
			r.Cost = append(r.Cost, r.B[i].NSPerOp()/r.A[i].NSPerOp())
			r.CPUCost = append(r.CPUCost, r.B[i].CPUPerOp()/r.A[i].CPUPerOp())
		}
	}
	logf("  cost with/without: create %s (CPU %s); open %s (CPU %s)", create.Cost.Format("%.2f"),
		create.CPUCost.Format("%.2f"), open.Cost.Format("%.2f"), open.CPUCost.Format("%.2f"))
	return []Ratio{create, open}, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

const (
	stageWithout  = "without"
	stageModule   = "module alone"
	stageBpftrace = "module + bpftrace count"
	stageOurs     = "filewatcher"
	stageBPF      = "filewatcher, eBPF-only probe"
	stageFanotify = "fanotify (fsnotifywait -F -S), no module"
)

func (b *Bench) breakdown(ctx context.Context, v *VM) (*Breakdown, error) {
	bd := &Breakdown{N: b.cfg.ratioCreates, Opens: b.cfg.ratioOpens, Rounds: b.cfg.breakdownRounds,
		Stages: []string{stageWithout, stageModule, stageBpftrace, stageOurs, stageBPF},
		Runs:   map[string][]Storm{}, OpenRuns: map[string][]Storm{},
		Cost: map[string]Sample{}, CPU: map[string]Sample{}, OpenCost: map[string]Sample{}}
	if v.Fsnotify {
		bd.Stages = append(bd.Stages, stageFanotify)
	}
	logf("  where a create's cost goes: %d rounds of %v", bd.Rounds, bd.Stages)
	n := 0
	storm := func(stage string) error {
		n++
		s, err := v.storm(ctx, "create", 1, fmt.Sprintf("/tmp/fwb-breakdown-%d", n), bd.N)
		bd.Runs[stage] = append(bd.Runs[stage], s)
		if err != nil {
			return err
		}
		o, err := v.storm(ctx, "open", 1, "/tmp/fwb-existing", bd.Opens)
		bd.OpenRuns[stage] = append(bd.OpenRuns[stage], o)
		return err
	}
	for range bd.Rounds {
		if err := storm(stageWithout); err != nil {
			return bd, err
		}
		if _, err := v.sh(ctx, "insmod "+guestModule); err != nil {
			return bd, err
		}
		err := storm(stageModule)
		if err == nil {
			var bt *bpftraceRun
			if bt, err = startBpftrace(ctx, v, "breakdown", bpftraceCountProg); err == nil {
				err = storm(stageBpftrace)
				if serr := bt.stop(ctx); err == nil {
					err = serr
				}
			}
		}
		if _, rerr := v.sh(ctx, "rmmod filewatcher"); err == nil {
			err = rerr
		}
		if err != nil {
			return bd, err
		}
		for _, p := range []struct{ stage, probe string }{{stageOurs, probeModule}, {stageBPF, probeBPF}} {
			g, err := v.startLoader(ctx, fmt.Sprintf("breakdown-%d", n), 0, p.probe)
			if err != nil {
				return bd, err
			}
			sub, err := g.subscribe(ctx, "/tmp/")
			if err == nil {
				err = storm(p.stage)
				sub.Close()
			}
			if serr := g.stop(ctx); err == nil {
				err = serr
			}
			if err != nil {
				return bd, err
			}
		}
		if v.Fsnotify {
			f, err := startFsnotifywait(ctx, v, fmt.Sprintf("breakdown-%d", n))
			if err != nil {
				return bd, err
			}
			err = storm(stageFanotify)
			if exited, why, _, serr := f.state(ctx); err == nil && serr == nil && exited {
				bd.FanotifyExits = append(bd.FanotifyExits, why)
			}
			if serr := f.stop(ctx); err == nil {
				err = serr
			}
			if err != nil {
				return bd, err
			}
		}
	}
	for i, a := range bd.Runs[stageWithout] {
		for _, stage := range bd.Stages[1:] {
			s := bd.Runs[stage][i]
			bd.Cost[stage] = append(bd.Cost[stage], s.NSPerOp()/a.NSPerOp())
			bd.CPU[stage] = append(bd.CPU[stage], s.CPUPerOp()/a.CPUPerOp())
			o, oa := bd.OpenRuns[stage][i], bd.OpenRuns[stageWithout][i]
			bd.OpenCost[stage] = append(bd.OpenCost[stage], o.NSPerOp()/oa.NSPerOp())
		}
	}
	// The two probes side by side, round by round.
	for i := range bd.Runs[stageOurs] {
		ours, bpf := bd.Runs[stageOurs][i], bd.Runs[stageBPF][i]
		bd.BPFvsModule = append(bd.BPFvsModule, bpf.NSPerOp()/ours.NSPerOp())
		ours, bpf = bd.OpenRuns[stageOurs][i], bd.OpenRuns[stageBPF][i]
		bd.BPFvsModuleOpen = append(bd.BPFvsModuleOpen, bpf.NSPerOp()/ours.NSPerOp())
	}
	for _, stage := range bd.Stages[1:] {
		logf("  %-28s create cost %s (CPU %s), open cost %s", stage, bd.Cost[stage].Format("%.2f"),
			bd.CPU[stage].Format("%.2f"), bd.OpenCost[stage].Format("%.2f"))
	}
	logf("  eBPF-only probe ÷ module: create %s, open %s", bd.BPFvsModule.Format("%.2f"), bd.BPFvsModuleOpen.Format("%.2f"))
	return bd, nil
}

const (
	bpftraceCountProg  = `BEGIN { printf("fwbench-ready\n"); } tracepoint:filewatcher:file_created { @n = count(); }`
	bpftracePrintfProg = `BEGIN { printf("fwbench-ready\n"); } tracepoint:filewatcher:file_created { printf("%s\n", str(args->filename)); }`
)

// bpftraceRun is bpftrace running in the guest.
type bpftraceRun struct {
	vm  *VM
	pid int
	out string
}

// startBpftrace starts bpftrace with prog and waits until its probes are
// attached (its BEGIN block runs after they are).
func startBpftrace(ctx context.Context, v *VM, tag, prog string) (*bpftraceRun, error) {
	out := "/tmp/bpftrace-" + tag + ".out"
	pid, err := v.background(ctx, out, `exec bpftrace -e "$1"`, "bpftrace", prog)
	if err != nil {
		return nil, err
	}
	bt := &bpftraceRun{vm: v, pid: pid, out: out}
	if err := v.waitFor(ctx, "bpftrace attached", "grep -q fwbench-ready "+out, 3*time.Minute); err != nil {
		text, _ := v.sh(ctx, "tail -n 20 "+out)
		_, _ = v.sh(ctx, fmt.Sprintf("kill -KILL %d", pid))
		return nil, fmt.Errorf("%w: %s", err, text)
	}
	return bt, nil
}

// stop interrupts bpftrace (it prints its maps) and waits for it to exit.
// SIGINT is sent again every 20 s while it runs (one CI run saw bpftrace
// still running a minute after the first); after 3 minutes it is killed,
// and the error says what it was doing.
func (bt *bpftraceRun) stop(ctx context.Context) error {
	v := bt.vm
	gone := fmt.Sprintf("! kill -0 %d 2>/dev/null", bt.pid)
	for range 9 {
		_, _ = v.sh(ctx, fmt.Sprintf("kill -INT %d", bt.pid))
		if v.waitFor(ctx, "bpftrace exit", gone, 20*time.Second) == nil {
			return nil
		}
	}
	state, _ := v.sh(ctx, fmt.Sprintf("grep -E '^(State|SigIgn|SigCgt|SigPnd|ShdPnd)' /proc/%[1]d/status; cat /proc/%[1]d/wchan; echo; cat /proc/%[1]d/stack", bt.pid))
	_, _ = v.sh(ctx, fmt.Sprintf("kill -KILL %d", bt.pid))
	return fmt.Errorf("bpftrace did not exit within 3 minutes of SIGINT (killed): %s", strings.Join(strings.Fields(state), " "))
}

var (
	bpftraceCount = regexp.MustCompile(`@n: (\d+)`)
	bpftraceLost  = regexp.MustCompile(`Lost (\d+) events`)
)

// bpftracePeer runs Debian's bpftrace on filewatcher:file_created during the
// same storm as ours: "count" aggregates in the kernel (a per-CPU map, the
// cheapest thing bpftrace can do), "printf" sends every path to user space
// through its perf buffer (the closest to our job).
func (b *Bench) bpftracePeer(ctx context.Context, v *VM, mode string) (PeerRun, error) {
	p := PeerRun{Name: "bpftrace 0.17, " + mode}
	dir := "/tmp/fwb-bpftrace-" + mode
	prog := bpftraceCountProg
	if mode == "printf" {
		prog = bpftracePrintfProg
		p.Note = "paths printed to a file in the guest's tmpfs; str() keeps 64 bytes by default"
	} else {
		p.Note = "counts in a per-CPU map, nothing per event reaches user space"
	}
	if _, err := v.sh(ctx, "insmod "+guestModule); err != nil {
		return p, err
	}
	defer v.sh(ctx, "rmmod filewatcher")
	bt, err := startBpftrace(ctx, v, mode, prog)
	if err != nil {
		return p, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = bt.stop(ctx)
		}
	}()
	pid, out := bt.pid, bt.out
	idle, err := v.idleCPU(ctx, pid, b.cfg.idleTime)
	if err != nil {
		return p, err
	}
	cpu0, err := v.cpu(ctx, pid)
	if err != nil {
		return p, err
	}
	start := time.Now()
	if p.Storm, err = v.storm(ctx, "create", b.cfg.stormWorkers, dir, b.cfg.stormN); err != nil {
		return p, err
	}
	count := func() (uint64, error) {
		s, err := v.sh(ctx, `grep -c "^$1" "$2" || true`, "grep", dir+"/", out)
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(lastLine(s), 10, 64)
	}
	if mode == "printf" {
		// Wait until bpftrace has printed what it will print.
		last, stable := uint64(0), 0
		for stable < 3 {
			time.Sleep(500 * time.Millisecond)
			n, err := count()
			if err != nil {
				return p, err
			}
			if n == last {
				stable++
			} else {
				last, stable = n, 0
			}
		}
	}
	cpu1, err := v.cpu(ctx, pid)
	if err != nil {
		return p, err
	}
	p.ConsumerCPU = cpu1 - cpu0
	p.IdleCPU = time.Duration(idle * float64(time.Since(start)))
	stopped = true
	if err := bt.stop(ctx); err != nil {
		return p, err
	}
	text, err := v.sh(ctx, "grep -v '^"+dir+"/' "+out+" || true")
	if err != nil {
		return p, err
	}
	for _, m := range bpftraceLost.FindAllStringSubmatch(text, -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		p.Lost += n
	}
	if mode == "count" {
		m := bpftraceCount.FindStringSubmatch(text)
		if m == nil {
			return p, fmt.Errorf("bpftrace printed no count: %q", lastLines(text, 5))
		}
		p.Seen, _ = strconv.ParseUint(m[1], 10, 64)
	} else if p.Seen, err = count(); err != nil {
		return p, err
	}
	logf("  %-22s seen %d of %d, lost %d, consumer CPU %.2fs, %.0f creates/s", p.Name, p.Seen, p.Storm.OK, p.Lost, p.ConsumerCPU.Seconds(), p.Storm.PerSec)
	return p, nil
}
