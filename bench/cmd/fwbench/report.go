package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Targets of issue 6.
const (
	targetRate        = 200_000
	targetExporterUS  = 5.0
	targetLoaderUS    = 2.0
	targetScrapeMS    = 1000.0
	targetELDMS       = 100.0
	targetOpenRatio   = 1.3
	targetScrapeLabel = 100_000
)

type md struct{ strings.Builder }

func (w *md) p(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
func (w *md) row(cells ...string)          { w.p("| %s |", strings.Join(cells, " | ")) }
func (w *md) header(cells ...string) {
	w.row(cells...)
	sep := make([]string, len(cells))
	for i := range sep {
		sep[i] = "---"
	}
	w.row(sep...)
}

func f0(v float64) string { return fmt.Sprintf("%.0f", v) }

// size is a byte count in kB below a megabyte, else in MB (decimal units).
func size(b int) string {
	if b < 1e6 {
		return fmt.Sprintf("%.0f kB", float64(b)/1e3)
	}
	return fmt.Sprintf("%.1f MB", float64(b)/1e6)
}
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []string
	for len(s) > 3 {
		out = append([]string{s[len(s)-3:]}, out...)
		s = s[:len(s)-3]
	}
	out = append([]string{s}, out...)
	if neg {
		return "-" + strings.Join(out, ",")
	}
	return strings.Join(out, ",")
}

func metMissed(ok bool) string {
	if ok {
		return "**met**"
	}
	return "**missed**"
}

func renderReport(r *Results, cfg config) string {
	var w md
	w.p("# Benchmarks")
	w.p("")
	mode := "`make bench`"
	if r.Smoke {
		mode = "`bench/run.sh --smoke` (SMOKE RUN: tiny sizes, the numbers mean nothing)"
	}
	w.p("Written by %s (`bench/run.sh` → `bench/cmd/fwbench`) on %s from commit `%s`, in %.1f minutes. "+
		"Do not edit by hand: run `make bench` again. Logs, profiles and every raw number "+
		"(`results.json`) are in `.cache/bench/`.", mode, r.Machine.Date, r.Machine.Commit, r.Duration.Minutes())
	w.p("")
	renderMachine(&w, r.Machine)
	renderTargets(&w, r)
	if r.Userspace != nil {
		renderUserspace(&w, r.Userspace, cfg)
	}
	if r.Exporter != nil {
		renderExporter(&w, r.Exporter, cfg)
	}
	if r.Kernel != nil {
		renderKernel(&w, r.Kernel, cfg)
		renderPeer(&w, r.Kernel, cfg)
	}
	if r.OTLP != nil {
		renderOTLP(&w, r.OTLP, cfg)
	}
	if r.Userspace != nil && r.Userspace.Profile != nil {
		renderProfile(&w, r.Userspace.Profile)
	}
	renderHotSpots(&w, r)
	if len(r.Errors) > 0 {
		w.p("## Errors in this run")
		w.p("")
		for _, e := range r.Errors {
			w.p("- %s", e)
		}
		w.p("")
	}
	return w.String()
}

func renderMachine(w *md, m Machine) {
	w.p("## Machine")
	w.p("")
	w.header("", "")
	w.row("CPU", fmt.Sprintf("%s, %d cores", m.CPU, m.Cores))
	w.row("memory", fmt.Sprintf("%.0f GiB", m.MemoryGB))
	w.row("OS, kernel", m.OS+", "+m.Kernel)
	w.row("Go", m.Go)
	w.row("Node.js", m.Node)
	w.row("qemu (guest, TCG)", m.Qemu)
	w.row("bpftrace", m.Bpftrace)
	w.row("fsnotifywait", m.Fsnotifywait)
	w.row("load average (1/5/15 min)", strings.Join(m.LoadAvg, "; "))
	w.p("")
	w.p("The machine is a shared 2-core VM: other work runs beside the benchmark, and the " +
		"load average above says how much. Every number below is the median of several runs " +
		"with the spread (min–max) and the number of runs n.")
	w.p("")
}

func renderTargets(w *md, r *Results) {
	if r.Userspace == nil && r.Exporter == nil && r.Kernel == nil {
		return
	}
	w.p("## Targets (issue 6)")
	w.p("")
	w.header("target", "measured", "")
	if u := r.Userspace; u != nil {
		w.row(fmt.Sprintf("userspace path sustains ≥ %s events/s with zero loss", thousands(targetRate)),
			fmt.Sprintf("%s%s events/s (%s; %s)", atLeast(u), thousands(float64(u.MaxSustained)), heldText(u), confirmText(u)),
			metMissed(u.MaxSustained >= targetRate && allPass(confirmed(u))))
		exp := Sample{}
		ld := Sample{}
		for _, run := range u.Reference {
			exp = append(exp, run.ExporterUS())
			ld = append(ld, run.LoaderUS())
		}
		w.row(fmt.Sprintf("exporter ≤ %.0f µs CPU per event", targetExporterUS),
			exp.Format("%.2f µs")+fmt.Sprintf(" at %s/s", thousands(float64(u.RefRate))), metMissed(exp.Median() <= targetExporterUS))
		net := loaderNet(u)
		w.row(fmt.Sprintf("loader ≤ %.0f µs CPU per event", targetLoaderUS),
			ld.Format("%.2f µs")+fmt.Sprintf(" at %s/s, of which making synthetic events %.2f µs", thousands(float64(u.RefRate)), loaderAloneUS(u)),
			metMissed(net <= targetLoaderUS)+fmt.Sprintf(" (%.2f µs without making the events)", net))
	}
	if x := r.Exporter; x != nil {
		if s := sizeRun(x, targetScrapeLabel); s != nil {
			w.row(fmt.Sprintf("%s-series scrape ≤ 1 s", thousands(targetScrapeLabel)),
				s.ScrapeMS.Format("%.0f ms")+fmt.Sprintf(" (first scrape %.0f ms)", s.ColdMS),
				metMissed(s.ScrapeMS.Max() <= targetScrapeMS && s.ColdMS <= targetScrapeMS))
			worst := max(s.ELDMaxMS.Max(), s.ColdELDMS)
			w.row(fmt.Sprintf("event loop never blocked > %.0f ms by it", targetELDMS),
				fmt.Sprintf("longest block %.0f ms (per scrape %s)", worst, s.ELDMaxMS.Format("%.0f ms")),
				metMissed(worst <= targetELDMS))
		}
	}
	if k := r.Kernel; k != nil {
		for _, ra := range k.Ratios {
			if ra.Mode == "open" {
				w.row(fmt.Sprintf("opening an existing file ≤ %.1f× with module + program", targetOpenRatio),
					ra.Cost.Format("%.2f×")+" (in a TCG guest, see §3)", metMissed(ra.Cost.Median() <= targetOpenRatio))
			}
		}
		ok := len(k.Reconciles) > 0
		for _, rc := range k.Reconciles {
			ok = ok && rc.OK
		}
		w.row("created = delivered + reported lost, exactly (module: default and small ring; eBPF-only probe)",
			reconcileSummary(k), metMissed(ok))
	}
	w.p("")
}

func atLeast(u *Userspace) string {
	if u.AllHeld {
		return "≥ "
	}
	return ""
}

func heldText(u *Userspace) string {
	if u.AllHeld {
		return "every rate tried held: the limit is higher"
	}
	return "the highest rate that held in every repeat"
}

func confirmText(u *Userspace) string {
	if len(u.Confirm) == 0 {
		return "not repeated"
	}
	var parts []string
	for _, rate := range confirmRates(u) {
		n, of := 0, 0
		for _, c := range u.Confirm {
			if c.Target == rate {
				of++
				if c.Pass {
					n++
				}
			}
		}
		parts = append(parts, fmt.Sprintf("%d of %d repeats held %s/s", n, of, thousands(float64(rate))))
	}
	return strings.Join(parts, ", ")
}

// confirmRates are the rates that were repeated, highest first.
func confirmRates(u *Userspace) []int {
	var rates []int
	for _, c := range u.Confirm {
		if len(rates) == 0 || rates[len(rates)-1] != c.Target {
			rates = append(rates, c.Target)
		}
	}
	return rates
}

// confirmed are the repeat runs at MaxSustained.
func confirmed(u *Userspace) []PipelineRun {
	var runs []PipelineRun
	for _, c := range u.Confirm {
		if c.Target == u.MaxSustained {
			runs = append(runs, c)
		}
	}
	return runs
}

func allPass(runs []PipelineRun) bool {
	for _, r := range runs {
		if !r.Pass {
			return false
		}
	}
	return len(runs) > 0
}

func loaderAloneUS(u *Userspace) float64 {
	s := Sample{}
	for _, r := range u.LoaderOnly {
		s = append(s, r.LoaderUS())
	}
	return s.Median()
}

func loaderNet(u *Userspace) float64 {
	s := Sample{}
	for _, r := range u.Reference {
		s = append(s, r.LoaderUS())
	}
	return s.Median() - loaderAloneUS(u)
}

func sizeRun(x *ExporterScale, series int) *ScrapeRun {
	for i := range x.Sizes {
		if x.Sizes[i].Dirs*x.Sizes[i].Names == series {
			return &x.Sizes[i]
		}
	}
	return nil
}

func reconcileSummary(k *KernelPath) string {
	var parts []string
	for _, rc := range k.Reconciles {
		parts = append(parts, fmt.Sprintf("%s, ring %s: %s created, %s delivered, %s lost",
			probeText(rc.Probe), ringText(rc.RingSize), thousands(float64(rc.Storm.OK)), thousands(float64(rc.Delivered)), thousands(float64(rc.LostTotal))))
	}
	return strings.Join(parts, "; ")
}

func probeText(p string) string {
	if p == probeBPF {
		return "eBPF-only probe"
	}
	return "module"
}

func ringText(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func renderUserspace(w *md, u *Userspace, cfg config) {
	w.p("## 1. Userspace path: synthetic loader → gRPC → exporter (host, native)")
	w.p("")
	w.p("**How.** `filewatcher-loader --source synthetic --rate R` (default path mix: 100 directories × 1,000 names, "+
		"awkward names and one ~4,080-byte directory included) streams to `node exporter/dist/main.js` with its defaults "+
		"(`--max-series 10000`, batches of 1,024, 20 ms), both on 127.0.0.1. Each run starts a fresh loader and exporter, "+
		"waits %v of warm-up, then measures a window of %v: the loader's sequence numbers (`GetStatus.last_sequence`), "+
		"what it delivered to and dropped for the exporter (`GetStatus.subscribers`), the subscriber queue depth every 250 ms, "+
		"the events the exporter processed, and the CPU time of both processes (`utime+stime` from `/proc/PID/stat`). "+
		"A rate **holds** when, in the window, nothing was dropped or went missing, the loader made ≥ 97%% of the rate, the exporter "+
		"processed ≥ 97%% of what was made and the queue did not grow. Rates are stepped up until one fails, then the gap is bisected.",
		cfg.warmup, cfg.window)
	w.p("")
	w.header("target rate", "made /s", "exporter processed", "dropped (window)", "lost in warm-up", "queue max", "loader µs/ev", "exporter µs/ev", "latency p50 / p99", "")
	for _, r := range u.Steps {
		verdict := "holds"
		if !r.Pass {
			verdict = "fails: " + r.Why
		}
		w.row(thousands(float64(r.Target)), thousands(r.Rate()), thousands(r.Received), fmt.Sprint(r.Dropped),
			f0(r.WarmupLost), fmt.Sprintf("%d / %d", r.QueueMax, r.QueueCap), f2(r.LoaderUS()), f2(r.ExporterUS()),
			latencyText(r.Latency), verdict)
	}
	w.p("")
	if runs := confirmed(u); len(runs) > 0 {
		rates, exp, ld := Sample{}, Sample{}, Sample{}
		for _, c := range runs {
			rates = append(rates, c.Rate())
			exp = append(exp, c.ExporterUS())
			ld = append(ld, c.LoaderUS())
		}
		w.p("**Highest sustained rate: %s%s events/s** (%s; %s; made %s events/s; loader %s µs/event, exporter %s µs/event).",
			atLeast(u), thousands(float64(u.MaxSustained)), heldText(u), confirmText(u), rates.Format("%.0f"), ld.Format("%.2f"), exp.Format("%.2f"))
	} else {
		w.p("**No rate held in every repeat** (%s; see the table).", confirmText(u))
	}
	w.p("")
	w.p("**CPU per event at %s events/s** (%d runs each; `loader alone` has no subscriber, so it is the synthetic source's "+
		"own cost of making events, which a real kernel source does not have):", thousands(float64(u.RefRate)), len(u.Reference))
	w.p("")
	exp, ld, alone := Sample{}, Sample{}, Sample{}
	cores := Sample{}
	for _, r := range u.Reference {
		exp = append(exp, r.ExporterUS())
		ld = append(ld, r.LoaderUS())
		cores = append(cores, (r.LoaderCPU+r.ExportCPU).Seconds()/r.Window.Seconds())
	}
	for _, r := range u.LoaderOnly {
		alone = append(alone, r.LoaderUS())
	}
	w.header("process", "CPU µs per event", "target")
	w.row("loader (synthetic source + sequencing + fan-out + gRPC)", ld.Format("%.2f"), "")
	w.row("loader alone (synthetic source only)", alone.Format("%.2f"), "")
	w.row("loader without the synthetic source (difference of medians)", f2(ld.Median()-alone.Median()), fmt.Sprintf("≤ %.0f", targetLoaderUS))
	w.row("exporter (gRPC decode + sequence accounting + series table)", exp.Format("%.2f"), fmt.Sprintf("≤ %.0f", targetExporterUS))
	w.row("both, in cores busy", cores.Format("%.2f"), "")
	w.p("")
	w.p("**Latency from loader ingest to the counter** (%d runs at %s events/s, all events of each window). "+
		"The loader stamps `time_unix_nano` on each event as it enters the loader (the synthetic source stamps each batch it "+
		"makes); a probe preloaded into the exporter (`bench/probe/exporter-probe.js`, because the exporter has no latency "+
		"metric) takes the host's real-time clock once the message's events are counted in the exporter's series table. "+
		"The next scrape exports those counts, so what a Prometheus query sees is this latency plus up to one scrape "+
		"interval.", len(u.Reference), thousands(float64(u.RefRate)))
	w.p("")
	p50, p99, p999, mx := Sample{}, Sample{}, Sample{}, Sample{}
	for _, r := range u.Reference {
		if r.Latency.LatencyMS.P50 != nil {
			p50 = append(p50, *r.Latency.LatencyMS.P50)
			p99 = append(p99, *r.Latency.LatencyMS.P99)
			p999 = append(p999, *r.Latency.LatencyMS.P999)
			mx = append(mx, *r.Latency.LatencyMS.Max)
		}
	}
	w.header("p50", "p99", "p99.9", "max")
	w.row(p50.Format("%.1f ms"), p99.Format("%.1f ms"), p999.Format("%.1f ms"), mx.Format("%.1f ms"))
	w.p("")
	w.p("Most of it is batching by design: the loader holds a partial batch up to 20 ms (the exporter's `--batch-delay`) " +
		"to send up to 1,024 events per message.")
	w.p("")
}

func latencyText(s ProbeStats) string {
	if s.LatencyMS.P50 == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f / %.1f ms", *s.LatencyMS.P50, *s.LatencyMS.P99)
}

func renderExporter(w *md, x *ExporterScale, cfg config) {
	w.p("## 2. Exporter memory and scrape cost")
	w.p("")
	w.p("**How.** The synthetic loader cycles through every path of a `dirs × names` mix at %s events/s (it keeps "+
		"running during the scrapes, as in production); the exporter runs with `--max-series 1000000` so that every label set "+
		"becomes a series. Once the exporter has processed a whole cycle, one first scrape, then %d scrapes one second "+
		"apart, each as Prometheus makes it (`Accept-Encoding: gzip`): the time to fetch and decompress the whole `/metrics` "+
		"response, and the longest event-loop delay around it (`perf_hooks.monitorEventLoopDelay`, 1 ms resolution, in the "+
		"preloaded probe). RSS is `VmRSS` after each scrape. Each `full`-path series of the mix carries its directory and name "+
		"as labels (1%% of them ~4 KB long), plus the `<unresolved>` series of names the synthetic source marks unresolved, so "+
		"the series count is a little above dirs × names.", thousands(float64(cfg.scrapeRate)), cfg.scrapes)
	w.p("")
	w.header("", "series", "/metrics size (gzip)", "first scrape", "scrape time", "event-loop max (first)", "event-loop max", "RSS", "peak RSS")
	rows := append([]ScrapeRun{x.Idle}, x.Sizes...) // the profiled run is not a measurement: it is below
	if x.Cap != nil {
		rows = append(rows, *x.Cap)
	}
	for _, s := range rows {
		w.row(s.Label, thousands(s.Series), size(s.Bytes)+" ("+size(s.WireBytes)+")", fmt.Sprintf("%.0f ms", s.ColdMS),
			s.ScrapeMS.Format("%.0f ms"), fmt.Sprintf("%.0f ms", s.ColdELDMS), s.ELDMaxMS.Format("%.0f ms"),
			s.RSSMB.Format("%.0f MB"), fmt.Sprintf("%.0f MB", s.PeakMB))
	}
	w.p("")
	if c := x.Cap; c != nil {
		w.p("**Under the cap:** %s distinct paths (%s events processed) with `--max-series %s`: %s series kept, "+
			"%s events counted in the `otel_metric_overflow=\"true\"` series, RSS %s MB, against %s MB for the 10,000-series run "+
			"above: memory is bounded by the cap, not by what is created.",
			thousands(float64(c.Dirs*c.Names)), thousands(c.Events), thousands(float64(c.MaxSeries)), thousands(c.Series),
			thousands(c.Overflow), f0(c.RSSMB.Median()), tenKRSS(x))
		w.p("")
	}
	renderChurn(w, x.Churn)
	if p := x.Profile; p != nil {
		w.p("**Where a scrape's time goes** (%s series, in a separate run; V8's CPU profiler, started through the probe, "+
			"covers the %d scrapes (%s ms each) and the events arriving meanwhile; self time per function, idle excluded):",
			thousands(p.Series), 1+len(p.ScrapeMS), append(Sample{p.ColdMS}, p.ScrapeMS...).Format("%.0f"))
		w.p("")
		if p.ProfileNote != "" {
			w.p("- %s", p.ProfileNote)
			w.p("")
		}
		kindTable(w, p.ProfileParts)
		profileTable(w, p.Profile)
	}
}

func kindTable(w *md, kinds []ProfileEntry) {
	if len(kinds) == 0 {
		return
	}
	w.header("share of CPU", "kind of work")
	for _, k := range kinds {
		w.row(fmt.Sprintf("%.0f%%", k.Percent), k.Name)
	}
	w.p("")
}

func profileTable(w *md, entries []ProfileEntry) {
	if len(entries) == 0 {
		return
	}
	w.header("self %", "function")
	for _, e := range entries {
		w.row(fmt.Sprintf("%.1f", e.Percent), "`"+strings.ReplaceAll(e.Name, "|", "\\|")+"`")
	}
	w.p("")
}

func tenKRSS(x *ExporterScale) string {
	if s := sizeRun(x, 10_000); s != nil {
		return f0(s.RSSMB.Median())
	}
	return "?"
}

func renderKernel(w *md, k *KernelPath, cfg config) {
	w.p("## 3. Kernel path in a qemu guest (%s)", k.Kernel)
	w.p("")
	w.p("**How.** One boot of `test/vm/vm.sh up --kernel %s --no-loader` (TCG, 2 vCPUs; booted in %.0f s) with "+
		"`bench/storm/fwstorm` (static C) and the loader added. `fwstorm create -w W DIR N` forks W workers that each create "+
		"their share of N new files with `open(O_CREAT|O_EXCL)` + `close` in their own directory on the guest's tmpfs, timed "+
		"from a common start; `fwstorm open FILE N` opens an existing file `O_RDONLY` and closes it N times. The loader "+
		"(module + BPF program, ring of the given size) runs in the guest; a gRPC subscriber on the host counts what arrives.",
		strings.SplitN(k.Kernel, ".", 3)[0]+"."+strings.SplitN(k.Kernel, ".", 3)[1], k.BootTime.Seconds())
	w.p("")
	w.p("### Every creation accounted for")
	w.p("")
	w.p("A storm of %s creates (%d workers), with the module (`--probe kmod`) and with the eBPF-only probe (`--probe bpf`, "+
		"no module). *Fired* is the module's `events_fired` counter; *delivered* the events the "+
		"subscriber received under the storm's directory; *lost* the in-band gaps, by reason; *unexplained* sequence numbers "+
		"that are neither. It reconciles when created = fired = delivered + lost, exactly (without the module: created = "+
		"delivered + lost).",
		thousands(float64(cfg.stormN)), cfg.stormWorkers)
	w.p("")
	w.header("probe", "ring buffer", "created", "fired", "kprobe missed", "delivered", "lost (gaps)", "other files", "unexplained", "creates/s", "loader CPU", "")
	for _, r := range k.Reconciles {
		lost := thousands(float64(r.LostTotal))
		if len(r.Lost) > 0 {
			var parts []string
			for reason, n := range r.Lost {
				parts = append(parts, fmt.Sprintf("%s %s", reason, thousands(float64(n))))
			}
			sort.Strings(parts)
			lost += " (" + strings.Join(parts, ", ") + ")"
		}
		verdict := "reconciles"
		if !r.OK {
			verdict = "**does not reconcile**: " + r.Why
		}
		fired, missed := thousands(float64(r.Fired)), fmt.Sprint(r.Missed)
		if r.Probe == probeBPF {
			fired, missed = "–", "–"
		}
		probe := probeText(r.Probe)
		if r.Pinned {
			probe += ", pinned (`--pin-dir`)"
		}
		w.row(probe, ringText(r.RingSize), thousands(float64(r.Storm.OK)), fired, missed,
			thousands(float64(r.Delivered)), lost, fmt.Sprint(r.Other), fmt.Sprint(r.Unexplained), f0(r.Storm.PerSec),
			fmt.Sprintf("%.2f s", r.LoaderCPU.Seconds()), verdict)
	}
	var plain, pinned *Reconcile
	for i := range k.Reconciles {
		switch r := &k.Reconciles[i]; {
		case r.Probe == probeModule && r.RingSize == k.Reconciles[0].RingSize && !r.Pinned && plain == nil:
			plain = r
		case r.Probe == probeModule && r.Pinned:
			pinned = r
		}
	}
	if plain != nil && pinned != nil && plain.LoaderCPU > 0 {
		w.p("")
		w.p("*Pinned* keeps the probe, ring and a checkpoint of the run in bpffs so that a loader that dies is replaced "+
			"without losing its run; the checkpoint is written before every publication to the hub (one map update per "+
			"batch of up to 256 events and per loss poll). Its cost in this run: loader CPU pinned ÷ not pinned = %.2f× "+
			"(one run each, same storm).", pinned.LoaderCPU.Seconds()/plain.LoaderCPU.Seconds())
	}
	w.p("")
	w.p("### Cost of the module and program: alternating runs in one boot")
	w.p("")
	w.p("Timing under TCG is slow and noisy (a guest creates ~100× fewer files per second than the host), so only ratios "+
		"are meaningful. Runs *without* (module not loaded) and *with* (the loader started: module + BPF program + a "+
		"subscriber on the host) alternate A B B A A B B A …, the loader being started before and stopped after each B B, "+
		"after one untimed warm-up round; each run is the create storm then the open loop, one worker. Cost = time per "+
		"operation of the i-th B ÷ the i-th A, %d pairs.", cfg.ratioPairs)
	w.p("")
	w.header("operation", "per run", "without (ops/s)", "with (ops/s)", "cost with ÷ without (wall time)", "cost with ÷ without (CPU time)", "fastest with ÷ fastest without")
	for _, ra := range k.Ratios {
		a, b := Sample{}, Sample{}
		for i := range ra.A {
			a = append(a, ra.A[i].PerSec)
			b = append(b, ra.B[i].PerSec)
		}
		name := "create a new file (`open(O_CREAT\\|O_EXCL)` + `close`)"
		if ra.Mode == "open" {
			name = "open an existing file (`open(O_RDONLY)` + `close`)"
		}
		w.row(name, thousands(float64(ra.N)), a.Format("%.0f"), b.Format("%.0f"), ra.Cost.Format("%.2f×"), ra.CPUCost.Format("%.2f×"),
			fmt.Sprintf("%.2f×", a.Max()/b.Max()))
	}
	w.p("")
	if bd := k.Breakdown; bd != nil {
		w.p("**Where the cost comes from** (%d rounds of %s creates and %s opens of an existing file, one worker; in each round: without "+
			"anything, the module alone (its tracepoint has no consumer, so no path is built), the module with "+
			"`bpftrace` counting the tracepoint in a per-CPU map (the path is built, a tiny program runs, nothing reaches "+
			"user space), filewatcher (module, our BPF program, ring buffer, loader and a subscriber), and filewatcher with "+
			"the eBPF-only probe (`--probe bpf`: no module; fentry on `security_file_open`, fexit on the open function, same "+
			"ring buffer, loader and subscriber). Cost per operation ÷ the same round's *without*:",
			bd.Rounds, thousands(float64(bd.N)), thousands(float64(bd.Opens)))
		w.p("")
		w.header("stage", "creates/s", "create cost (wall time)", "create cost (CPU time)", "opens/s", "open cost (wall time)")
		for _, stage := range bd.Stages {
			rates, opens := Sample{}, Sample{}
			for i, s := range bd.Runs[stage] {
				rates = append(rates, s.PerSec)
				opens = append(opens, bd.OpenRuns[stage][i].PerSec)
			}
			cost, cpu, ocost := "1", "1", "1"
			if stage != stageWithout {
				cost, cpu, ocost = bd.Cost[stage].Format("%.2f×"), bd.CPU[stage].Format("%.2f×"), bd.OpenCost[stage].Format("%.2f×")
			}
			w.row(stage, rates.Format("%.0f"), cost, cpu, opens.Format("%.0f"), ocost)
		}
		w.p("")
		if len(bd.FanotifyExits) > 0 {
			w.p("In %d of the %d rounds fsnotifywait exited during its storm (%s): that stage's cost lacks the rest of its consumer's work.",
				len(bd.FanotifyExits), bd.Rounds, strings.Join(bd.FanotifyExits, "; "))
			w.p("")
		}
		w.p("**The two probes side by side**, round by round (eBPF-only probe ÷ module, wall time per operation): "+
			"create %s, open of an existing file %s. %s", bd.BPFvsModule.Format("%.2f×"), bd.BPFvsModuleOpen.Format("%.2f×"),
			probeVerdict(bd))
		w.p("")
	}
	w.p("*Fastest ÷ fastest* compares the best run of each kind: noise on a shared host only ever adds time. " +
		"*Wall time* is the loop's elapsed time per operation; *CPU time* the workers' `utime+stime` per operation " +
		"(`RUSAGE_CHILDREN`, 10 ms ticks). An open without `O_CREAT` pays only for the kretprobe's entry: the kernel " +
		"has `KPROBES_ON_FTRACE`, so the probe on `do_filp_open+0x0` is an ftrace call (`[FTRACE]` in " +
		"`/sys/kernel/debug/kprobes/list`, no breakpoint trap), then the entry handler reads the flags and leaves the return " +
		"probe unarmed. A create also pays for the return handler, `d_path()`, the tracepoint and the BPF program, and the " +
		"loader's own CPU competes for the guest's 2 vCPUs. The program does not wake the loader per event (it reads the ring " +
		"every 20 ms, and is woken once 1/8 of the ring is unread); waking it per event cost 2.7–3.5× per create here. TCG slows instructions by ~100× and not " +
		"uniformly (exceptions, timers and interrupts more), so these ratios locate costs; they are not hardware numbers.")
	w.p("")
}

func renderPeer(w *md, k *KernelPath, cfg config) {
	w.p("## 4. Peers: bpftrace on the same tracepoint, fanotify on the same filesystem")
	w.p("")
	for _, note := range []string{k.PeerNote, k.FanotifyNote} {
		if note != "" {
			w.p("%s", note)
			w.p("")
		}
	}
	if len(k.Peers) <= 1 {
		return
	}
	w.p("Same guest, same storm (%s creates, %d workers), one consumer at a time; the module is loaded for bpftrace "+
		"(it reads our tracepoint) and not for fanotify (it needs nothing of ours). Debian's bpftrace and "+
		"`fsnotifywait` (inotify-tools, `-F -S -m -e create`: one fanotify mark on the guest's `/tmp` "+
		"filesystem, each directory handle resolved to a path) are added to the busybox guest with every library "+
		"they link. *Consumer CPU* is the consumer process's "+
		"`utime+stime` in the guest from just before the storm until everything was read; *idle share* is what it "+
		"uses over the same time when nothing happens (measured for %v before the storm: timers, pollers), and is "+
		"subtracted for the per-event cost. The work done inside the kernel "+
		"(kretprobe, tracepoint, BPF program, fanotify's queue) is charged to the creating processes and shows in *creates/s*.",
		thousands(float64(cfg.stormN)), cfg.stormWorkers, cfg.idleTime)
	w.p("")
	w.header("consumer", "created", "events seen", "reported lost", "consumer CPU (idle share)", "CPU µs per event above idle", "creates/s", "notes")
	for _, p := range k.Peers {
		busy := max(0, p.ConsumerCPU-p.IdleCPU)
		w.row(p.Name, thousands(float64(p.Storm.OK)), thousands(float64(p.Seen)), thousands(float64(p.Lost)),
			fmt.Sprintf("%.2f s (%.2f s)", p.ConsumerCPU.Seconds(), p.IdleCPU.Seconds()),
			f0(float64(busy.Microseconds())/max(1, float64(p.Seen))), f0(p.Storm.PerSec), p.Note)
	}
	w.p("")
	if len(k.Routes) > 0 {
		w.p("**Which creations each reports.** Each route once, in this order, in `%s`, with filewatcher (the module, "+
			"a gRPC subscriber on the host) and `fsnotifywait` watching at the same time. *filewatcher* shows each event's "+
			"kind, comm and uid (it also carries pid, tgid, gid, fsuid, fsgid, the time and a sequence number); "+
			"*fanotify* shows what `fsnotifywait` printed: the event names and the path, no pid (fanotify's "+
			"metadata has one, `fsnotifywait` does not print it), no uid or comm. A row is right when the tool reports "+
			"the path exactly when a new regular file appeared under it.", routesDir)
		w.p("")
		w.header("route", "a new regular file?", "filewatcher", "fanotify", "filewatcher right?", "fanotify right?")
		right := func(creation bool, got string) string {
			switch {
			case creation == (got != "") && !strings.Contains(got, "; "):
				return "yes"
			case strings.Contains(got, "ISDIR"):
				return "**no** (told apart: ISDIR)"
			}
			return "**no**"
		}
		or := func(s string) string {
			if s == "" {
				return "—"
			}
			return "`" + s + "`"
		}
		yes := map[bool]string{true: "yes", false: "no"}
		for _, r := range k.Routes {
			w.row(r.Name, yes[r.Creation], or(r.Ours), or(r.Fanotify), right(r.Creation, r.Ours), right(r.Creation, r.Fanotify))
		}
		w.p("")
	}
}

func renderProfile(w *md, p *Profiles) {
	w.p("## Where the time goes (profiles at %s events/s)", thousands(float64(p.Rate)))
	w.p("")
	w.p("One extra run of §1 at the reference rate, profiled during its measurement window only: the exporter with V8's " +
		"CPU profiler (started and stopped through the probe, 100 µs sampling; self time per function, idle excluded) and " +
		"the loader with `perf record -e cpu-clock -F 1999 -g -p PID` (self time per symbol, user and kernel).")
	w.p("")
	for _, n := range p.Notes {
		w.p("- %s", n)
	}
	if len(p.Notes) > 0 {
		w.p("")
	}
	table := func(title string, entries []ProfileEntry) {
		if len(entries) == 0 {
			return
		}
		w.p("**%s**", title)
		w.p("")
		profileTable(w, entries)
	}
	if len(p.ExporterParts) > 0 {
		w.p("**Exporter, by kind of work** (from the V8 profile below):")
		w.p("")
		kindTable(w, p.ExporterParts)
	}
	table("Exporter (V8 CPU profile)", p.Exporter)
	table("Loader (perf)", p.Loader)
}

func renderHotSpots(w *md, r *Results) {
	w.p("## Reading the numbers")
	w.p("")
	w.p("- Section 1 runs loader and exporter on the same 2 shared cores. The exporter's work happens on Node's one " +
		"event loop, so 1 s ÷ (its µs per event) is the most it can take; the loader's CPU per event falls as the rate " +
		"rises because its per-batch costs (timers, wake-ups, messages) are shared by more events.")
	w.p("- CPU µs per event is CPU time over events in the measurement window (10 ms clock ticks over several seconds: " +
		"< 1%% resolution).")
	w.p("- Kernel timings come from a TCG guest and are only compared within one boot (ratios).")
	w.p("")
	_ = time.Second
}

// probeVerdict says which probe was cheaper, and why, from the medians.
func probeVerdict(bd *Breakdown) string {
	cheaper := func(r float64) string {
		switch {
		case r < 0.95:
			return "cheaper with the eBPF-only probe"
		case r > 1.05:
			return "cheaper with the module"
		}
		return "about the same (within 5%)"
	}
	return fmt.Sprintf("Creating a file is %s; opening an existing one is %s. Why, from what each runs: every open, "+
		"creating or not, enters the eBPF-only probe's two programs through BPF trampolines (at `security_file_open` a "+
		"test of `FMODE_CREATED`; at the open function's return a hash lookup of the task), where the module's kretprobe "+
		"entry tests `O_CREAT` in an ftrace callback and arms no return probe for a plain open. A create costs the module "+
		"a kretprobe return (a trampoline that saves and restores every register), `d_path()` into its buffer, the "+
		"tracepoint, and the BPF program copying the path again into the ring record; the eBPF-only probe writes "+
		"`bpf_d_path()` straight into the record. These are TCG ratios: they rank the two, they are not hardware numbers.",
		cheaper(bd.BPFvsModule.Median()), cheaper(bd.BPFvsModuleOpen.Median()))
}

func renderOTLP(w *md, o *OTLPBench, cfg config) {
	w.p("## 5. OTLP: events as log records to a real Collector")
	w.p("")
	version := o.Version
	if version == "" {
		version = "otelcol-filewatcher"
	}
	w.p("**How.** A real OpenTelemetry Collector (`%s`, built by `scripts/build-collector.sh` from "+
		"`test/fleet/collector/manifest.yaml`) runs on 127.0.0.1: OTLP/HTTP receiver → `batch` processor → `debug` exporter "+
		"(`verbosity: basic`: one log line per batch, so the Collector decodes and batches every record but writes almost nothing), "+
		"its own telemetry off. Each step starts a fresh synthetic loader at R events/s (100 × 1,000 paths, as §1) and a fresh "+
		"exporter with `--otlp-endpoint http://127.0.0.1:PORT --otlp-events true --otlp-metrics false --otlp-events-queue-size %d` "+
		"(http/protobuf, batches of %s records, one export in flight), waits %v, then measures a window of %v: the differences of the "+
		"exporter's counters (`/metrics` scraped at both ends: events received, exported, dropped for any reason), the export queue at "+
		"the end, what the loader dropped for the exporter (`GetStatus.subscribers`), the log records the Collector's debug exporter "+
		"logged, and the CPU time (`utime+stime`) of the exporter and of the Collector. A rate **holds with zero loss** when nothing "+
		"was dropped anywhere, the loader made ≥ 97%% of R and the exporter received ≥ 97%% of it, it exported ≥ 97%% of what it received, "+
		"the queue ended below half its size, and the Collector logged at least what the exporter counted exported. Rates go up "+
		"until one fails.",
		version, o.QueueSize, thousands(float64(o.BatchSize)), cfg.warmup, cfg.window)
	w.p("")
	w.header("target rate", "made /s", "received", "exported", "dropped: OTLP / loader", "queue at end", "exporter µs per exported event",
		"Collector µs per event", "exporter RSS", "")
	for _, r := range o.Steps {
		verdict := "holds"
		if !r.Pass {
			verdict = "fails: " + r.Why
		}
		w.row(thousands(float64(r.Target)), thousands(r.Rate()), thousands(r.Received), thousands(r.Exported),
			fmt.Sprintf("%.0f / %d", r.Dropped, r.LoaderDropped), fmt.Sprintf("%s / %s", thousands(r.QueueEnd), thousands(float64(r.QueueSize))),
			f2(r.ExporterUS()), f2(r.CollectorUS()), fmt.Sprintf("%.0f MB", float64(r.ExporterRSS)/1e6), verdict)
	}
	w.p("")
	switch {
	case o.AllHeld:
		w.p("**Highest rate with zero loss: ≥ %s events/s** (every rate tried held: the limit is higher).", thousands(float64(o.MaxZeroLoss)))
	case o.MaxZeroLoss > 0:
		w.p("**Highest rate with zero loss: %s events/s** (one window each; the next step failed).", thousands(float64(o.MaxZeroLoss)))
	default:
		w.p("**No rate held with zero loss** (see the table).")
	}
	w.p("")
	if len(o.With) > 0 {
		with, without, col := Sample{}, Sample{}, Sample{}
		for _, r := range o.With {
			with = append(with, r.ExporterUS())
			col = append(col, r.CollectorUS())
		}
		for _, r := range o.Without {
			without = append(without, r.ExporterUS())
		}
		note := ""
		if o.RefNote != "" {
			note = " (" + o.RefNote + ")"
		}
		pass := 0
		for _, r := range o.With {
			if r.Pass {
				pass++
			}
		}
		w.p("**Cost of the event export at %s events/s**%s: %s in this run, each a run with `--otlp-events` and one "+
			"without any OTLP flag (same loader setup), in the order A B B A …; the ratio is taken pair by pair. "+
			"%d of the %d runs with events held with zero loss.", thousands(float64(o.RefRate)), note, plural(len(o.With), "pair"), pass, len(o.With))
		w.p("")
		w.header("", "CPU µs per event")
		w.row("exporter without OTLP (per event received)", without.Format("%.2f"))
		w.row("exporter with `--otlp-events` (per event exported)", with.Format("%.2f"))
		w.row("**exporter with ÷ without**", o.Ratios().Format("%.2f×"))
		w.row("Collector (per event exported to it)", col.Format("%.2f"))
		w.p("")
	}
	if len(o.Fleets) > 0 {
		var sizes []string
		for _, f := range o.Fleets {
			sizes = append(sizes, fmt.Sprintf("%d × %s", f.Hosts, thousands(float64(f.RatePerHost))))
		}
		w.p("**A small fleet on this machine:** K synthetic loaders at R events/s each (K × R = %s), each with its exporter "+
			"(`--otlp-events true --otlp-metrics false`), all pushing to one fresh Collector; after %v of warm-up, a window of %v. "+
			"Nothing may be dropped, by any exporter or loader. The Collector's CPU over the window ÷ the events exported in it "+
			"is its cost per event; 1 s ÷ that cost is what one Collector core ingests, and that ÷ a host's creations/s is how many "+
			"hosts it serves. The cost per event depends on how many records each request carries: an exporter sends a full batch "+
			"(%s records) at once and a partial one after `--otlp-events-batch-delay` (200 ms), so a host with few events sends "+
			"about five small requests a second, and the run whose R is nearest a column's rate is the one to read there.",
			strings.Join(sizes, ", "), cfg.warmup, cfg.fleetWindow, thousands(float64(o.BatchSize)))
		w.p("")
		w.header("hosts × rate", "received", "exported", "dropped: OTLP / loader", "Collector logged (window + 1 s)", "Collector CPU",
			"Collector µs per event", "events/s per Collector core", "Collector RSS (peak)",
			"hosts per core at 100 / 1,000 / 10,000 creations/s", "")
		for _, f := range o.Fleets {
			verdict := "nothing dropped"
			if !f.OK {
				verdict = "**" + f.Why + "**"
			}
			var hosts []string
			for _, perHost := range []float64{100, 1000, 10000} {
				hosts = append(hosts, hostsText(f.PerCore()/perHost))
			}
			w.row(fmt.Sprintf("%d × %s/s", f.Hosts, thousands(float64(f.RatePerHost))), thousands(f.Received), thousands(f.Exported),
				fmt.Sprintf("%.0f / %d", f.Dropped, f.LoaderDrop), thousands(f.CollectorGot),
				fmt.Sprintf("%.2f s in %.1f s", f.CollectorCPU.Seconds(), f.Window.Seconds()), f2(f.CollectorUS()),
				thousands(f.PerCore()), fmt.Sprintf("%.0f MB (%.0f MB)", float64(f.CollectorRSS)/1e6, float64(f.CollectorHWM)/1e6),
				strings.Join(hosts, " / "), verdict)
		}
		w.p("")
	}
	w.p("*Caveat.* Loaders, exporters and the Collector share this machine's 2 noisy cores: the Collector's CPU per event " +
		"is what it used here beside them, the per-core figures extrapolate it linearly, and the debug exporter stands in for a " +
		"real backend (an `otlp_http`, `file` or remote-write exporter adds its own cost per record). Ratios within one run are " +
		"the firmer numbers; every window is one run, so a stall of the machine can fail a step that would otherwise hold.")
	w.p("")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// hostsText is a count of hosts: whole above 10, one decimal below.
func hostsText(v float64) string {
	if v >= 10 {
		return thousands(v)
	}
	return fmt.Sprintf("%.1f", v)
}
