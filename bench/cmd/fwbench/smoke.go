package main

import "fmt"

// smokeChecks is the number of checks checkSmoke makes.
const smokeChecks = 13

// checkSmoke checks that every piece measured something sane. It never
// checks timing: the smoke runs on shared, noisy machines.
func checkSmoke(r *Results, cfg config) []string {
	var bad []string
	check := func(ok bool, format string, args ...any) {
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
	peers := k != nil && len(k.Peers) == 3
	check(peers, "peer: bpftrace runs missing")
	check(peers && k.Peers[1].Seen == k.Peers[1].Storm.OK && k.Peers[2].Seen+k.Peers[2].Lost >= k.Peers[2].Storm.OK,
		"peer: bpftrace did not see every event")
	return bad
}
