package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// Section 5: the exporter's OTLP event export (--otlp-events: every event
// as a log record) into a real OpenTelemetry Collector, the one
// scripts/build-collector.sh builds from test/fleet/collector/manifest.yaml.

// otlpQueueSize is --otlp-events-queue-size of every run (the default, given
// explicitly so that the report's "half the queue" is this number).
const otlpQueueSize = 65536

// OTLPRun is one synthetic loader -> exporter (-> the Collector) at a fixed
// rate: after a warm-up, a window in which everything is measured. The
// counts are the window's differences of the exporter's own counters.
type OTLPRun struct {
	Tag           string
	Target        int  // events/s asked of the loader
	Events        bool // --otlp-events true (else no OTLP at all)
	Window        time.Duration
	Produced      uint64             // sequence numbers the loader assigned in the window
	Received      float64            // filewatcher_exporter_events_received_total
	Exported      float64            // filewatcher_exporter_otlp_events_exported_total
	Dropped       float64            // filewatcher_exporter_otlp_events_dropped_total, any reason
	DropReasons   map[string]float64 // the same by label set (nonzero only)
	ExportsFailed float64            // filewatcher_exporter_otlp_exports_failed_total (retried, not lost by itself)
	QueueEnd      float64            // filewatcher_exporter_otlp_events_queued at the window's end
	QueueSize     int
	LoaderDropped uint64  // events the loader dropped for the exporter (GetStatus subscribers)
	LoaderQueue   uint32  // the loader's subscriber queue at its deepest in the window
	CollectorGot  float64 // log records the Collector's debug exporter logged (window, plus 1 s)
	ExportCPU     time.Duration
	CollectorCPU  time.Duration
	ExporterRSS   int64
	Pass          bool
	Why           string
}

// Rate is the produced rate in the window.
func (r OTLPRun) Rate() float64 { return float64(r.Produced) / r.Window.Seconds() }

// ExporterUS is the exporter's CPU µs per event: per exported event with
// --otlp-events, per received event without.
func (r OTLPRun) ExporterUS() float64 {
	n := r.Received
	if r.Events {
		n = r.Exported
	}
	return float64(r.ExportCPU.Microseconds()) / max(1, n)
}

// CollectorUS is the Collector's CPU µs per exported event.
func (r OTLPRun) CollectorUS() float64 {
	return float64(r.CollectorCPU.Microseconds()) / max(1, r.Exported)
}

// judgeOTLP says whether a run kept up with zero loss.
func judgeOTLP(r OTLPRun) (bool, string) {
	switch {
	case r.LoaderDropped > 0:
		return false, fmt.Sprintf("loader dropped %d for the exporter", r.LoaderDropped)
	case r.Dropped > 0:
		return false, fmt.Sprintf("%.0f events dropped by the OTLP export (%s)", r.Dropped, reasonsText(r.DropReasons))
	case r.Produced > 0 && r.Rate() < 0.97*float64(r.Target):
		return false, fmt.Sprintf("loader made only %.0f/s", r.Rate())
	case r.Events && r.Exported < 0.97*r.Received:
		return false, fmt.Sprintf("exported %.0f of %.0f received", r.Exported, r.Received)
	case r.Events && r.QueueEnd >= float64(r.QueueSize)/2:
		return false, fmt.Sprintf("export queue at %.0f of %d", r.QueueEnd, r.QueueSize)
	case r.Events && r.CollectorGot < r.Exported:
		return false, fmt.Sprintf("the Collector logged %.0f records, the exporter counted %.0f exported", r.CollectorGot, r.Exported)
	}
	return true, ""
}

func reasonsText(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s: %.0f", k, v))
	}
	return strings.Join(parts, ", ")
}

// OTLPFleet is K loader+exporter pairs ("hosts") pushing events to one Collector.
type OTLPFleet struct {
	Hosts        int
	RatePerHost  int
	Window       time.Duration
	Members      []OTLPRun // one per host (their CollectorCPU is not set)
	Received     float64
	Exported     float64
	Dropped      float64
	LoaderDrop   uint64
	CollectorGot float64
	CollectorCPU time.Duration
	CollectorRSS int64
	CollectorHWM int64
	OK           bool
	Why          string
}

// CollectorUS is the Collector's CPU µs per event of the whole fleet.
func (f *OTLPFleet) CollectorUS() float64 {
	return float64(f.CollectorCPU.Microseconds()) / max(1, f.Exported)
}

// PerCore is the events/s one Collector core ingests at that cost.
func (f *OTLPFleet) PerCore() float64 { return 1e6 / max(1e-9, f.CollectorUS()) }

// OTLPBench is section 5's results.
type OTLPBench struct {
	Collector   string // the binary
	Version     string // its --version
	QueueSize   int
	BatchSize   int
	Steps       []OTLPRun
	MaxZeroLoss int  // the highest rate that held, before the first that did not
	AllHeld     bool // every rate tried held
	RefRate     int
	RefNote     string    // why the reference rate is not the configured one
	With        []OTLPRun // at RefRate, --otlp-events true
	Without     []OTLPRun // at RefRate, no OTLP, paired with With
	Fleets      []*OTLPFleet
}

// Ratios are exporter µs/event with events ÷ without, pair by pair.
func (o *OTLPBench) Ratios() Sample {
	s := Sample{}
	for i := range min(len(o.With), len(o.Without)) {
		s = append(s, o.With[i].ExporterUS()/max(1e-9, o.Without[i].ExporterUS()))
	}
	return s
}

// collectorBin runs scripts/build-collector.sh (instant when built) and
// returns the binary's path.
func (b *Bench) collectorBin(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	logPath := filepath.Join(b.work, "build-collector.log")
	f, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(b.repo, "scripts", "build-collector.sh"))
	cmd.Dir = b.repo
	cmd.Stderr = f
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/build-collector.sh failed (%v; make setup builds the Collector): %s", err, tail(logPath, 10))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	bin := strings.TrimSpace(lines[len(lines)-1])
	if st, err := os.Stat(bin); err != nil || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("scripts/build-collector.sh printed %q, which is not an executable (%v)", bin, err)
	}
	return bin, nil
}

// Collector is one otelcol-filewatcher: OTLP/HTTP receiver, batch
// processor, debug exporter (one log line per batch), no internal metrics.
// Its log is not sampled (by default zap keeps only some of the lines of a
// message repeated within a second), so that the debug exporter's lines
// count every record.
type Collector struct {
	*Process
	Addr   string
	offset int64   // how far records has read the log
	rest   []byte  // a partial last line
	got    float64 // log records logged so far
}

const collectorConfig = `receivers:
  otlp:
    protocols:
      http:
        endpoint: %s
processors:
  batch:
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    logs:
      sampling:
        enabled: false
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
`

var (
	collectorReady   = regexp.MustCompile(`Everything is ready`)
	collectorRecords = regexp.MustCompile(`"log records": (\d+)`)
)

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startCollector starts the Collector on a free loopback port (trying again
// if another process took the port in between).
func (b *Bench) startCollector(tag, bin string) (*Collector, error) {
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cfg := filepath.Join(b.work, tag+"-collector.yaml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(collectorConfig, addr)), 0o644); err != nil {
			return nil, err
		}
		p, err := startProcess("collector", filepath.Join(b.work, tag+"-collector.log"), nil, bin, "--config="+cfg)
		if err != nil {
			return nil, err
		}
		if _, err := p.waitLog(collectorReady, 60*time.Second); err != nil {
			p.Stop(5 * time.Second)
			lastErr = err
			continue
		}
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			p.Stop(5 * time.Second)
			lastErr = fmt.Errorf("the Collector does not listen on %s: %w", addr, err)
			continue
		}
		conn.Close()
		return &Collector{Process: p, Addr: addr}, nil
	}
	return nil, fmt.Errorf("start the Collector: %w", lastErr)
}

// records is the number of log records the debug exporter has logged so far.
func (c *Collector) records() (float64, error) {
	f, err := os.Open(c.Log)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if _, err := f.Seek(c.offset, io.SeekStart); err != nil {
		return 0, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	c.offset += int64(len(data))
	data = append(c.rest, data...)
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		c.rest = data
		return c.got, nil
	}
	for _, line := range bytes.Split(data[:end], []byte{'\n'}) {
		if m := collectorRecords.FindSubmatch(line); m != nil {
			n, _ := strconv.ParseFloat(string(m[1]), 64)
			c.got += n
		}
	}
	c.rest = append([]byte(nil), data[end+1:]...)
	return c.got, nil
}

// otlpHost is one synthetic loader and its exporter.
type otlpHost struct {
	tag    string
	target int
	events bool
	l      *Loader
	e      *Exporter
	qmax   uint32
}

func (b *Bench) startOTLPHost(ctx context.Context, tag string, rate int, col *Collector, events bool) (*otlpHost, error) {
	l, err := b.startSyntheticLoader(tag, rate, 100, 1000)
	if err != nil {
		return nil, err
	}
	h := &otlpHost{tag: tag, target: rate, events: events, l: l}
	var args []string
	if events {
		args = []string{"--otlp-endpoint", "http://" + col.Addr, "--otlp-events", "true", "--otlp-metrics", "false",
			"--otlp-events-queue-size", strconv.Itoa(otlpQueueSize)}
	}
	if h.e, err = b.startExporter(tag, l.Addr, nil, args...); err != nil {
		l.Close()
		return nil, err
	}
	if err := h.e.waitReady(ctx, 30*time.Second); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func (h *otlpHost) Close() {
	if h.e != nil {
		h.e.Stop(10 * time.Second)
	}
	h.l.Close()
}

// hostPoint is one host at one end of the window.
type hostPoint struct {
	st  *pb.GetStatusResponse
	m   Metrics
	cpu time.Duration
}

// point reads the loader's status, the exporter's /metrics and its CPU time.
// The scrape is outside the CPU interval: before the CPU at the start,
// after it at the end.
func (h *otlpHost) point(ctx context.Context, end bool) (hostPoint, error) {
	var p hostPoint
	var err error
	if end {
		if p.cpu, err = cpuTime(h.e.PID()); err != nil {
			return p, err
		}
	}
	if p.st, err = h.l.Status(ctx); err != nil {
		return p, err
	}
	sc, err := h.e.scrape(ctx)
	if err != nil {
		return p, err
	}
	p.m = sc.Metrics
	if !end {
		if p.cpu, err = cpuTime(h.e.PID()); err != nil {
			return p, err
		}
	}
	return p, nil
}

func (h *otlpHost) result(p0, p1 hostPoint, window time.Duration) OTLPRun {
	r := OTLPRun{Tag: h.tag, Target: h.target, Events: h.events, Window: window, QueueSize: otlpQueueSize,
		LoaderQueue: h.qmax, ExportCPU: p1.cpu - p0.cpu}
	d := func(name string) float64 { return p1.m.Sum(name) - p0.m.Sum(name) }
	r.Produced = p1.st.LastSequence - p0.st.LastSequence
	r.Received = d("filewatcher_exporter_events_received_total")
	r.Exported = d("filewatcher_exporter_otlp_events_exported_total")
	r.Dropped = d("filewatcher_exporter_otlp_events_dropped_total")
	r.ExportsFailed = d("filewatcher_exporter_otlp_exports_failed_total")
	r.QueueEnd = p1.m.Sum("filewatcher_exporter_otlp_events_queued")
	for k, v := range p1.m["filewatcher_exporter_otlp_events_dropped_total"] {
		if n := v - p0.m["filewatcher_exporter_otlp_events_dropped_total"][k]; n > 0 {
			if r.DropReasons == nil {
				r.DropReasons = map[string]float64{}
			}
			r.DropReasons[k] = n
		}
	}
	s0, s1 := firstSubscriber(p0.st), firstSubscriber(p1.st)
	r.LoaderDropped = s1.GetDropped() - s0.GetDropped()
	if rss, _, err := rssBytes(h.e.PID()); err == nil {
		r.ExporterRSS = rss
	}
	return r
}

// otlpWindow measures hosts (and the Collector) over one window. The
// Collector's record count is read before the exporters' counters at the
// start and 1 s after them at the end (its batch processor holds a batch up
// to 200 ms), so it covers at least what they count exported in between.
func (b *Bench) otlpWindow(ctx context.Context, hosts []*otlpHost, col *Collector, window time.Duration) (runs []OTLPRun, got float64, ccpu time.Duration, err error) {
	got0, err := col.records()
	if err != nil {
		return nil, 0, 0, err
	}
	p0 := make([]hostPoint, len(hosts))
	for i, h := range hosts {
		if p0[i], err = h.point(ctx, false); err != nil {
			return nil, 0, 0, err
		}
	}
	c0, err := cpuTime(col.PID())
	if err != nil {
		return nil, 0, 0, err
	}
	start := time.Now()
	for time.Since(start) < window {
		time.Sleep(min(250*time.Millisecond, window-time.Since(start)))
		if err := ctx.Err(); err != nil {
			return nil, 0, 0, err
		}
		for _, h := range hosts {
			st, err := h.l.Status(ctx)
			if err != nil {
				return nil, 0, 0, err
			}
			if s := firstSubscriber(st); s != nil {
				h.qmax = max(h.qmax, s.QueueDepth)
			}
		}
	}
	c1, err := cpuTime(col.PID())
	if err != nil {
		return nil, 0, 0, err
	}
	elapsed := time.Since(start)
	for i, h := range hosts {
		p1, err := h.point(ctx, true)
		if err != nil {
			return nil, 0, 0, err
		}
		runs = append(runs, h.result(p0[i], p1, elapsed))
	}
	time.Sleep(time.Second)
	got1, err := col.records()
	if err != nil {
		return nil, 0, 0, err
	}
	return runs, got1 - got0, c1 - c0, nil
}

// otlpRun is one rate step: a fresh loader and exporter against col.
func (b *Bench) otlpRun(ctx context.Context, tag string, rate int, col *Collector, events bool) (OTLPRun, error) {
	h, err := b.startOTLPHost(ctx, tag, rate, col, events)
	if err != nil {
		return OTLPRun{Tag: tag, Target: rate, Events: events}, err
	}
	defer h.Close()
	time.Sleep(b.cfg.warmup)
	runs, got, ccpu, err := b.otlpWindow(ctx, []*otlpHost{h}, col, b.cfg.window)
	if err != nil {
		return OTLPRun{Tag: tag, Target: rate, Events: events}, err
	}
	r := runs[0]
	r.CollectorGot, r.CollectorCPU = got, ccpu
	r.Pass, r.Why = judgeOTLP(r)
	collector := fmt.Sprintf("%.2f s CPU", r.CollectorCPU.Seconds())
	if r.Exported > 0 {
		collector += fmt.Sprintf(" (%.2f µs/ev)", r.CollectorUS())
	}
	logf("  %-18s %6d/s: made %6.0f/s, received %7.0f, exported %7.0f, dropped %.0f (loader %d), queue %5.0f, exporter %6.2f µs/ev, Collector %s, pass=%v %s",
		tag, rate, r.Rate(), r.Received, r.Exported, r.Dropped, r.LoaderDropped, r.QueueEnd, r.ExporterUS(),
		collector, r.Pass, r.Why)
	return r, nil
}

func (b *Bench) otlpSection(ctx context.Context) (*OTLPBench, error) {
	logf("5/5 OTLP: events as log records to a real Collector")
	o := &OTLPBench{QueueSize: otlpQueueSize, BatchSize: 1024, RefRate: b.cfg.otlpRefRate}
	bin, err := b.collectorBin(ctx)
	if err != nil {
		return nil, err
	}
	o.Collector = bin
	if out, err := exec.CommandContext(ctx, bin, "--version").Output(); err == nil {
		o.Version = strings.TrimSpace(string(out))
	}
	col, err := b.startCollector("otlp", bin)
	if err != nil {
		return o, err
	}
	defer col.Stop(10 * time.Second)

	logf("  stepping the rate (exporter --otlp-events true --otlp-metrics false)")
	firstFail := 0
	for _, rate := range b.cfg.otlpRates {
		r, err := b.otlpRun(ctx, fmt.Sprintf("otlp-%d", rate), rate, col, true)
		if err != nil {
			return o, err
		}
		o.Steps = append(o.Steps, r)
		if !r.Pass {
			firstFail = rate
			break
		}
		o.MaxZeroLoss = rate
	}
	o.AllHeld = firstFail == 0 && o.MaxZeroLoss > 0
	if o.MaxZeroLoss > 0 && o.MaxZeroLoss < o.RefRate {
		o.RefNote = fmt.Sprintf("the configured %s/s did not hold with events, so the highest rate that did", thousands(float64(o.RefRate)))
		o.RefRate = o.MaxZeroLoss
	}

	logf("  reference %d/s x%d: with --otlp-events, and without OTLP", o.RefRate, b.cfg.repeats)
	if b.smoke { // the step at the reference rate is the first with-run
		for _, r := range o.Steps {
			if r.Target == o.RefRate && len(o.With) == 0 {
				o.With = append(o.With, r)
			}
		}
	}
	for i := range b.cfg.repeats {
		// A B B A: the order alternates, so that a drift of the machine's
		// load does not favour one of the two.
		order := []bool{true, false}
		if i%2 == 1 {
			order = []bool{false, true}
		}
		for _, events := range order {
			if events && len(o.With) > i {
				continue
			}
			tag := fmt.Sprintf("otlp-ref-%d-without", i)
			if events {
				tag = fmt.Sprintf("otlp-ref-%d-with", i)
			}
			r, err := b.otlpRun(ctx, tag, o.RefRate, col, events)
			if err != nil {
				return o, err
			}
			if events {
				o.With = append(o.With, r)
			} else {
				o.Without = append(o.Without, r)
			}
		}
	}
	col.Stop(10 * time.Second)
	if ctx.Err() != nil {
		return o, ctx.Err()
	}

	for _, size := range b.cfg.fleets {
		f, err := b.otlpFleet(ctx, bin, size[0], size[1])
		if f != nil {
			o.Fleets = append(o.Fleets, f)
		}
		if err != nil {
			return o, err
		}
	}
	return o, nil
}

// otlpFleet runs hosts loader+exporter pairs at rate events/s each into one
// fresh Collector.
func (b *Bench) otlpFleet(ctx context.Context, bin string, hosts, rate int) (*OTLPFleet, error) {
	f := &OTLPFleet{Hosts: hosts, RatePerHost: rate, Window: b.cfg.fleetWindow}
	logf("  fleet: %d hosts x %d/s into one Collector", f.Hosts, f.RatePerHost)
	tag := fmt.Sprintf("otlp-fleet-%dx%d", hosts, rate)
	col, err := b.startCollector(tag, bin)
	if err != nil {
		return f, err
	}
	defer col.Stop(10 * time.Second)
	var members []*otlpHost
	defer func() {
		for _, h := range members {
			h.Close()
		}
	}()
	for i := range f.Hosts {
		h, err := b.startOTLPHost(ctx, fmt.Sprintf("%s-%d", tag, i), f.RatePerHost, col, true)
		if err != nil {
			return f, err
		}
		members = append(members, h)
	}
	time.Sleep(b.cfg.warmup)
	runs, got, ccpu, err := b.otlpWindow(ctx, members, col, f.Window)
	if err != nil {
		return f, err
	}
	f.Members, f.CollectorGot, f.CollectorCPU = runs, got, ccpu
	if rss, hwm, err := rssBytes(col.PID()); err == nil {
		f.CollectorRSS, f.CollectorHWM = rss, hwm
	}
	f.OK = true
	for i := range f.Members {
		m := &f.Members[i]
		m.CollectorGot = m.Exported // the Collector's count is the fleet's, checked below
		m.Pass, m.Why = judgeOTLP(*m)
		f.Received += m.Received
		f.Exported += m.Exported
		f.Dropped += m.Dropped
		f.LoaderDrop += m.LoaderDropped
		if !m.Pass && f.OK {
			f.OK, f.Why = false, fmt.Sprintf("host %d: %s", i, m.Why)
		}
	}
	if f.OK && f.CollectorGot < f.Exported {
		f.OK, f.Why = false, fmt.Sprintf("the Collector logged %.0f records, the exporters counted %.0f exported", f.CollectorGot, f.Exported)
	}
	logf("  fleet: received %.0f, exported %.0f, dropped %.0f (loaders %d), Collector %.2f s CPU = %.2f µs/ev (%.0f ev/s per core), RSS %.0f MB, ok=%v %s",
		f.Received, f.Exported, f.Dropped, f.LoaderDrop, f.CollectorCPU.Seconds(), f.CollectorUS(), f.PerCore(),
		float64(f.CollectorRSS)/1e6, f.OK, f.Why)
	return f, nil
}
