package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// PipelineRun is one run of synthetic loader -> gRPC -> exporter at a fixed
// target rate: after a warm-up, a window in which everything is measured.
type PipelineRun struct {
	Tag        string
	Target     int // events/s asked of the loader (0: as fast as it can)
	Window     time.Duration
	Produced   uint64  // sequence numbers the loader assigned in the window
	Delivered  uint64  // events the loader sent to the exporter's stream in the window
	Received   float64 // events the exporter counted in the window (probe)
	Dropped    uint64  // events the loader dropped for the exporter in the window
	WarmupLost float64 // events lost before the window (warm-up)
	ExpLost    float64 // the exporter's filewatcher_exporter_events_lost_total at the end (whole run)
	Unreported float64 // exporter losses the loader did not report (sequence_gap)
	QueueStart uint32
	QueueEnd   uint32
	QueueMax   uint32
	QueueCap   uint32
	LoaderCPU  time.Duration
	ExportCPU  time.Duration
	Latency    ProbeStats
	Pass       bool
	Why        string // why it did not pass
}

// Rate is the produced rate in the window.
func (r PipelineRun) Rate() float64 { return float64(r.Produced) / r.Window.Seconds() }

// LoaderUS and ExporterUS are CPU µs per event in the window.
func (r PipelineRun) LoaderUS() float64 {
	return float64(r.LoaderCPU.Microseconds()) / max(1, float64(r.Produced))
}

func (r PipelineRun) ExporterUS() float64 {
	return float64(r.ExportCPU.Microseconds()) / max(1, r.Received)
}

// pipelineOptions vary a run.
type pipelineOptions struct {
	dirs, names  int
	noExporter   bool   // loader alone: the cost of making synthetic events
	profileOut   string // CPU-profile the exporter during the window into this .cpuprofile
	perfOut      string // perf record the loader during the window into this file
	exporterArgs []string
}

// runPipeline runs one rate step.
func (b *Bench) runPipeline(ctx context.Context, tag string, rate int, o pipelineOptions) (PipelineRun, error) {
	r := PipelineRun{Tag: tag, Target: rate, Window: b.cfg.window}
	if o.dirs == 0 {
		o.dirs, o.names = 100, 1000 // the loader's defaults
	}
	l, err := b.startSyntheticLoader(tag, rate, o.dirs, o.names)
	if err != nil {
		return r, err
	}
	defer l.Close()
	var e *Exporter
	if !o.noExporter {
		e, err = b.startExporter(tag, l.Addr, nil, o.exporterArgs...)
		if err != nil {
			return r, err
		}
		defer e.Stop(10 * time.Second)
		if err := e.waitReady(ctx, 30*time.Second); err != nil {
			return r, err
		}
	}
	time.Sleep(b.cfg.warmup)

	st0, err := l.Status(ctx)
	if err != nil {
		return r, err
	}
	sub0 := firstSubscriber(st0)
	lc0, err := cpuTime(l.PID())
	if err != nil {
		return r, err
	}
	var ec0 time.Duration
	if e != nil {
		if _, err := e.stats(ctx, true); err != nil {
			return r, err
		}
		if ec0, err = cpuTime(e.PID()); err != nil {
			return r, err
		}
		r.WarmupLost = float64(sub0.GetDropped())
		r.QueueStart, r.QueueCap = sub0.GetQueueDepth(), sub0.GetQueueCapacity()
	}
	var perf *Process
	if o.perfOut != "" {
		perf, err = startProcess("perf", filepath.Join(b.work, tag+"-perf.log"), nil,
			"perf", "record", "-e", "cpu-clock", "-F", "499", "-g", "-o", o.perfOut, "-p", fmt.Sprint(l.PID()))
		if err != nil {
			return r, err
		}
	}
	if o.profileOut != "" && e != nil {
		if err := e.profileStart(ctx); err != nil {
			return r, err
		}
	}
	start := time.Now()
	for time.Since(start) < r.Window {
		time.Sleep(min(250*time.Millisecond, r.Window-time.Since(start)))
		if e == nil {
			continue
		}
		st, err := l.Status(ctx)
		if err != nil {
			return r, err
		}
		if s := firstSubscriber(st); s != nil {
			r.QueueMax = max(r.QueueMax, s.QueueDepth)
		}
	}
	lc1, err := cpuTime(l.PID())
	if err != nil {
		return r, err
	}
	st1, err := l.Status(ctx)
	if err != nil {
		return r, err
	}
	r.Window = time.Since(start)
	r.LoaderCPU = lc1 - lc0
	r.Produced = st1.LastSequence - st0.LastSequence
	if perf != nil {
		perf.Stop(10 * time.Second) // SIGTERM makes perf record write its file
	}
	if o.profileOut != "" && e != nil {
		if err := e.profileStop(ctx, o.profileOut); err != nil {
			return r, err
		}
	}
	if e == nil {
		r.Pass = true
		return r, nil
	}
	ec1, err := cpuTime(e.PID())
	if err != nil {
		return r, err
	}
	r.ExportCPU = ec1 - ec0
	if r.Latency, err = e.stats(ctx, false); err != nil {
		return r, err
	}
	r.Received = r.Latency.Events
	sub1 := firstSubscriber(st1)
	r.Delivered = sub1.GetDelivered() - sub0.GetDelivered()
	r.Dropped = sub1.GetDropped() - sub0.GetDropped()
	r.QueueEnd = sub1.GetQueueDepth()
	r.QueueMax = max(r.QueueMax, r.QueueEnd)
	sc, err := e.scrape(ctx)
	if err != nil {
		return r, err
	}
	r.ExpLost = sc.Metrics.Sum("filewatcher_exporter_events_lost_total")
	r.Unreported = r.ExpLost - float64(sub1.GetDropped())
	r.Pass, r.Why = judge(r)
	return r, nil
}

func firstSubscriber(st *pb.GetStatusResponse) *pb.SubscriberStatus {
	if len(st.Subscribers) == 0 {
		return nil
	}
	return st.Subscribers[0]
}

// judge says whether a run sustained its rate: the loader made what was
// asked, nothing was lost in the window, the exporter counted (nearly) all
// of it, and the subscriber queue did not grow.
func judge(r PipelineRun) (bool, string) {
	switch {
	case r.Dropped > 0:
		return false, fmt.Sprintf("%d events dropped (subscriber queue full)", r.Dropped)
	case r.Unreported > 0:
		return false, fmt.Sprintf("%.0f events missing without a gap", r.Unreported)
	case r.Target > 0 && r.Rate() < 0.97*float64(r.Target):
		return false, fmt.Sprintf("loader made only %.0f/s", r.Rate())
	case r.Received < 0.97*float64(r.Produced):
		return false, fmt.Sprintf("exporter counted %.0f of %d", r.Received, r.Produced)
	case r.QueueEnd > 4096 && float64(r.QueueEnd)-float64(r.QueueStart) > 0.01*float64(r.Produced):
		return false, fmt.Sprintf("queue grew from %d to %d", r.QueueStart, r.QueueEnd)
	}
	return true, ""
}

// Userspace is section 1's results.
type Userspace struct {
	Steps        []PipelineRun
	MaxSustained int
	AllHeld      bool          // every step held: the limit is above the highest rate tried
	Confirm      []PipelineRun // repeated runs at the highest rates that held, down to MaxSustained
	Reference    []PipelineRun // repeated runs at the reference rate
	LoaderOnly   []PipelineRun // the loader alone at the reference rate
	RefRate      int
	Profile      *Profiles
}

func (b *Bench) userspace(ctx context.Context) (*Userspace, error) {
	u := &Userspace{RefRate: b.cfg.refRate}
	logf("1/4 userspace path: stepping the rate")
	step := func(rate int) (PipelineRun, error) {
		r, err := b.runPipeline(ctx, fmt.Sprintf("step-%d", rate), rate, pipelineOptions{})
		if err == nil {
			logf("  rate %7d/s: made %7.0f/s, exporter %5.2f µs/ev, loader %5.2f µs/ev, queue max %5d, dropped %d, pass=%v %s",
				rate, r.Rate(), r.ExporterUS(), r.LoaderUS(), r.QueueMax, r.Dropped, r.Pass, r.Why)
			u.Steps = append(u.Steps, r)
		}
		return r, err
	}
	lastPass, firstFail := 0, 0
	for _, rate := range b.cfg.rates {
		r, err := step(rate)
		if err != nil {
			return u, err
		}
		if !r.Pass {
			firstFail = rate
			break
		}
		lastPass = rate
	}
	// Narrow the gap between the last rate that held and the first that did not.
	for i := 0; i < b.cfg.bisect && firstFail > 0 && firstFail-lastPass > 10_000; i++ {
		mid := (lastPass + firstFail) / 2 / 1000 * 1000
		r, err := step(mid)
		if err != nil {
			return u, err
		}
		if r.Pass {
			lastPass = mid
		} else {
			firstFail = mid
		}
	}
	u.MaxSustained = lastPass
	u.AllHeld = firstFail == 0 && lastPass > 0
	// The step at the reference rate counts as its first repeat.
	for _, r := range u.Steps {
		if r.Target == b.cfg.refRate && len(u.Reference) == 0 {
			u.Reference = append(u.Reference, r)
		}
	}
	if lastPass > 0 && !b.smoke {
		// The bisection ends on the edge, where a repeat may fail: confirm
		// with repeated runs, stepping down through the rates that held
		// until one holds in every repeat (on a busy 2-core machine the top
		// few can each lose a repeat to a stall).
		var held []int
		for i := len(u.Steps) - 1; i >= 0; i-- {
			if r := u.Steps[i]; r.Pass && !slices.Contains(held, r.Target) {
				held = append(held, r.Target)
			}
		}
		slices.SortFunc(held, func(a, b int) int { return b - a })
		u.MaxSustained = 0
		for _, rate := range held {
			logf("  confirming %d/s x%d", rate, b.cfg.repeats)
			all := true
			for i := range b.cfg.repeats {
				r, err := b.runPipeline(ctx, fmt.Sprintf("confirm-%d-%d", rate, i), rate, pipelineOptions{})
				if err != nil {
					return u, err
				}
				u.Confirm = append(u.Confirm, r)
				all = all && r.Pass
			}
			if all {
				u.MaxSustained = rate
				break
			}
		}
		u.AllHeld = u.AllHeld && u.MaxSustained == lastPass
	}
	logf("  reference rate %d/s x%d (with exporter, and loader alone)", b.cfg.refRate, b.cfg.repeats)
	for i := range b.cfg.repeats {
		if len(u.Reference) < b.cfg.repeats {
			r, err := b.runPipeline(ctx, fmt.Sprintf("ref-%d", i), b.cfg.refRate, pipelineOptions{})
			if err != nil {
				return u, err
			}
			u.Reference = append(u.Reference, r)
		}
		r, err := b.runPipeline(ctx, fmt.Sprintf("alone-%d", i), b.cfg.refRate, pipelineOptions{noExporter: true})
		if err != nil {
			return u, err
		}
		u.LoaderOnly = append(u.LoaderOnly, r)
	}
	logf("  profiling at %d/s", b.cfg.refRate)
	p, err := b.profilePipeline(ctx, b.cfg.refRate)
	if err != nil {
		logf("  profile failed: %v", err)
	}
	u.Profile = p
	return u, nil
}
