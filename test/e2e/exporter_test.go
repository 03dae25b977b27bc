//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// exporterMain is the built TypeScript exporter, relative to the repository.
const exporterMain = "exporter/dist/main.js"

// testExporter runs filewatcher-exporter on the host against the guest's
// loader: the seed's metrics walkthrough, the exact series of a set of odd
// names, and the exporter side by side with filtered gRPC subscribers. One
// exporter serves the three, in this order: the walkthrough wants the fresh
// exporter's exposition.
func testExporter(t *testing.T, g *guest) {
	exp := startExporter(t, g.addr)
	t.Run("seed walkthrough", func(t *testing.T) { testSeedWalkthrough(t, g, exp) })
	t.Run("metrics", func(t *testing.T) { testExporterMetrics(t, g, exp) })
	t.Run("side by side", func(t *testing.T) { testSideBySide(t, g, exp) })
}

// testSeedWalkthrough is the seed's `touch riptides-demo; curl
// localhost:8080/metrics | grep file_created`, with the exporter on the host
// and the file in the guest: the counter's HELP and TYPE, and its one series
// (the grep also shows other metrics' HELP lines that mention it).
func testSeedWalkthrough(t *testing.T, g *guest, exp *exporter) {
	s := exp.scenario(g)
	g.run(t, 0, argv("mkdir", "-p", s.dir))
	s.create(t, s.dir+"/riptides-demo", "touch", vmagent.Request{Argv: vmagent.Args("touch", "riptides-demo"), Dir: []byte(s.dir)})
	head := "# HELP file_created_total Number of files created\n# TYPE file_created_total counter\n"
	series := fmt.Sprintf(`file_created_total{name="riptides-demo",path="%s",otel_scope_name="filewatcher"} 1`, s.dir)
	ok := func(out string) bool {
		var samples []string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "file_created_total") {
				samples = append(samples, l)
			}
		}
		return strings.HasPrefix(out, head) && slices.Equal(samples, []string{series})
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl: %v (the walkthrough runs the seed's command)", err)
	}
	script := fmt.Sprintf("%s -s %s/metrics | grep file_created", curl, exp.url)
	var got []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err = exec.Command("sh", "-c", script).Output()
		if (err == nil && ok(string(got))) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !ok(string(got)) {
		t.Fatalf("%s (%v):\n%s\nwant it to start with\n%s\nand %s its only file_created_total sample", script, err, got, head, series)
	}
	t.Logf("$ %s\n%s", script, got)
}

// testExporterMetrics creates odd names in the guest and wants their exact
// series in /metrics, an exposition promtool accepts, and no loss.
func testExporterMetrics(t *testing.T, g *guest, exp *exporter) {
	s := exp.scenario(g)
	d := s.dir
	g.run(t, 0, argv("mkdir", "-p", d+"/sub"))
	s.create(t, d+"/riptides-demo", "touch", argv("touch", d+"/riptides-demo"))
	// A quote, a backslash, a newline and a byte that is not UTF-8: the
	// exporter writes the byte as the text \xff, and the serializer escapes
	// the quote, both backslashes and the newline.
	odd := "odd\"quote\\back\nnl\xffend"
	s.create(t, d+"/"+odd, "touch", argv("touch", d+"/"+odd))
	s.create(t, d+"/utf8-é-日本", "touch", argv("touch", d+"/utf8-é-日本"))
	s.create(t, d+"/sub/nested", "touch", argv("touch", d+"/sub/nested"))
	// Created, removed, created again: two creations of one series.
	s.create(t, d+"/twice", "touch", argv("touch", d+"/twice"))
	g.run(t, 0, argv("rm", d+"/twice"))
	s.create(t, d+"/twice", "sh", argv("sh", "-c", `: > "$1"`, "sh", d+"/twice"))

	series := func(name, dir string, n int) string {
		return fmt.Sprintf(`file_created_total{name="%s",path="%s",otel_scope_name="filewatcher"} %d`, name, dir, n)
	}
	want := []string{
		series("riptides-demo", d, 1),
		series(`odd\"quote\\back\nnl\\xffend`, d, 1),
		series("utf8-é-日本", d, 1),
		series("nested", d+"/sub", 1),
		series("twice", d, 2),
	}
	text := exp.waitFor(t, "the expected series", func(text string) bool {
		return equalSets(seriesIn(text, d, d+"/sub"), want)
	})
	if got := seriesIn(text, d, d+"/sub"); !equalSets(got, want) {
		t.Errorf("file_created_total for %s:\n%s\nwant:\n%s", d, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	promtoolCheck(t, text)
	assertExporterHealthy(t, text, exp.created())
	// The loader's probe, from GetStatus (the exporter asks every 5 s).
	info := regexp.MustCompile(`(?m)^filewatcher_loader_info\{.*probe="kmod",probe_reason="requested",probe_function="` +
		openFunction(t, g.release) + `".*\} 1$`)
	exp.waitFor(t, "filewatcher_loader_info with the probe", func(text string) bool { return info.MatchString(text) })
}

// testSideBySide runs two filtered gRPC subscribers (a path prefix, a uid)
// and the exporter at once: each subscriber gets exactly its events and the
// exporter counts every file.
func testSideBySide(t *testing.T, g *guest, exp *exporter) {
	s := exp.scenario(g)
	in, out := s.dir, s.dir+"-out" // out shares in's prefix but not "in/"
	g.run(t, 0, argv("mkdir", "-p", in, out))
	g.run(t, 0, argv("chmod", "1777", in, out))
	const uid, gid = 1234, 4321
	byPrefix := subscribe(t, g.client, &fwv1.SubscribeRequest{Filter: &fwv1.Filter{PathPrefixes: [][]byte{[]byte(in + "/")}}})
	byUID := subscribe(t, g.client, &fwv1.SubscribeRequest{Filter: &fwv1.Filter{Uids: []uint32{uid}}})

	asUser := func(file string) vmagent.Request {
		return vmagent.Request{Argv: vmagent.Args("touch", file), UID: u32(uid), GID: u32(gid)}
	}
	s.create(t, in+"/root-a", "touch", argv("touch", in+"/root-a"))
	s.create(t, in+"/user-a", "touch", asUser(in+"/user-a"))
	s.create(t, out+"/user-out", "touch", asUser(out+"/user-out"))
	s.create(t, out+"/root-out", "touch", argv("touch", out+"/root-out"))
	s.create(t, in+"/root-b", "touch", argv("touch", in+"/root-b"))
	end := in + "/user-end" // the last one, for both subscribers
	s.create(t, end, "touch", asUser(end))

	var wantPrefix, wantUID []event
	inDir := 0
	for _, e := range s.want {
		if bytes.HasPrefix(e.path, []byte(in+"/")) {
			wantPrefix = append(wantPrefix, e)
			inDir++
		}
		if e.uid == uid {
			wantUID = append(wantUID, e)
		}
	}
	for _, c := range []struct {
		name         string
		sub          *subscription
		want         []event
		wantFiltered uint64
	}{
		{"path prefix", byPrefix, wantPrefix, uint64(len(s.want) - len(wantPrefix))},
		{fmt.Sprintf("uid %d", uid), byUID, wantUID, uint64(len(s.want) - len(wantUID))},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.sub.waitPath([]byte(end), time.Minute) < 0 {
				_, _, err := c.sub.snapshot()
				t.Fatalf("no event for %s within a minute (stream error: %v)", end, err)
			}
			events, gaps, err := c.sub.snapshot()
			assertEvents(t, summarize(events), c.want)
			if err != nil || len(gaps) > 0 {
				t.Errorf("stream error %v, gaps %v: want neither", err, gaps)
			}
			if got := c.sub.filteredCount(); got != c.wantFiltered {
				t.Errorf("filtered_count %d, want %d (the files created outside the filter)", got, c.wantFiltered)
			}
		})
	}
	t.Run("exporter", func(t *testing.T) {
		line := func(name, dir string) string {
			return fmt.Sprintf(`file_created_total{name="%s",path="%s",otel_scope_name="filewatcher"} 1`, name, dir)
		}
		wantIn := []string{line("root-a", in), line("user-a", in), line("root-b", in), line("user-end", in)}
		wantOut := []string{line("user-out", out), line("root-out", out)}
		text := exp.waitFor(t, "the side-by-side series", func(text string) bool {
			return equalSets(seriesIn(text, in), wantIn) && equalSets(seriesIn(text, out), wantOut)
		})
		if got := seriesIn(text, in); !equalSets(got, wantIn) {
			t.Errorf("file_created_total for %s:\n%s\nwant:\n%s", in, strings.Join(got, "\n"), strings.Join(wantIn, "\n"))
		}
		if got := seriesIn(text, out); !equalSets(got, wantOut) {
			t.Errorf("file_created_total for %s:\n%s\nwant:\n%s", out, strings.Join(got, "\n"), strings.Join(wantOut, "\n"))
		}
		if n := sumSeries(t, seriesIn(text, in)); n != inDir {
			t.Errorf("the exporter counts %d files in %s, %d were created", n, in, inDir)
		}
		promtoolCheck(t, text)
		assertExporterHealthy(t, text, exp.created())
	})
}

// exporter is filewatcher-exporter (node exporter/dist/main.js) running on
// the host.
type exporter struct {
	url  string // http://127.0.0.1:PORT
	cmd  *exec.Cmd
	log  *testutil.SyncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // cmd.Wait's result, once done
	// scenarios are those of the tests since it subscribed: every file
	// created in the guest since then.
	scenarios []*scenario
	killed    bool // by kill: its exit is expected
}

// kill kills the exporter with SIGKILL and waits for it to be gone.
func (e *exporter) kill(t *testing.T) {
	t.Helper()
	if err := e.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill the exporter: %v", err)
	}
	<-e.done
	e.killed = true
}

// scenario starts a scenario whose files the exporter counts.
func (e *exporter) scenario(g *guest) *scenario {
	s := newScenario(g)
	e.scenarios = append(e.scenarios, s)
	return s
}

// created is the number of files created in the guest since the exporter
// subscribed (the guest is quiet: the tests' files only).
func (e *exporter) created() int {
	n := 0
	for _, s := range e.scenarios {
		n += len(s.want)
	}
	return n
}

// startExporter starts the exporter against loader with flags, listening on
// a free port of 127.0.0.1, and waits until /readyz answers 200. It is
// stopped with SIGTERM when t ends (it must exit 0), and its log is shown if
// t failed.
func startExporter(t *testing.T, loader string, flags ...string) *exporter {
	t.Helper()
	main := filepath.Join(repoRoot, exporterMain)
	if _, err := os.Stat(main); err != nil {
		t.Fatalf("%s is missing: build the exporter first (npm run build, or make exporter): %v", exporterMain, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node: %v (the exporter needs Node.js >= 20.6)", err)
	}
	// Port 0: the exporter binds a free port and logs it in its "ready" line.
	args := append([]string{main, "--loader", loader, "--listen", "127.0.0.1:0", "--log-format", "json"}, flags...)
	cmd := exec.Command(node, args...)
	cmd.Dir = repoRoot
	e := &exporter{cmd: cmd, log: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = e.log, e.log
	// The exporter dies with the test binary, even on SIGKILL or a timeout panic.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the exporter: %v", err)
	}
	go func() { e.err = cmd.Wait(); close(e.done) }()
	t.Cleanup(func() { e.stop(t) })

	ready := regexp.MustCompile(`"msg":"ready","listen":"([^"]+)"`)
	for e.url == "" {
		if m := ready.FindStringSubmatch(e.log.String()); m != nil {
			e.url = "http://" + m[1]
			break
		}
		e.checkAlive(t, start)
		time.Sleep(50 * time.Millisecond)
	}
	for {
		status, body, err := e.get("/readyz")
		if err == nil && status == http.StatusOK {
			break
		}
		e.checkAlive(t, start)
		if time.Since(start) > time.Minute {
			t.Fatalf("exporter not ready after a minute: /readyz %d %q (%v)", status, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("exporter %s ready in %.1fs (%s)", e.url, time.Since(start).Seconds(), strings.Join(args[1:], " "))
	return e
}

// checkAlive fails the test if the exporter exited or took too long to start.
func (e *exporter) checkAlive(t *testing.T, start time.Time) {
	t.Helper()
	select {
	case <-e.done:
		t.Fatalf("the exporter exited: %v", e.err)
	default:
	}
	if time.Since(start) > time.Minute {
		t.Fatalf("the exporter did not report ready within a minute")
	}
}

// stop sends SIGTERM and wants a clean exit; SIGKILL after 10 s.
func (e *exporter) stop(t *testing.T) {
	if e.killed {
		return
	}
	select {
	case <-e.done:
		t.Errorf("the exporter exited before the test ended: %v", e.err)
	default:
		e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
			if e.err != nil {
				t.Errorf("exporter after SIGTERM: %v, want exit status 0", e.err)
			}
		case <-time.After(10 * time.Second):
			e.cmd.Process.Kill()
			<-e.done
			t.Errorf("the exporter ignored SIGTERM for 10s; killed")
		}
	}
	if t.Failed() {
		t.Logf("exporter log:\n%s", tail(e.log.Bytes(), 80))
	}
}

// get is an HTTP GET of the exporter.
func (e *exporter) get(path string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitFor scrapes /metrics until ok accepts the exposition, or 30 s pass;
// it returns the last exposition either way.
func (e *exporter) waitFor(t *testing.T, what string, ok func(text string) bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		status, text, err := e.get("/metrics")
		if err != nil || status != http.StatusOK {
			t.Fatalf("GET /metrics: %d %v", status, err)
		}
		if ok(text) {
			return text
		}
		if time.Now().After(deadline) {
			t.Errorf("no %s in /metrics within 30s", what)
			return text
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// seriesIn returns the file_created_total lines whose path label is one of
// dirs exactly, sorted.
func seriesIn(text string, dirs ...string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, "file_created_total{") {
			continue
		}
		for _, d := range dirs {
			if strings.Contains(l, `,path="`+d+`",`) {
				out = append(out, l)
			}
		}
	}
	slices.Sort(out)
	return out
}

func equalSets(got, want []string) bool {
	w := slices.Clone(want)
	slices.Sort(w)
	return slices.Equal(got, w)
}

// sumSeries adds up the values of exposition lines.
func sumSeries(t *testing.T, lines []string) int {
	t.Helper()
	n := 0
	for _, l := range lines {
		v, err := strconv.Atoi(l[strings.LastIndexByte(l, ' ')+1:])
		if err != nil {
			t.Fatalf("value of %q: %v", l, err)
		}
		n += v
	}
	return n
}

// sample is the value of the one line of metric (with any labels), or nil.
func sample(text, metric string) *float64 {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, metric+"{") || strings.HasPrefix(l, metric+" ") {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err == nil {
				return &v
			}
		}
	}
	return nil
}

// assertExporterHealthy checks the exporter's own metrics on a quiet guest:
// connected, never reconnected, nothing lost (its loss counters have a
// series only once they count something, so each line must be 0), nothing
// malformed, and exactly the events of the files created since it
// subscribed.
func assertExporterHealthy(t *testing.T, text string, created int) {
	t.Helper()
	for _, l := range strings.Split(text, "\n") {
		for _, m := range []string{"filewatcher_exporter_events_lost_total", "filewatcher_loader_events_lost_total",
			"filewatcher_exporter_malformed_total", "filewatcher_exporter_stalls_total", "filewatcher_exporter_reconnects_total",
			"filewatcher_exporter_loader_restarts_total", "filewatcher_exporter_overflow_events_total"} {
			if (strings.HasPrefix(l, m+"{") || strings.HasPrefix(l, m+" ")) && !strings.HasSuffix(l, " 0") {
				t.Errorf("want 0: %s", l)
			}
		}
	}
	for metric, want := range map[string]float64{
		"filewatcher_exporter_stream_connected":      1,
		"filewatcher_exporter_events_received_total": float64(created),
	} {
		if v := sample(text, metric); v == nil || *v != want {
			t.Errorf("%s %v, want %v", metric, deref(v), want)
		}
	}
}

func deref(v *float64) any {
	if v == nil {
		return "missing"
	}
	return *v
}

// promtoolCheck wants `promtool check metrics` to accept the exposition.
func promtoolCheck(t *testing.T, text string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool: %v (install Prometheus' promtool: make setup)", err)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("promtool: %v", err)
	}
	if err != nil {
		t.Errorf("promtool check metrics: %v\n%s\nexposition:\n%s", err, out, text)
	}
}
