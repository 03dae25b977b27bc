package main

import (
	"fmt"
	"slices"
	"strings"
)

// smokeChecks is the number of checks checkSmoke makes when every section ran.
const smokeChecks = 19

// checkSmoke checks that every piece measured something sane, and returns
// how many checks it made (those of the sections that ran: --only) and the
// ones that failed. It never checks timing: the smoke runs on shared, noisy
// machines.
func checkSmoke(r *Results, cfg config) (made int, bad []string) {
	ran := func(section string) bool { return r.Sections == nil || slices.Contains(r.Sections, section) }
	check := func(ok bool, format string, args ...any) {
		section, _, _ := strings.Cut(format, ":")
		if section == "peer" {
			section = "kernel"
		}
		if !ran(section) {
			return
		}
		made++
		if !ok {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	u := r.Userspace
	check(u != nil && len(u.Steps) > 0 && u.Steps[0].Produced > 0 && u.Steps[0].Received > 0,
		"userspace: no events went through the pipeline")
	check(u != nil && len(u.Reference) > 0 && u.Reference[0].LoaderCPU > 0 && u.Reference[0].ExportCPU > 0,
		"userspace: no CPU time measured")
	check(u != nil && len(u.Reference) > 0 && u.Reference[0].Latency.LatencyMS.P99 != nil && u.Reference[0].Latency.Negative == 0,
		"userspace: no latency measured (or negative latencies)")
	check(u != nil && len(u.Steps) > 0 && u.Steps[0].Unreported == 0, "userspace: events missing without a gap")
	x := r.Exporter
	check(x != nil && len(x.Sizes) > 0 && x.Sizes[0].Series >= float64(cfg.seriesSizes[0][0]*cfg.seriesSizes[0][1]),
		"exporter: fewer series than paths")
	check(x != nil && len(x.Sizes) > 0 && len(x.Sizes[0].ScrapeMS) > 0 && x.Sizes[0].Bytes > 0 && len(x.Sizes[0].RSSMB) > 0 && x.Sizes[0].RSSMB[0] > 0,
		"exporter: no scrape or RSS measured")
	check(x != nil && x.Cap != nil && x.Cap.Series == float64(cfg.capLimit) && x.Cap.Overflow > 0,
		"exporter: the series cap did not hold")
	churnOK := x != nil && len(x.Churn) > 0
	if churnOK {
		last := x.Churn[len(x.Churn)-1]
		for _, p := range x.Churn {
			churnOK = churnOK && p.Series > 0 && p.Series <= 10_000
		}
		// Two simulated hours in: the first hour's paths have left, and new ones have series.
		churnOK = churnOK && last.Minutes >= 120 && last.firstHour() == 0 && last.OverflowSince == 0 &&
			last.ByHour["h1"] > 0
	}
	check(churnOK, "exporter: under churn, series outgrew the cap, or the first hour's stayed, or new paths overflowed")
	k := r.Kernel
	check(k != nil && len(k.Reconciles) == 4 && k.Reconciles[3].Pinned,
		"kernel: reconciliation runs missing (module: default and small ring; eBPF-only probe; module pinned)")
	ok := k != nil && len(k.Reconciles) == 4
	if ok {
		for _, rc := range k.Reconciles {
			ok = ok && rc.OK && rc.Storm.OK == uint64(cfg.stormN)
		}
	}
	check(ok, "kernel: created, fired, delivered and lost do not reconcile")
	check(k != nil && len(k.Ratios) == 2 && len(k.Ratios[0].Cost) > 0 && k.Ratios[0].Cost[0] > 0 && k.Ratios[1].Cost[0] > 0,
		"kernel: no with/without ratios")
	peers := k != nil && len(k.Peers) == 4
	check(peers, "peer: bpftrace or fanotify runs missing")
	check(peers && k.Peers[1].Seen == k.Peers[1].Storm.OK && k.Peers[2].Seen+k.Peers[2].Lost >= k.Peers[2].Storm.OK,
		"peer: bpftrace did not see every event")
	// The smoke's storm is smaller than fanotify's queue (16,384 events).
	check(peers && k.Peers[3].Seen == k.Peers[3].Storm.OK, "peer: fanotify did not see every create of the storm")
	routes := k != nil && len(k.Routes) == len(routeSteps())
	for i := 0; routes && i < len(k.Routes); i++ {
		r := k.Routes[i]
		routes = (r.Creation == (r.Ours != "")) && !strings.Contains(r.Ours, "; ") && (i > 0 || r.Fanotify != "")
	}
	check(routes, "peer: the routes table is wrong for filewatcher (a creation missed or reported twice, a non-creation reported) or fanotify reported no open: %+v", routesOf(k))
	o := r.OTLP
	check(o != nil && len(o.Steps) > 0 && o.Steps[0].Exported > 0 && o.Steps[0].CollectorGot >= o.Steps[0].Exported,
		"otlp: no events exported as log records (or the Collector logged fewer than the exporter counted)")
	drops := o != nil && len(o.Steps) > 0
	if drops {
		for _, run := range slices.Concat(o.Steps, o.With, o.Without) {
			drops = drops && run.Dropped == 0 && run.LoaderDropped == 0
		}
	}
	check(drops, "otlp: events dropped (OTLP export or loader) at the smoke's rate")
	check(o != nil && len(o.With) > 0 && len(o.Without) > 0 && o.With[0].ExportCPU > 0 && o.Without[0].ExportCPU > 0 &&
		o.With[0].CollectorCPU > 0 && o.Ratios().Median() > 0,
		"otlp: no CPU measured (exporter with and without events, Collector)")
	fleet := o != nil && len(o.Fleets) == len(cfg.fleets)
	for i := 0; fleet && i < len(o.Fleets); i++ {
		f := o.Fleets[i]
		fleet = len(f.Members) == cfg.fleets[i][0] && f.CollectorCPU > 0 && f.Dropped == 0 && f.LoaderDrop == 0 &&
			f.CollectorGot >= f.Exported && f.CollectorRSS > 0
		for _, m := range f.Members {
			fleet = fleet && m.Exported > 0
		}
	}
	check(fleet, "otlp: the fleet did not run (every host exporting, nothing dropped, Collector CPU and RSS measured)")
	return made, bad
}

func routesOf(k *KernelPath) []Route {
	if k == nil {
		return nil
	}
	return k.Routes
}
