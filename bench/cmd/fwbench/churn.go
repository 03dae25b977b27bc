package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// ChurnPoint is one half hour of simulated time in the series table under
// churn (exporter/src/bench/run.ts churn): new paths all the time, with the
// default cap (10,000) and idle TTL (1 h).
type ChurnPoint struct {
	Scenario      string             `json:"scenario"`
	Minutes       float64            `json:"minutes"`
	Paths         float64            `json:"paths"`
	Series        float64            `json:"series"`
	ByHour        map[string]float64 `json:"by_hour"`
	Evicted       float64            `json:"evicted"`
	Expired       float64            `json:"expired"`
	OverflowSince float64            `json:"overflow_since"`
	HeapMB        float64            `json:"heap_mb"`
	RSSMB         float64            `json:"rss_mb"`
	ScrapeMS      float64            `json:"scrape_ms"`
	Bytes         float64            `json:"exposition_bytes"`
}

// churn runs the simulated-time churn of the series table, in one node
// process (no loader, no transport: the table's own behaviour over hours).
func (b *Bench) churn(ctx context.Context) ([]ChurnPoint, error) {
	logf("  series churn (simulated hours)")
	argv := []string{"node", "--expose-gc", filepath.Join(b.repo, "exporter", "dist", "bench", "run.js"), "churn"}
	if b.smoke {
		argv = append(argv, "smoke")
	}
	out, err := run(ctx, 20*time.Minute, argv...)
	if err != nil {
		return nil, err
	}
	var points []ChurnPoint
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var p ChurnPoint
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			return points, fmt.Errorf("churn: %q: %w", line, err)
		}
		points = append(points, p)
	}
	if len(points) == 0 {
		return nil, fmt.Errorf("churn printed no measurements:\n%s", lastLines(out, 15))
	}
	for _, p := range points {
		logf("  %-15s %4.0f min  paths %8.0f  series %6.0f  heap %5.1f MB  scrape %5.1f ms",
			p.Scenario, p.Minutes, p.Paths, p.Series, p.HeapMB, p.ScrapeMS)
	}
	return points, nil
}

// firstHour is how many of a point's series come from paths created in the first simulated hour.
func (p ChurnPoint) firstHour() float64 { return p.ByHour["h0"] }

func renderChurn(w *md, points []ChurnPoint) {
	if len(points) == 0 {
		return
	}
	w.p("**Series churn** (the series table alone, on a simulated clock, with the defaults `--max-series 10000` and " +
		"`--series-idle-ttl 1h`; a scrape every 15 simulated seconds). Every simulated second brings paths never seen " +
		"before and one creation of each path of a hot set; \"from hour 1\" counts the series still held for paths " +
		"created in the first hour. Heap (after a full collection) and RSS are the node process's; scrape is the real time to render that half " +
		"hour's last exposition.")
	w.p("")
	w.header("scenario", "simulated time", "paths created", "series", "from hour 1", "evicted", "expired",
		"overflow (last 30 min)", "heap", "RSS", "scrape")
	for _, p := range points {
		w.row(p.Scenario, fmt.Sprintf("%.1f h", p.Minutes/60), thousands(p.Paths), thousands(p.Series),
			thousands(p.firstHour()), thousands(p.Evicted), thousands(p.Expired), thousands(p.OverflowSince),
			fmt.Sprintf("%.1f MB", p.HeapMB), fmt.Sprintf("%.0f MB", p.RSSMB), fmt.Sprintf("%.1f ms", p.ScrapeMS))
	}
	w.p("")
}
