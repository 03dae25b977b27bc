package main

import (
	"math"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "42 (node) S 1 42 42 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 11 0 1000 0 0", 2 * time.Second, false},
		{"comm with spaces and parens", "7 (a b) (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0", 30 * time.Millisecond, false},
		{"no comm", "garbage", 0, true},
		{"short", "1 (x) S 1 2", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.stat)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && math.Abs(float64(got-tt.want)) > float64(time.Millisecond) && clockTicks == 100 {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseStatusMem(t *testing.T) {
	rss, hwm, err := parseStatusMem("Name:\tnode\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t11\n")
	if err != nil || rss != 100<<20 || hwm != 200<<20 {
		t.Fatalf("got %d %d %v", rss, hwm, err)
	}
	if _, _, err := parseStatusMem("Name:\tx\n"); err == nil {
		t.Fatal("no VmRSS: want an error")
	}
}

func TestParseMetrics(t *testing.T) {
	body := []byte(`# HELP file_created_total Number of files created
# TYPE file_created_total counter
file_created_total{name="a b}",path="/x \"q\"",otel_scope_name="filewatcher"} 3
file_created_total{name="c",path="/y",otel_scope_name="filewatcher"} 4
filewatcher_exporter_series{otel_scope_name="filewatcher"} 2
target_info 1
`)
	m := parseMetrics(body)
	if got := m.Sum("file_created_total"); got != 7 {
		t.Errorf("sum = %v, want 7", got)
	}
	if got := m.Series("file_created_total"); got != 2 {
		t.Errorf("series = %v, want 2", got)
	}
	if got := m.Sum("filewatcher_exporter_series"); got != 2 {
		t.Errorf("gauge = %v, want 2", got)
	}
	if got := m.Sum("target_info"); got != 1 {
		t.Errorf("unlabelled = %v, want 1", got)
	}
}

func TestParseStorm(t *testing.T) {
	s, err := parseStorm("mode=create n=100 ok=99 failed=1 workers=2 ns=2000000 per_sec=49500.0 utime_us=10 stime_us=900 first_errno=17")
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != "create" || s.N != 100 || s.OK != 99 || s.Failed != 1 || s.Workers != 2 || s.NS != 2000000 ||
		s.PerSec != 49500 || s.StimeUS != 900 || s.FirstErrno != 17 {
		t.Errorf("got %+v", s)
	}
	if got := s.NSPerOp(); math.Abs(got-2000000.0/99) > 1e-9 {
		t.Errorf("NSPerOp = %v", got)
	}
	if _, err := parseStorm("usage: fwstorm ..."); err == nil {
		t.Error("want an error for a line without mode=")
	}
}

func TestSample(t *testing.T) {
	s := Sample{3, 1, 2, 10}
	if s.Median() != 2.5 || s.Min() != 1 || s.Max() != 10 {
		t.Errorf("median %v min %v max %v", s.Median(), s.Min(), s.Max())
	}
	if got := (Sample{1.5}).Format("%.1f"); got != "1.5 (n=1)" {
		t.Errorf("Format = %q", got)
	}
	if got := s.Format("%.0f"); got != "2 (1–10, n=4)" {
		t.Errorf("Format = %q", got)
	}
	if got := percentile([]float64{5, 1, 4, 2, 3}, 0.99); got != 5 {
		t.Errorf("p99 = %v", got)
	}
}

func TestJudge(t *testing.T) {
	ok := PipelineRun{Target: 1000, Window: time.Second, Produced: 1000, Received: 1000, QueueEnd: 10}
	if pass, why := judge(ok); !pass {
		t.Errorf("healthy run judged failing: %s", why)
	}
	tests := map[string]func(r *PipelineRun){
		"dropped":    func(r *PipelineRun) { r.Dropped = 1 },
		"unreported": func(r *PipelineRun) { r.Unreported = 1 },
		"slow maker": func(r *PipelineRun) { r.Produced, r.Received = 900, 900 },
		"behind":     func(r *PipelineRun) { r.Received = 900 },
		"queue grew": func(r *PipelineRun) { r.Produced, r.Received, r.QueueEnd = 1_000_000, 1_000_000, 60_000 },
	}
	for name, spoil := range tests {
		r := ok
		r.Target = 1000
		spoil(&r)
		if r.Produced == 1_000_000 {
			r.Target = 1_000_000
		}
		if pass, _ := judge(r); pass {
			t.Errorf("%s: judged passing", name)
		}
	}
}

func TestReconciled(t *testing.T) {
	good := Reconcile{Storm: Storm{OK: 100}, Fired: 100, Delivered: 90, LostTotal: 10}
	if ok, why := reconciled(good); !ok {
		t.Errorf("good run: %s", why)
	}
	for name, r := range map[string]Reconcile{
		"one short":   {Storm: Storm{OK: 100}, Fired: 100, Delivered: 89, LostTotal: 10},
		"fired less":  {Storm: Storm{OK: 100}, Fired: 99, Delivered: 89, LostTotal: 10},
		"other files": {Storm: Storm{OK: 100}, Fired: 101, Delivered: 90, LostTotal: 10, Other: 1},
		"unexplained": {Storm: Storm{OK: 100}, Fired: 100, Delivered: 90, LostTotal: 10, Unexplained: 1},
	} {
		if ok, _ := reconciled(r); ok {
			t.Errorf("%s: reconciled", name)
		}
	}
}

func TestThousandsAndRing(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -2500: "-2,500"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int]string{16 << 20: "16 MiB", 8192: "8 KiB", 100: "100 B"} {
		if got := ringText(in); got != want {
			t.Errorf("ringText(%d) = %q, want %q", in, got, want)
		}
	}
}
