package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Profiles are where the CPU time goes in the userspace path at one rate.
type Profiles struct {
	Rate          int
	Run           PipelineRun
	ExporterParts []ProfileEntry // the exporter's self time by kind of work
	Exporter      []ProfileEntry // V8 CPU profile, self time
	Loader        []ProfileEntry // perf record -e cpu-clock, self time
	Notes         []string
}

// ProfileEntry is one function's share of the samples.
type ProfileEntry struct {
	Percent float64
	Name    string
}

func (b *Bench) profilePipeline(ctx context.Context, rate int) (*Profiles, error) {
	p := &Profiles{Rate: rate}
	profOut := filepath.Join(b.work, "exporter.cpuprofile")
	os.Remove(profOut)
	o := pipelineOptions{profileOut: profOut}
	perfOut := filepath.Join(b.work, "loader.perf.data")
	if _, err := exec.LookPath("perf"); err == nil {
		o.perfOut = perfOut
	} else {
		p.Notes = append(p.Notes, "perf not installed: no loader profile (apt-get install linux-perf)")
	}
	r, err := b.runPipeline(ctx, "profile", rate, o)
	p.Run = r
	if err != nil {
		return p, err
	}
	if p.Exporter, p.ExporterParts, err = summarizeCPUProfile(profOut, 15); err != nil {
		p.Notes = append(p.Notes, "reading the node profile: "+err.Error())
	}
	if o.perfOut != "" {
		if p.Loader, err = summarizePerf(ctx, perfOut, 15); err != nil {
			p.Notes = append(p.Notes, "perf report: "+err.Error())
		}
	}
	return p, nil
}

// cpuProfile is the part of V8's .cpuprofile format we read.
type cpuProfile struct {
	Nodes []struct {
		ID        int   `json:"id"`
		Children  []int `json:"children"`
		CallFrame struct {
			FunctionName string `json:"functionName"`
			URL          string `json:"url"`
			LineNumber   int    `json:"lineNumber"`
		} `json:"callFrame"`
	} `json:"nodes"`
	Samples    []int `json:"samples"`
	TimeDeltas []int `json:"timeDeltas"`
}

// summarizeCPUProfile adds up self time per function (idle excluded) and
// returns the top n, and the shares of each kind of work (see workKind).
func summarizeCPUProfile(path string, n int) (top, kinds []ProfileEntry, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var prof cpuProfile
	if err := json.Unmarshal(b, &prof); err != nil {
		return nil, nil, err
	}
	// The probe's own calls that start and stop the profiler (stopping it
	// builds the profile inside the inspector's dispatch) are not the
	// exporter's work: drop them and everything under them.
	parent := map[int]int{}
	for _, node := range prof.Nodes {
		for _, c := range node.Children {
			parent[c] = node.ID
		}
	}
	probeControl := map[int]bool{}
	for _, node := range prof.Nodes {
		cf := node.CallFrame
		if cf.FunctionName == "profile" && strings.HasSuffix(cf.URL, "exporter-probe.js") {
			probeControl[node.ID] = true
		}
	}
	underProbe := func(id int) bool {
		for seen := 0; seen < 10_000; seen++ {
			if probeControl[id] {
				return true
			}
			p, ok := parent[id]
			if !ok {
				return false
			}
			id = p
		}
		return false
	}
	names := map[int]string{}
	for _, node := range prof.Nodes {
		cf := node.CallFrame
		name := cf.FunctionName
		if name == "" {
			name = "(anonymous)"
		}
		if cf.URL != "" {
			name += " " + shortURL(cf.URL) + fmt.Sprintf(":%d", cf.LineNumber+1)
		}
		names[node.ID] = name
	}
	self := map[string]float64{}
	byKind := map[string]float64{}
	var total float64
	for i, id := range prof.Samples {
		name := names[id]
		if name == "(idle)" || underProbe(id) {
			continue
		}
		dt := 1.0
		if i < len(prof.TimeDeltas) {
			dt = float64(prof.TimeDeltas[i])
		}
		self[name] += dt
		byKind[workKind(name)] += dt
		total += dt
	}
	return topEntries(self, total, n), topEntries(byKind, total, len(byKind)), nil
}

// workKind sorts an exporter function into the kind of work it does, by
// where it comes from. Buffer built-ins are counted as decoding: the decoder
// makes a Buffer for the bytes fields (path, comm) of every event.
func workKind(name string) string {
	has := func(subs ...string) bool {
		for _, s := range subs {
			if strings.Contains(name, s) {
				return true
			}
		}
		return false
	}
	switch {
	case name == "(garbage collector)":
		return "garbage collection"
	case has("$decode", "$toObject", "protobufjs", "@protobufjs", "exporter/dist/decode.js", "FastBuffer",
		"subarray node:buffer", "slice node:buffer"):
		return "protobuf decoding (incl. Buffers for bytes fields)"
	case has("@grpc/", "node:http2", "internal/http2", "node:net", "stream_base_commons"):
		return "gRPC and HTTP/2"
	case has("@opentelemetry/"):
		return "OpenTelemetry SDK and Prometheus serialization"
	case has("exporter/dist/exposition.js", "node:zlib", "Gzip", "zlib"):
		return "/metrics exposition (writing chunks, gzip)"
	case has("exporter/dist/series.js", "exporter/dist/labels.js", "latin1Slice"):
		return "series table (label key per event, cap)"
	case has("exporter/dist/", "exporter-probe.js"):
		return "rest of the exporter (stream, sequence accounting, probe)"
	}
	return "other (Node internals, native)"
}

// shortURL keeps what identifies a script: the package or our own file.
func shortURL(url string) string {
	url = strings.TrimPrefix(url, "file://")
	if i := strings.LastIndex(url, "node_modules/"); i >= 0 {
		return url[i+len("node_modules/"):]
	}
	if i := strings.Index(url, "exporter/dist/"); i >= 0 {
		return url[i:]
	}
	return filepath.Base(url)
}

func topEntries(self map[string]float64, total float64, n int) []ProfileEntry {
	var out []ProfileEntry
	for name, v := range self {
		out = append(out, ProfileEntry{Percent: 100 * v / max(total, 1), Name: name})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Percent > out[j].Percent })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// summarizePerf reads self time per symbol from perf record's output.
func summarizePerf(ctx context.Context, path string, n int) ([]ProfileEntry, error) {
	out, err := run(ctx, 2*time.Minute, "perf", "report", "-i", path, "--stdio", "--no-children",
		"-g", "none", "--sort", "symbol", "--percent-limit", "0.5")
	if err != nil {
		return nil, err
	}
	var entries []ProfileEntry
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		var pct float64
		if _, err := fmt.Sscanf(line, "%f%%", &pct); err != nil {
			continue
		}
		// "12.34%  [.] symbol" or "[k] symbol"
		if i := strings.Index(line, "] "); i >= 0 {
			name := strings.TrimSpace(strings.TrimRight(line[i+2:], " -"))
			entries = append(entries, ProfileEntry{Percent: pct, Name: line[i-2:i+1] + " " + name})
		}
		if len(entries) == n {
			break
		}
	}
	return entries, nil
}
