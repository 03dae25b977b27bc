package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// ScrapeRun is the exporter holding a given number of live series.
type ScrapeRun struct {
	Label        string
	Dirs, Names  int
	MaxSeries    int
	Rate         int // events/s flowing during the scrapes
	Events       float64
	Series       float64 // filewatcher_exporter_series
	Overflow     float64 // filewatcher_exporter_overflow_events_total
	Bytes        int     // the exposition's size
	WireBytes    int     // its size gzip-compressed, as sent to Prometheus
	ColdMS       float64 // the first scrape
	ColdELDMS    float64
	ScrapeMS     Sample
	ELDMaxMS     Sample
	RSSMB        Sample
	PeakMB       float64
	UnderCapRun  bool // the 1,000,000-distinct-paths run
	WaitedEvents float64
	profileOut   string         // CPU-profile the exporter's scrapes into this .cpuprofile
	Profile      []ProfileEntry // self time per function during the scrapes
	ProfileParts []ProfileEntry // the same by kind of work
	ProfileNote  string
}

// ExporterScale is section 2's results.
type ExporterScale struct {
	Idle    ScrapeRun
	Sizes   []ScrapeRun
	Cap     *ScrapeRun
	Profile *ScrapeRun // the largest size again, under node --cpu-prof
	Churn   []ChurnPoint
}

func (b *Bench) exporterScale(ctx context.Context) (*ExporterScale, error) {
	logf("2/4 exporter memory and scrape")
	x := &ExporterScale{}
	idle, err := b.scrapeRun(ctx, ScrapeRun{Label: "idle", Dirs: 1, Names: 1, MaxSeries: 10000, Rate: 1})
	if err != nil {
		return x, err
	}
	x.Idle = idle
	for _, s := range b.cfg.seriesSizes {
		r, err := b.scrapeRun(ctx, ScrapeRun{Label: fmt.Sprintf("%d series", s[0]*s[1]),
			Dirs: s[0], Names: s[1], MaxSeries: 1_000_000, Rate: b.cfg.scrapeRate})
		if err != nil {
			return x, err
		}
		x.Sizes = append(x.Sizes, r)
	}
	d, n := b.cfg.capPaths[0], b.cfg.capPaths[1]
	capRun, err := b.scrapeRun(ctx, ScrapeRun{Label: fmt.Sprintf("%d distinct paths, cap %d", d*n, b.cfg.capLimit),
		Dirs: d, Names: n, MaxSeries: b.cfg.capLimit, Rate: b.cfg.capRate, UnderCapRun: true})
	if err != nil {
		return x, err
	}
	x.Cap = &capRun
	last := b.cfg.seriesSizes[len(b.cfg.seriesSizes)-1]
	logf("  profiling scrapes at %d series", last[0]*last[1])
	profRun, err := b.scrapeRun(ctx, ScrapeRun{Label: fmt.Sprintf("%d series, profiled", last[0]*last[1]),
		Dirs: last[0], Names: last[1], MaxSeries: 1_000_000, Rate: b.cfg.scrapeRate,
		profileOut: filepath.Join(b.work, "scrape.cpuprofile")})
	if err != nil {
		return x, err
	}
	x.Profile = &profRun
	if x.Churn, err = b.churn(ctx); err != nil {
		return x, err
	}
	return x, nil
}

// scrapeRun fills the exporter with every path of a dirs x names mix, then
// times scrapes and reads the memory.
func (b *Bench) scrapeRun(ctx context.Context, r ScrapeRun) (ScrapeRun, error) {
	tag := fmt.Sprintf("scrape-%dx%d", r.Dirs, r.Names)
	l, err := b.startSyntheticLoader(tag, r.Rate, r.Dirs, r.Names)
	if err != nil {
		return r, err
	}
	defer l.Close()
	if r.profileOut != "" {
		tag += "-profile"
	}
	e, err := b.startExporter(tag, l.Addr, nil, "--max-series", fmt.Sprint(r.MaxSeries))
	if err != nil {
		return r, err
	}
	defer e.Stop(10 * time.Second)
	if err := e.waitReady(ctx, 30*time.Second); err != nil {
		return r, err
	}
	// One whole cycle of the mix (every distinct path once), and a bit more.
	want := float64(r.Dirs*r.Names) * 1.02
	if r.Label == "idle" {
		want = 0
		time.Sleep(2 * time.Second)
	}
	deadline := time.Now().Add(b.cfg.fillTimeout)
	for {
		s, err := e.stats(ctx, false)
		if err != nil {
			return r, err
		}
		r.WaitedEvents = s.Events
		if s.Events >= want {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%s: exporter saw only %.0f of %.0f events after %v", r.Label, s.Events, want, b.cfg.fillTimeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	scrape := func() (Scrape, EventLoopDelay, error) {
		var eld EventLoopDelay
		if err := e.probeGet(ctx, "/eld/reset", nil); err != nil {
			return Scrape{}, eld, err
		}
		sc, err := e.scrape(ctx)
		if err != nil {
			return sc, eld, err
		}
		// Let a timer fire after the scrape, so a blocked loop is measured.
		time.Sleep(20 * time.Millisecond)
		err = e.probeGet(ctx, "/eld", &eld)
		return sc, eld, err
	}
	if r.profileOut != "" {
		if err := e.profileStart(ctx); err != nil {
			return r, err
		}
	}
	sc, eld, err := scrape()
	if err != nil {
		return r, err
	}
	r.ColdMS, r.ColdELDMS = ms(sc.Duration), eld.MaxMS
	for range b.cfg.scrapes {
		time.Sleep(time.Second)
		sc, eld, err = scrape()
		if err != nil {
			return r, err
		}
		r.ScrapeMS = append(r.ScrapeMS, ms(sc.Duration))
		r.ELDMaxMS = append(r.ELDMaxMS, eld.MaxMS)
		rss, hwm, err := rssBytes(e.PID())
		if err != nil {
			return r, err
		}
		r.RSSMB = append(r.RSSMB, mb(rss))
		r.PeakMB = mb(hwm)
	}
	r.Bytes, r.WireBytes = sc.Bytes, sc.WireBytes
	r.Series = sc.Metrics.Sum("filewatcher_exporter_series")
	r.Overflow = sc.Metrics.Sum("filewatcher_exporter_overflow_events_total")
	r.Events = sc.Metrics.Sum("filewatcher_exporter_events_received_total")
	if r.profileOut != "" {
		if err := e.profileStop(ctx, r.profileOut); err != nil {
			return r, err
		}
		if r.Profile, r.ProfileParts, err = summarizeCPUProfile(r.profileOut, 15); err != nil {
			r.ProfileNote = err.Error()
		}
	}
	logf("  %-34s series %7.0f  scrape %s ms  event-loop max %s ms  RSS %s MB",
		r.Label, r.Series, r.ScrapeMS.Format("%.0f"), r.ELDMaxMS.Format("%.0f"), r.RSSMB.Format("%.0f"))
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
func mb(b int64) float64         { return float64(b) / (1 << 20) }
