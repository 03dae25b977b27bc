package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var exporterReady = regexp.MustCompile(`msg=ready listen=(\S+)`)

// Exporter is `node exporter/dist/main.js` with the measurement probe
// (bench/probe/exporter-probe.js) preloaded.
type Exporter struct {
	*Process
	Addr  string // HTTP host:port
	Probe string // probe host:port
}

// startExporter starts the exporter against loaderAddr on a free port.
// nodeArgs go before the script (e.g. --cpu-prof), args after it.
func (b *Bench) startExporter(tag, loaderAddr string, nodeArgs []string, args ...string) (*Exporter, error) {
	probeFile := filepath.Join(b.work, tag+"-probe.addr")
	os.Remove(probeFile)
	argv := []string{"node"}
	argv = append(argv, nodeArgs...)
	argv = append(argv, "--require", filepath.Join(b.repo, "bench/probe/exporter-probe.js"),
		filepath.Join(b.repo, "exporter/dist/main.js"),
		"--loader", loaderAddr, "--listen", "127.0.0.1:0", "--log-level", "info")
	argv = append(argv, args...)
	env := []string{"FWBENCH_PROBE_FILE=" + probeFile, "FWBENCH_EXPORTER_DIST=" + filepath.Join(b.repo, "exporter/dist")}
	p, err := startProcess("exporter", filepath.Join(b.work, tag+"-exporter.log"), env, argv...)
	if err != nil {
		return nil, err
	}
	addr, err := p.waitLog(exporterReady, 30*time.Second)
	if err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	e := &Exporter{Process: p, Addr: addr}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(probeFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			e.Probe = string(bytes.TrimSpace(b))
			break
		}
		if time.Now().After(deadline) {
			p.Stop(time.Second)
			return nil, fmt.Errorf("exporter probe did not start (%s)", tail(p.Log, 5))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e, nil
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	body, _, err := httpFetch(ctx, url, nil)
	return body, err
}

// httpFetch GETs url with extra request headers and returns the body as it
// came over the connection, and the response's headers.
func httpFetch(ctx context.Context, url string, header http.Header) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return body, resp.Header, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, resp.Header, nil
}

// Scrape is one GET /metrics, as Prometheus makes it (gzip accepted).
type Scrape struct {
	Duration  time.Duration // until the whole body is read and decompressed
	Bytes     int           // the exposition's size
	WireBytes int           // what went over the connection (compressed)
	Metrics   Metrics
}

func (e *Exporter) scrape(ctx context.Context) (Scrape, error) {
	start := time.Now()
	// Accept-Encoding set by hand, so that Go does not decompress
	// transparently and the compressed size can be read.
	wire, header, err := httpFetch(ctx, "http://"+e.Addr+"/metrics", http.Header{"Accept-Encoding": {"gzip"}})
	if err != nil {
		return Scrape{}, err
	}
	body := wire
	if header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(wire))
		if err != nil {
			return Scrape{}, err
		}
		if body, err = io.ReadAll(zr); err != nil {
			return Scrape{}, fmt.Errorf("GET /metrics: gunzip: %w", err)
		}
	}
	d := time.Since(start)
	return Scrape{Duration: d, Bytes: len(body), WireBytes: len(wire), Metrics: parseMetrics(body)}, nil
}

// ready reports whether /readyz answers 200 (subscribed to the loader).
func (e *Exporter) ready(ctx context.Context) bool {
	_, err := httpGet(ctx, "http://"+e.Addr+"/readyz")
	return err == nil
}

func (e *Exporter) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !e.ready(ctx) {
		if e.Exited() || time.Now().After(deadline) {
			return fmt.Errorf("exporter not ready after %v: %s", timeout, tail(e.Log, 10))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// ProbeStats is what the probe's /stats returns.
type ProbeStats struct {
	Events    float64 `json:"events"`
	Messages  float64 `json:"messages"`
	Negative  float64 `json:"negative"`
	LatencyMS struct {
		P50  *float64 `json:"p50"`
		P90  *float64 `json:"p90"`
		P99  *float64 `json:"p99"`
		P999 *float64 `json:"p999"`
		Max  *float64 `json:"max"`
	} `json:"latency_ms"`
	RSS float64 `json:"rss_bytes"`
}

// EventLoopDelay is what the probe's /eld returns.
type EventLoopDelay struct {
	Count float64 `json:"count"`
	MaxMS float64 `json:"max_ms"`
	P50MS float64 `json:"p50_ms"`
	P99MS float64 `json:"p99_ms"`
}

func (e *Exporter) probeGet(ctx context.Context, path string, v any) error {
	body, err := httpGet(ctx, "http://"+e.Probe+path)
	if err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(body, v)
}

// stats reads the probe's counters; reset starts them afresh after reading.
func (e *Exporter) stats(ctx context.Context, reset bool) (ProbeStats, error) {
	var s ProbeStats
	path := "/stats"
	if reset {
		path += "?reset=1"
	}
	return s, e.probeGet(ctx, path, &s)
}

// profileStart starts the V8 CPU profiler in the exporter (through the probe).
func (e *Exporter) profileStart(ctx context.Context) error {
	return e.probeGet(ctx, "/profile/start", nil)
}

// profileStop stops it and has the probe write the .cpuprofile to file.
func (e *Exporter) profileStop(ctx context.Context, file string) error {
	return e.probeGet(ctx, "/profile/stop?file="+url.QueryEscape(file), nil)
}

// Metrics are the samples of an exposition: name -> label text -> value.
type Metrics map[string]map[string]float64

// parseMetrics reads the Prometheus text format (enough of it for our own
// exporter: no timestamps, no exemplars).
func parseMetrics(body []byte) Metrics {
	m := Metrics{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, labels, value, ok := splitSample(line)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		if m[name] == nil {
			m[name] = map[string]float64{}
		}
		m[name][labels] = v
	}
	return m
}

// splitSample splits `name{labels} value`; label values may hold spaces and
// escaped quotes.
func splitSample(line string) (name, labels, value string, ok bool) {
	i := strings.IndexAny(line, "{ ")
	if i < 0 {
		return "", "", "", false
	}
	name = line[:i]
	rest := line[i:]
	if rest[0] == '{' {
		end := -1
		inQuote := false
		for j := 1; j < len(rest); j++ {
			switch {
			case inQuote && rest[j] == '\\':
				j++
			case rest[j] == '"':
				inQuote = !inQuote
			case !inQuote && rest[j] == '}':
				end = j
			}
			if end >= 0 {
				break
			}
		}
		if end < 0 {
			return "", "", "", false
		}
		labels = rest[1:end]
		rest = rest[end+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 1 {
		return "", "", "", false
	}
	return name, labels, f[0], true
}

// Sum adds every series of a metric.
func (m Metrics) Sum(name string) float64 {
	var s float64
	for _, v := range m[name] {
		s += v
	}
	return s
}

// Series counts the series of a metric.
func (m Metrics) Series(name string) int { return len(m[name]) }
