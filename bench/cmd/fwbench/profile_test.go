package main

import (
	"os"
	"path/filepath"
	"testing"
)

// A V8 profile: (root) -> tick (3 samples, exporter code) and
// (root) -> profile (probe) -> dispatch (5 samples, the profiler's own stop).
const testProfile = `{
 "nodes": [
  {"id": 1, "callFrame": {"functionName": "(root)", "url": "", "lineNumber": -1}, "children": [2, 3, 5]},
  {"id": 2, "callFrame": {"functionName": "record", "url": "file:///r/exporter/dist/series.js", "lineNumber": 35}},
  {"id": 3, "callFrame": {"functionName": "profile", "url": "file:///r/bench/probe/exporter-probe.js", "lineNumber": 9}, "children": [4]},
  {"id": 4, "callFrame": {"functionName": "dispatch", "url": "", "lineNumber": -1}},
  {"id": 5, "callFrame": {"functionName": "(idle)", "url": "", "lineNumber": -1}}
 ],
 "samples": [2, 2, 2, 4, 4, 4, 4, 4, 5],
 "timeDeltas": [100, 100, 100, 100, 100, 100, 100, 100, 100]
}`

func TestSummarizeCPUProfile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.cpuprofile")
	if err := os.WriteFile(path, []byte(testProfile), 0o644); err != nil {
		t.Fatal(err)
	}
	top, kinds, err := summarizeCPUProfile(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 1 || top[0].Name != "record exporter/dist/series.js:36" || top[0].Percent != 100 {
		t.Errorf("top = %+v, want only record at 100%%", top)
	}
	if len(kinds) != 1 || kinds[0].Name != "series table (label key per event, cap)" {
		t.Errorf("kinds = %+v", kinds)
	}
}
