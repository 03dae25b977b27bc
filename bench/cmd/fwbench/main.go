// Command fwbench runs filewatcher's benchmarks (issue 6) and writes
// BENCHMARKS.md: the userspace path (synthetic loader -> gRPC -> exporter),
// the exporter's memory and scrape cost, the kernel path in a qemu guest,
// bpftrace as a peer on the same tracepoint, and the exporter's OTLP event
// export into a real OpenTelemetry Collector. bench/run.sh builds what it
// needs and runs it; `bench/run.sh --smoke` runs every piece once, tiny, and
// checks that the machinery works (never timing).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// config sizes every measurement; full and smoke are the two presets.
type config struct {
	warmup, window time.Duration
	rates          []int // userspace steps, ascending
	bisect         int   // extra steps between the last pass and the first failure
	repeats        int
	refRate        int

	seriesSizes [][2]int // dirs x names
	scrapeRate  int
	scrapes     int
	fillTimeout time.Duration
	capPaths    [2]int
	capLimit    int
	capRate     int

	stormN          int
	stormWorkers    int
	smallRing       int
	ratioPairs      int
	ratioCreates    int
	ratioOpens      int
	idleTime        time.Duration // how long a guest consumer's idle CPU is measured
	breakdownRounds int           // rounds of the create-cost breakdown (0: none)
	vmTTL           time.Duration

	otlpRates   []int    // OTLP event export steps, ascending
	otlpRefRate int      // with and without --otlp-events, cfg.repeats pairs
	fleets      [][2]int // loader+exporter pairs into one Collector x events/s of each
	fleetWindow time.Duration
}

var fullConfig = config{
	warmup: 3 * time.Second, window: 6 * time.Second,
	rates: []int{50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 500_000, 600_000, 800_000,
		1_000_000, 1_250_000, 1_500_000, 2_000_000},
	bisect: 2, repeats: 3, refRate: 100_000,

	seriesSizes: [][2]int{{20, 100}, {100, 100}, {100, 1000}},
	scrapeRate:  25_000, scrapes: 5, fillTimeout: 2 * time.Minute,
	capPaths: [2]int{1000, 1000}, capLimit: 10_000, capRate: 100_000,

	stormN: 100_000, stormWorkers: 2, smallRing: 8192,
	ratioPairs: 6, ratioCreates: 20_000, ratioOpens: 50_000,
	idleTime: 3 * time.Second, breakdownRounds: 3, vmTTL: 40 * time.Minute,

	otlpRates:   []int{5_000, 10_000, 15_000, 20_000, 40_000, 60_000, 80_000, 120_000, 160_000},
	otlpRefRate: 10_000, fleets: [][2]int{{4, 3_000}, {4, 1_000}, {4, 100}}, fleetWindow: 10 * time.Second,
}

var smokeConfig = config{
	warmup: time.Second, window: 2 * time.Second,
	rates: []int{20_000}, bisect: 0, repeats: 1, refRate: 20_000,

	seriesSizes: [][2]int{{20, 100}},
	scrapeRate:  20_000, scrapes: 1, fillTimeout: time.Minute,
	capPaths: [2]int{100, 100}, capLimit: 1000, capRate: 20_000,

	stormN: 2000, stormWorkers: 2, smallRing: 8192,
	ratioPairs: 1, ratioCreates: 500, ratioOpens: 1000,
	idleTime: 500 * time.Millisecond, vmTTL: 10 * time.Minute,

	otlpRates: []int{2_000}, otlpRefRate: 2_000, fleets: [][2]int{{2, 500}}, fleetWindow: 2 * time.Second,
}

// Bench is one run of the benchmarks.
type Bench struct {
	repo, work   string
	loaderBin    string
	stormBin     string
	fwopenBin    string
	kernelSeries string
	smoke        bool
	cfg          config
	early        chan vmResult // a guest booting in the background (smoke only)
}

// Results is everything measured; it is also written as JSON beside the logs.
type Results struct {
	Smoke     bool
	Machine   Machine
	Started   time.Time
	Duration  time.Duration
	Userspace *Userspace
	Exporter  *ExporterScale
	Kernel    *KernelPath
	OTLP      *OTLPBench
	Sections  []string // the sections asked for (--only)
	Errors    []string
}

var started = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "fwbench: %4.0fs "+format+"\n", append([]any{time.Since(started).Seconds()}, args...)...)
}

func main() {
	var b Bench
	var out, only string
	flag.StringVar(&b.repo, "repo", ".", "repository root")
	flag.StringVar(&b.work, "work", ".cache/bench", "folder for logs, profiles and results.json")
	flag.StringVar(&b.loaderBin, "loader", "", "static filewatcher-loader binary")
	flag.StringVar(&b.stormBin, "storm", "", "static fwstorm binary")
	flag.StringVar(&b.fwopenBin, "fwopen", "", "static fwopen binary (test/e2e/fwopen: the creation routes)")
	flag.StringVar(&b.kernelSeries, "kernel", "6.1", "guest kernel series for the kernel path (test/vm/vm.sh --kernel)")
	flag.BoolVar(&b.smoke, "smoke", false, "tiny sizes, every piece once, check the machinery (no timing asserted)")
	flag.StringVar(&out, "out", "", "report to write (default BENCHMARKS.md, or <work>/BENCHMARKS.smoke.md with --smoke)")
	flag.StringVar(&only, "only", "userspace,exporter,otlp,kernel", "sections to run (comma-separated)")
	render := flag.String("render", "", "only write the report again from this results.json (after a change to the report's text)")
	flag.Parse()
	if *render != "" {
		if out == "" {
			out = "BENCHMARKS.md"
		}
		if err := rerender(*render, out); err != nil {
			fatal(err)
		}
		return
	}
	if b.loaderBin == "" || b.stormBin == "" || b.fwopenBin == "" {
		fmt.Fprintln(os.Stderr, "fwbench: --loader, --storm and --fwopen are required (bench/run.sh passes them)")
		os.Exit(2)
	}
	var err error
	for _, p := range []*string{&b.repo, &b.work, &b.loaderBin, &b.stormBin, &b.fwopenBin} {
		if *p, err = filepath.Abs(*p); err != nil {
			fatal(err)
		}
	}
	b.cfg = fullConfig
	if b.smoke {
		b.cfg = smokeConfig
	}
	if out == "" {
		out = filepath.Join(b.repo, "BENCHMARKS.md")
		if b.smoke {
			out = filepath.Join(b.work, "BENCHMARKS.smoke.md")
		}
	}
	if err := os.MkdirAll(b.work, 0o755); err != nil {
		fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		logf("interrupted: stopping everything started")
		cancel()
		stopAll()
		os.Exit(130)
	}()

	res, err := b.run(ctx, strings.Split(only, ","))
	stopAll()
	if werr := writeJSON(filepath.Join(b.work, "results.json"), res); werr != nil {
		logf("results.json: %v", werr)
	}
	if err == nil || res.Userspace != nil || res.Exporter != nil || res.Kernel != nil || res.OTLP != nil {
		if werr := os.WriteFile(out, []byte(renderReport(res, b.cfg)), 0o644); werr != nil {
			fatal(werr)
		}
		logf("wrote %s", out)
	}
	if err != nil {
		fatal(err)
	}
	if b.smoke {
		made, problems := checkSmoke(res, b.cfg)
		skipped := ""
		if made < smokeChecks {
			skipped = fmt.Sprintf(" (%d skipped: sections not run)", smokeChecks-made)
		}
		if len(problems) > 0 {
			for _, p := range problems {
				logf("smoke: %s", p)
			}
			fmt.Printf("bench smoke: %d passed, %d failed%s\n", made-len(problems), len(problems), skipped)
			os.Exit(1)
		}
		fmt.Printf("bench smoke: %d passed, 0 failed%s\n", made, skipped)
	}
}

func fatal(err error) {
	stopAll()
	fmt.Fprintln(os.Stderr, "fwbench:", err)
	os.Exit(1)
}

func (b *Bench) run(ctx context.Context, sections []string) (*Results, error) {
	res := &Results{Smoke: b.smoke, Started: time.Now().UTC()}
	res.Machine = b.machine(ctx)
	defer func() { res.Duration = time.Since(res.Started) }()
	want := map[string]bool{}
	for _, s := range sections {
		s = strings.TrimSpace(s)
		want[s] = true
		res.Sections = append(res.Sections, s)
	}
	if b.smoke && want["kernel"] {
		b.bootEarly(ctx)
	}
	var errs []error
	note := func(section string, err error) {
		if err != nil {
			logf("%s: %v", section, err)
			res.Errors = append(res.Errors, section+": "+err.Error())
			errs = append(errs, fmt.Errorf("%s: %w", section, err))
		}
	}
	if want["userspace"] {
		var err error
		res.Userspace, err = b.userspace(ctx)
		note("userspace", err)
		res.Machine.LoadAvg = append(res.Machine.LoadAvg, "after section 1: "+loadAvg())
	}
	if want["exporter"] && ctx.Err() == nil {
		var err error
		res.Exporter, err = b.exporterScale(ctx)
		note("exporter", err)
		res.Machine.LoadAvg = append(res.Machine.LoadAvg, "after section 2: "+loadAvg())
	}
	if want["otlp"] && ctx.Err() == nil {
		var err error
		res.OTLP, err = b.otlpSection(ctx)
		note("otlp", err)
		res.Machine.LoadAvg = append(res.Machine.LoadAvg, "after section 5: "+loadAvg())
	}
	if want["kernel"] && ctx.Err() == nil {
		var err error
		res.Kernel, err = b.kernelPath(ctx)
		note("kernel", err)
		res.Machine.LoadAvg = append(res.Machine.LoadAvg, "after sections 3-4: "+loadAvg())
	}
	return res, errors.Join(errs...)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// rerender writes the report of a results.json that an earlier run wrote.
func rerender(results, out string) error {
	data, err := os.ReadFile(results)
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(data, &res); err != nil {
		return fmt.Errorf("%s: %w", results, err)
	}
	cfg := fullConfig
	if res.Smoke {
		cfg = smokeConfig
	}
	return os.WriteFile(out, []byte(renderReport(&res, cfg)), 0o644)
}
