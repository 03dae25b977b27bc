//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/internal/testutil"
	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// TestFleet runs the OTLP path on FILEWATCHER_E2E_FLEET_KERNELS, the way the
// README's Fleet section deploys it: files created in the guest, the loader
// there, the exporter on the host pushing OTLP (metrics, and every event as
// a log record) to a node-local OpenTelemetry Collector, which forwards to a
// gateway Collector that writes log records to a file and metrics to a real
// Prometheus through remote write. Both Collectors are the real one, built by
// make setup (scripts/build-collector.sh). Then outages: the node Collector
// down for 4 s (retried: every event delivered once), down past the retry
// budget (every event delivered or counted lost, exactly), restarted with a
// file_storage sending queue while the gateway is down (nothing lost), and
// the exporter killed mid-outage and restarted from its state file (the
// events still in the loader's replay buffer exported, not skipped).
func TestFleet(t *testing.T) {
	for _, k := range kernelList(t, "FILEWATCHER_E2E_FLEET_KERNELS", "E2E_FLEET_KERNELS") {
		t.Run(guestArch()+"/"+k, func(t *testing.T) {
			g := bootGuest(t, k, "--no-loader")
			g.startLoader(t)
			f := newFleet(t)
			t.Run("events exactly once", func(t *testing.T) { testFleetEvents(t, g, f) })
			t.Run("remote write", func(t *testing.T) { testFleetRemoteWrite(t, g, f) })
			// Over HTTP the SDK's exporter retries within its timeout; over
			// gRPC it does not, and the exporter's own retries deliver.
			t.Run("collector down 4s/http", func(t *testing.T) { testFleetShortOutage(t, g, f, "http/protobuf", f.nodeURL) })
			t.Run("collector down 4s/grpc", func(t *testing.T) { testFleetShortOutage(t, g, f, "grpc", f.nodeGRPC) })
			t.Run("collector down past the retry budget", func(t *testing.T) { testFleetLongOutage(t, g, f) })
			t.Run("collector restart with file_storage", func(t *testing.T) { testFleetCollectorRestart(t, g, f) })
			t.Run("exporter restart from its state file", func(t *testing.T) { testFleetExporterRestart(t, g, f) })
		})
	}
}

// fleet is the host side: Prometheus, a gateway and a node Collector.
type fleet struct {
	dir        string
	prometheus string // base URL
	gateway    *collector
	node       *collector
	nodeURL    string // what --otlp-endpoint names
	nodeGRPC   string // the same for --otlp-protocol grpc
	logs       string // the gateway's file exporter output
}

func newFleet(t *testing.T) *fleet {
	bin := collectorBinary(t)
	ports, err := vmagent.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{dir: t.TempDir(), nodeURL: fmt.Sprintf("http://127.0.0.1:%d", ports[0]), nodeGRPC: fmt.Sprintf("http://127.0.0.1:%d", ports[2])}
	f.logs = filepath.Join(f.dir, "gateway-logs.jsonl")
	f.prometheus = startRemoteWritePrometheus(t, f.dir, ports[3])
	f.gateway = startCollector(t, bin, f.dir, "gateway", fmt.Sprintf(gatewayConfig, ports[1], f.logs, ports[3]), ports[1])
	storage := filepath.Join(f.dir, "node-queue")
	if err := os.MkdirAll(storage, 0o700); err != nil {
		t.Fatal(err)
	}
	f.node = startCollector(t, bin, f.dir, "node", fmt.Sprintf(nodeConfig, storage, ports[0], ports[2], ports[1]), ports[0])
	return f
}

// The node Collector: what the README recommends on every host, an OTLP
// receiver on loopback and an OTLP/HTTP exporter to the gateway whose
// sending queue lives on disk (file_storage), retried without a time limit.
const nodeConfig = `
extensions:
  file_storage:
    directory: %s
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
      grpc:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 200ms
exporters:
  otlp_http:
    endpoint: http://127.0.0.1:%d
    retry_on_failure:
      enabled: true
      initial_interval: 200ms
      max_interval: 1s
      max_elapsed_time: 0
    sending_queue:
      enabled: true
      storage: file_storage
service:
  extensions: [file_storage]
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp_http]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp_http]
`

// The gateway Collector: log records to a file the test reads, metrics to
// Prometheus's remote-write receiver.
const gatewayConfig = `
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
exporters:
  file:
    path: %s
    flush_interval: 100ms
  prometheus_remote_write:
    endpoint: http://127.0.0.1:%d/api/v1/write
    resource_to_telemetry_conversion:
      enabled: true
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [file]
    metrics:
      receivers: [otlp]
      exporters: [prometheus_remote_write]
`

// collectorBinary is the Collector make setup built; warm, the script only
// prints its path.
func collectorBinary(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "scripts", "build-collector.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/build-collector.sh (make setup builds the Collector): %v\n%s", err, stderr.String())
	}
	bin := strings.TrimSpace(string(out))
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("the Collector: %v", err)
	}
	return bin
}

// collector is one Collector process, which the test stops and starts again.
type collector struct {
	bin, config, name string
	port              int // its OTLP/HTTP receiver: up when it accepts connections
	cmd               *exec.Cmd
	done              chan struct{}
	log               *testutil.SyncBuffer
}

func startCollector(t *testing.T, bin, dir, name, config string, port int) *collector {
	t.Helper()
	c := &collector{bin: bin, name: name, port: port, config: filepath.Join(dir, name+".yaml"), log: &testutil.SyncBuffer{}}
	if err := os.WriteFile(c.config, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "validate", "--config="+c.config).CombinedOutput(); err != nil {
		t.Fatalf("%s validate %s: %v\n%s", name, c.config, err, out)
	}
	c.start(t)
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			t.Logf("%s Collector log:\n%s", name, tail(c.log.Bytes(), 60))
		}
	})
	return c
}

func (c *collector) start(t *testing.T) {
	t.Helper()
	c.cmd = exec.Command(c.bin, "--config="+c.config)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start the %s Collector: %v", c.name, err)
	}
	c.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(c.cmd, c.done)
	addr := fmt.Sprintf("127.0.0.1:%d", c.port)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return
		}
		select {
		case <-c.done:
			t.Fatalf("the %s Collector exited:\n%s", c.name, tail(c.log.Bytes(), 40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %s Collector does not listen on %s after a minute", c.name, addr)
		}
	}
}

// stop shuts the Collector down gracefully (SIGTERM), as systemd or the
// kubelet would; SIGKILL after 30 s.
func (c *collector) stop(t *testing.T) {
	t.Helper()
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
		t.Errorf("the %s Collector ignored SIGTERM for 30s; killed", c.name)
	}
	c.cmd = nil
}

// startRemoteWritePrometheus runs Debian's Prometheus with nothing to scrape
// and its remote-write receiver on, and returns its base URL.
func startRemoteWritePrometheus(t *testing.T, dir string, port int) string {
	t.Helper()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := &testutil.SyncBuffer{}
	cmd := exec.Command("prometheus", "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--web.enable-remote-write-receiver")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus (make setup installs it): %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("prometheus log:\n%s", tail(log.Bytes(), 40))
		}
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if resp, err := http.Get(base + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		select {
		case <-done:
			t.Fatalf("prometheus exited:\n%s", log.Bytes())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after a minute")
		}
	}
}

// otlpRecord is one log record as the gateway's file exporter wrote it.
type otlpRecord struct {
	resource map[string]string
	attrs    map[string]otlpValue
}

// otlpValue is an OTLP AnyValue in its JSON form (64-bit integers are strings).
type otlpValue struct {
	StringValue *string `json:"stringValue"`
	IntValue    *string `json:"intValue"`
	BytesValue  *string `json:"bytesValue"`
}

func (v otlpValue) String() string {
	switch {
	case v.StringValue != nil:
		return *v.StringValue
	case v.IntValue != nil:
		return *v.IntValue
	case v.BytesValue != nil:
		return "bytes:" + *v.BytesValue
	}
	return "<unset>"
}

type otlpKeyValue struct {
	Key   string    `json:"key"`
	Value otlpValue `json:"value"`
}

// readLogRecords reads every log record the gateway has written so far.
func readLogRecords(t *testing.T, file string) []otlpRecord {
	t.Helper()
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []otlpRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 256<<20)
	for sc.Scan() {
		var req struct {
			ResourceLogs []struct {
				Resource struct {
					Attributes []otlpKeyValue `json:"attributes"`
				} `json:"resource"`
				ScopeLogs []struct {
					LogRecords []struct {
						EventName  string         `json:"eventName"`
						Attributes []otlpKeyValue `json:"attributes"`
					} `json:"logRecords"`
				} `json:"scopeLogs"`
			} `json:"resourceLogs"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			// The last line may be half written.
			break
		}
		for _, rl := range req.ResourceLogs {
			res := map[string]string{}
			for _, kv := range rl.Resource.Attributes {
				res[kv.Key] = kv.Value.String()
			}
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					attrs := map[string]otlpValue{}
					for _, kv := range lr.Attributes {
						attrs[kv.Key] = kv.Value
					}
					attrs["event.name"] = otlpValue{StringValue: &lr.EventName}
					out = append(out, otlpRecord{resource: res, attrs: attrs})
				}
			}
		}
	}
	return out
}

// path is the record's file.path as bytes: exact, from the _bytes attribute
// when the path is not UTF-8.
func (r otlpRecord) path() []byte { return r.bytesOr("filewatcher.file.path_bytes", "file.path") }

func (r otlpRecord) bytesOr(bytesKey, stringKey string) []byte {
	if v, ok := r.attrs[bytesKey]; ok && v.BytesValue != nil {
		b, err := base64.StdEncoding.DecodeString(*v.BytesValue)
		if err == nil {
			return b
		}
	}
	return []byte(r.attrs[stringKey].String())
}

// recordsUnder counts the records by path, for paths under dir.
func recordsUnder(records []otlpRecord, dir string) map[string]int {
	n := map[string]int{}
	for _, r := range records {
		if p := string(r.path()); strings.HasPrefix(p, dir+"/") {
			n[p]++
		}
	}
	return n
}

// testFleetEvents creates the scripted files (odd bytes, 4095-byte paths,
// other users, a comm that is not UTF-8) and wants each as exactly one log
// record at the gateway, with the event's details byte for byte, the
// loader's run id, and this host's resource.
func testFleetEvents(t *testing.T, g *guest, f *fleet) {
	exp := startExporter(t, g.addr, "--otlp-endpoint", f.nodeURL, "--otlp-events", "true", "--otlp-metrics-interval", "1000")
	s := exp.scenario(g)
	s.setup(t)
	s.creates(t)
	s.nonCreates(t)
	end := s.dir + "/end"
	s.create(t, end, "touch", argv("touch", end))
	var records []otlpRecord
	deadline := time.Now().Add(2 * time.Minute)
	for {
		records = readLogRecords(t, f.logs)
		if recordsUnder(records, s.dir)[end] > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Flush the batches behind the last one, then read again.
	time.Sleep(time.Second)
	records = readLogRecords(t, f.logs)
	runID := loaderStatus(t, g).GetRunId()
	host, _ := os.Hostname()
	byPath := map[string][]otlpRecord{}
	for _, r := range records {
		byPath[string(r.path())] = append(byPath[string(r.path())], r)
	}
	for _, w := range s.want {
		got := byPath[string(w.path)]
		if len(got) != 1 {
			t.Errorf("%d log records for %q, want 1", len(got), shorten(w.path))
			continue
		}
		r := got[0]
		// Who created it: one of the identities the expectation allows.
		comm := r.bytesOr("filewatcher.process.executable.name_bytes", "process.executable.name")
		if !slices.ContainsFunc(w.identities(), func(id event) bool {
			return r.attrs["process.pid"].String() == fmt.Sprint(id.tgid) &&
				r.attrs["thread.id"].String() == fmt.Sprint(id.pid) && bytes.Equal(comm, id.comm)
		}) {
			t.Errorf("%q: process.pid %v, thread.id %v, comm %q; want %v", shorten(w.path),
				r.attrs["process.pid"], r.attrs["thread.id"], comm, w)
		}
		checks := [][2]string{
			{"user.id", fmt.Sprint(w.uid)},
			{"process.real_user.id", fmt.Sprint(w.uid)},
			{"process.real_group.id", fmt.Sprint(w.gid)},
			{"filewatcher.fsuid", fmt.Sprint(w.fsuid)},
			{"filewatcher.fsgid", fmt.Sprint(w.fsgid)},
			{"filewatcher.run_id", runID},
			{"filewatcher.open_flags", ""}, // present; its value is the kernel's
			{"filewatcher.kind", fwv1.KindName(w.kindOrOpen())},
			{"event.name", "filewatcher.file_created"},
		}
		for _, c := range checks {
			v, ok := r.attrs[c[0]]
			if !ok || (c[1] != "" && v.String() != c[1]) {
				t.Errorf("%q: %s = %v (present %v), want %q", shorten(w.path), c[0], v, ok, c[1])
			}
		}
		if !strings.Contains(string(w.path), "/") {
			continue // unresolved: the bare name
		}
		dir, name := path.Split(string(w.path))
		if d := r.attrs["file.directory"].String(); d != strings.TrimSuffix(dir, "/") && !(dir == "/" && d == "/") {
			if _, isBytes := r.attrs["filewatcher.file.path_bytes"]; !isBytes {
				t.Errorf("%q: file.directory %q, want %q", shorten(w.path), d, dir)
			}
		}
		if n := r.attrs["file.name"].String(); n != name {
			if _, isBytes := r.attrs["filewatcher.file.path_bytes"]; !isBytes {
				t.Errorf("%q: file.name %q, want %q", shorten(w.path), n, name)
			}
		}
		if r.resource["host.name"] != host || r.resource["service.name"] != "filewatcher-exporter" {
			t.Errorf("%q: resource %v, want host.name %q and service.name filewatcher-exporter", shorten(w.path), r.resource, host)
		}
	}
	under := 0
	for _, w := range s.want {
		if strings.HasPrefix(string(w.path), s.dir+"/") {
			under++
		}
	}
	for _, f := range s.setupFiles { // created before the exporter's stream: seen too
		if strings.HasPrefix(f, s.dir+"/") {
			under++
		}
	}
	if n := len(recordsUnder(records, s.dir)); n != under {
		t.Errorf("%d distinct paths under %s at the gateway, want %d (the non-creations must give none)", n, s.dir, under)
	}
	text := exp.waitFor(t, "the exporter's OTLP counters", func(text string) bool {
		return sumSamples(text, "filewatcher_exporter_otlp_events_exported_total") >= float64(len(s.want))
	})
	if d := sumSamples(text, "filewatcher_exporter_otlp_events_dropped_total"); d != 0 {
		t.Errorf("filewatcher_exporter_otlp_events_dropped_total = %v, want 0", d)
	}
	t.Logf("%d files created, each one log record at the gateway", len(s.want))
}

// testFleetRemoteWrite wants file_created_total in Prometheus through the
// Collectors' remote write, with the seed's labels, and the count of what
// was created in one directory.
func testFleetRemoteWrite(t *testing.T, g *guest, f *fleet) {
	startExporter(t, g.addr, "--otlp-endpoint", f.nodeURL, "--otlp-metrics-interval", "1000")
	dir := "/tmp/fleet-rw"
	g.sh(t, "rm -rf "+dir+" && mkdir -p "+dir+" && touch "+dir+"/riptides-demo && for i in 1 2 3; do touch "+dir+"/other; rm "+dir+"/other; done")
	host, _ := os.Hostname()
	q := fmt.Sprintf(`file_created_total{path=%q}`, dir)
	want := map[string]float64{"riptides-demo": 1, "other": 3}
	var last string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(time.Second) {
		got, series, err := promQuery(f.prometheus, q)
		if err == nil && fmt.Sprint(got) == fmt.Sprint(want) {
			for _, m := range series {
				if m["job"] != "filewatcher-exporter" || m["host_name"] != host {
					t.Errorf("series %v: want job filewatcher-exporter and host_name %q", m, host)
				}
			}
			t.Logf("%s = %v", q, got)
			return
		}
		last = fmt.Sprintf("%v %v", got, err)
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s, want %v", q, last, want)
		}
	}
}

// promQuery runs an instant query and returns the values by the name label.
func promQuery(base, q string) (map[string]float64, []map[string]string, error) {
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, nil, err
	}
	if r.Status != "success" {
		return nil, nil, fmt.Errorf("query %s: status %s", q, r.Status)
	}
	got := map[string]float64{}
	var series []map[string]string
	for _, s := range r.Data.Result {
		v, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		if err != nil {
			return nil, nil, err
		}
		got[s.Metric["name"]] = v
		series = append(series, s.Metric)
	}
	return got, series, nil
}

// waitRecords waits until the gateway has a record for every one of n files
// dir/<prefix><i>, and returns the count of records per path.
func waitRecords(t *testing.T, f *fleet, dir string, n int, timeout time.Duration) map[string]int {
	t.Helper()
	var got map[string]int
	for deadline := time.Now().Add(timeout); ; time.Sleep(250 * time.Millisecond) {
		got = recordsUnder(readLogRecords(t, f.logs), dir)
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
	}
}

// exactlyOnce fails unless every path of the n files has exactly one record.
func exactlyOnce(t *testing.T, got map[string]int, dir, prefix string, n int) {
	t.Helper()
	missing, dup := 0, 0
	for i := 0; i < n; i++ {
		switch c := got[fmt.Sprintf("%s/%s%d", dir, prefix, i)]; {
		case c == 0:
			missing++
		case c > 1:
			dup++
		}
	}
	if missing > 0 || dup > 0 || len(got) != n {
		t.Errorf("%s: %d files, %d paths at the gateway: %d missing, %d more than once", dir, n, len(got), missing, dup)
	}
}

// testFleetShortOutage stops the node Collector for 4 s while files are
// created: the exporter retries, and every event arrives exactly once.
func testFleetShortOutage(t *testing.T, g *guest, f *fleet, protocol, endpoint string) {
	exp := startExporter(t, g.addr, "--otlp-endpoint", endpoint, "--otlp-protocol", protocol,
		"--otlp-events", "true", "--otlp-metrics", "false")
	dir, n := "/tmp/fleet-short-"+strings.ReplaceAll(protocol, "/", "-"), 300
	f.node.stop(t)
	down := time.Now()
	storm(t, g, dir, n, "s")
	time.Sleep(time.Until(down.Add(4 * time.Second)))
	f.node.start(t)
	t.Logf("node Collector down %.1fs", time.Since(down).Seconds())
	exactlyOnce(t, waitRecords(t, f, dir, n, 2*time.Minute), dir, "s", n)
	text := exp.waitFor(t, "every event exported", func(text string) bool {
		return sumSamples(text, "filewatcher_exporter_otlp_events_exported_total") >= float64(n)
	})
	if d := sumSamples(text, "filewatcher_exporter_otlp_events_dropped_total"); d != 0 {
		t.Errorf("%v events dropped, want 0 (a 4 s outage is within the retry budget)", d)
	}
}

// testFleetLongOutage keeps the node Collector down longer than the
// exporter's retry budget (--otlp-events-retry-for 3s, each attempt within
// OTEL_EXPORTER_OTLP_TIMEOUT=1000): some events are lost, and every event is
// either at the gateway once or counted in export_failed.
func testFleetLongOutage(t *testing.T, g *guest, f *fleet) {
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
	exp := startExporter(t, g.addr, "--otlp-endpoint", f.nodeURL, "--otlp-events", "true", "--otlp-metrics", "false",
		"--otlp-events-retry-for", "3s")
	dir, n := "/tmp/fleet-long", 300
	f.node.stop(t)
	down := time.Now()
	storm(t, g, dir, n, "l")
	// Down until the exporter has given up on something and nothing waits.
	exp.waitFor(t, "events given up on", func(text string) bool {
		return sumSamples(text, "filewatcher_exporter_otlp_events_dropped_total") > 0 &&
			sumSamples(text, "filewatcher_exporter_otlp_events_queued") == 0
	})
	f.node.start(t)
	t.Logf("node Collector down %.1fs", time.Since(down).Seconds())
	after := "/tmp/fleet-long-after"
	storm(t, g, after, 50, "a")
	exactlyOnce(t, waitRecords(t, f, after, 50, 2*time.Minute), after, "a", 50)
	got := recordsUnder(readLogRecords(t, f.logs), dir)
	_, text, err := exp.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	lost := sumSamples(text, "filewatcher_exporter_otlp_events_dropped_total")
	for p, c := range got {
		if c != 1 {
			t.Errorf("%s: %d records, want 1", p, c)
		}
	}
	if len(got)+int(lost) != n {
		t.Errorf("%d files created while down: %d at the gateway + %v counted lost, want %d exactly", n, len(got), lost, n)
	}
	if !strings.Contains(text, `filewatcher_exporter_otlp_events_dropped_total{reason="export_failed"`) {
		t.Errorf("the loss is not counted as export_failed:\n%s", grepLines(text, "otlp"))
	}
	t.Logf("down past the budget: %d delivered, %v counted lost (export_failed)", len(got), lost)
}

// testFleetCollectorRestart restarts the node Collector while the gateway
// is down: its sending queue is on disk (file_storage), so what it had
// accepted reaches the gateway once that is back. Nothing is lost; a
// restart may send a batch twice (at least once).
func testFleetCollectorRestart(t *testing.T, g *guest, f *fleet) {
	exp := startExporter(t, g.addr, "--otlp-endpoint", f.nodeURL, "--otlp-events", "true", "--otlp-metrics", "false")
	dir, n := "/tmp/fleet-restart", 300
	f.gateway.stop(t)
	storm(t, g, dir, n, "r")
	exp.waitFor(t, "every event accepted by the node Collector", func(text string) bool {
		return sumSamples(text, "filewatcher_exporter_otlp_events_exported_total") >= float64(n)
	})
	f.node.stop(t)
	f.node.start(t)
	f.gateway.start(t)
	got := waitRecords(t, f, dir, n, 2*time.Minute)
	dup := 0
	for i := 0; i < n; i++ {
		c := got[fmt.Sprintf("%s/r%d", dir, i)]
		if c == 0 {
			t.Errorf("%s/r%d: lost across the node Collector's restart", dir, i)
		}
		dup += max(0, c-1)
	}
	t.Logf("node Collector restarted with %d events queued on disk: all delivered, %d twice", n, dup)
}

// testFleetExporterRestart kills the exporter while the node Collector is
// down (its queue in memory only) and starts another from the same state
// file: it resumes from the last position the event export had settled, so
// the events the loader's replay buffer still holds are exported, not
// skipped. The ones the dead exporter had exported since may come twice.
func testFleetExporterRestart(t *testing.T, g *guest, f *fleet) {
	state := filepath.Join(t.TempDir(), "position.json")
	flags := []string{"--otlp-endpoint", f.nodeURL, "--otlp-events", "true", "--otlp-metrics", "false", "--state-file", state}
	a := startExporter(t, g.addr, flags...)
	before, n1, n2 := "/tmp/fleet-exp-0", "/tmp/fleet-exp-1", "/tmp/fleet-exp-2"
	storm(t, g, before, 20, "b")
	waitRecords(t, f, before, 20, time.Minute)
	time.Sleep(1500 * time.Millisecond) // a settled export saves the position (at most once a second)
	f.node.stop(t)
	storm(t, g, n1, 200, "x")
	a.waitFor(t, "the storm queued", func(text string) bool {
		return sumSamples(text, "filewatcher_exporter_otlp_events_queued") >= 200
	})
	a.kill(t)
	storm(t, g, n2, 100, "y")
	f.node.start(t)
	startExporter(t, g.addr, flags...)
	for _, c := range []struct {
		dir, prefix string
		n           int
	}{{n1, "x", 200}, {n2, "y", 100}} {
		got := waitRecords(t, f, c.dir, c.n, 2*time.Minute)
		for i := 0; i < c.n; i++ {
			if got[fmt.Sprintf("%s/%s%d", c.dir, c.prefix, i)] == 0 {
				t.Errorf("%s/%s%d: never exported", c.dir, c.prefix, i)
			}
		}
	}
	if again := recordsUnder(readLogRecords(t, f.logs), before); len(again) != 20 {
		t.Errorf("%d paths of the files exported before the kill, want 20", len(again))
	}
}

// grepLines keeps the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
