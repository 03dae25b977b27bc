//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// Chaos: under a storm of creations in the guest, things go wrong — a
// subscriber stops reading, the loader cannot drain its ring, the exporter
// is stopped, the loader is killed — and afterwards what was created must
// equal what was delivered plus what was reported lost, exactly. Each case
// runs with the probe under test and a loader whose ring is small (so that
// it fills), whose stall timeout is short and that pins its probe
// (--pin-dir), so that a loader started after a kill -9 takes its run over.
//
// kill -9 of the exporter is covered where its state file lives: the
// systemd guest (test/deploy) and exporter/src/integration.test.ts.
const (
	chaosRingbuf      = 64 << 10
	chaosStallTimeout = 2 * time.Second
	chaosPinDir       = "/sys/fs/bpf/filewatcher"
)

func testChaos(t *testing.T, g *guest, probe string) {
	args := []string{"--probe", probe, "--ringbuf-size", strconv.Itoa(chaosRingbuf),
		"--stall-timeout", chaosStallTimeout.String(), "--pin-dir", chaosPinDir}
	g.startLoader(t, args...)
	t.Run("stalled subscriber", func(t *testing.T) { testChaosStalledSubscriber(t, g) })
	t.Run("full ring buffer", func(t *testing.T) { testChaosFullRing(t, g) })
	t.Run("exporter stopped", func(t *testing.T) { testChaosExporterStopped(t, g) })
	t.Run("exporter killed", func(t *testing.T) { testChaosExporterKilled(t, g) })
	t.Run("memory within bounds", func(t *testing.T) { testChaosMemory(t, g) })
	t.Run("loader killed", func(t *testing.T) { testChaosLoaderKilled(t, g, args) })
	// A deliberate stop (SIGTERM) unpins everything: the programs detach
	// and, with the module, stopLoader checks it was unloaded, though the
	// loader that stops is not the one that loaded it.
	g.stopLoader(t)
	if out := strings.TrimSpace(string(g.sh(t, "ls -A "+chaosPinDir+" 2>/dev/null || true"))); out != "" {
		t.Errorf("after the loader stopped, %s holds %q", chaosPinDir, out)
	}
}

// signalLoader sends the loader sig, after script (run in the guest's shell
// as the signal's prelude, e.g. a storm started in the background), and
// waits for it to be gone.
func signalLoader(t *testing.T, g *guest, sig, script string) {
	t.Helper()
	g.sh(t, script+"kill -"+sig+" $(pidof filewatcher-loader); wait")
	deadline := time.Now().Add(30 * time.Second)
	for strings.TrimSpace(string(g.sh(t, "pidof filewatcher-loader >/dev/null || echo gone"))) != "gone" {
		if time.Now().After(deadline) {
			t.Fatalf("the loader is still running 30 s after SIG%s", sig)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// restartIdle stops the idle loader with sig, creates m files dir/<prefix>i
// while none runs, and starts it again with args: it must take the run over
// (for the resumes-th time), and l must get every one of the files, with no
// gap.
func restartIdle(t *testing.T, g *guest, l *ledger, sig string, args []string, dir, prefix string, m int, resumes uint32) {
	t.Helper()
	signalLoader(t, g, sig, "")
	if out := string(g.sh(t, "ls "+chaosPinDir)); !strings.Contains(out, "checkpoint") {
		t.Fatalf("after SIG%s, %s holds %q; want the pins kept", sig, chaosPinDir, out)
	}
	g.sh(t, fmt.Sprintf(`i=0; while [ $i -lt %d ]; do : > %s/%s$i; i=$((i+1)); done`, m, dir, prefix))
	g.startLoader(t, args...)
	st := settledLastSequence(t, g)
	if st.RunId != l.runID || st.Resumes != resumes {
		t.Fatalf("after SIG%s: run %s, resumes %d; want run %s taken over %d times", sig, st.RunId, st.Resumes, l.runID, resumes)
	}
	gaps := maps.Clone(l.gaps)
	l.readUntil(t, st.LastSequence)
	for i := range m {
		if p := fmt.Sprintf("%s/%s%d", dir, prefix, i); l.paths[p] != 1 {
			t.Errorf("%s, created after SIG%s while no loader ran, delivered %d times; want once", p, sig, l.paths[p])
		}
	}
	if !maps.Equal(gaps, l.gaps) {
		t.Errorf("gaps %v after SIG%s while idle; want none more than %v", l.gaps, sig, gaps)
	}
}

// testChaosLoaderKilled: the loader is killed (SIGKILL) in the middle of a
// storm, which goes on with no loader running; a loader started with the
// same --pin-dir takes the run over (same run id, sequences continued), and
// a client resuming from the last sequence it saw accounts for every file:
// delivered once, or in a gap (the ring filled while no one read it; what
// the dead loader had read but not numbered, LOADER_RESTART; what it had
// numbered but not sent, REPLAY_EXPIRED). Then it is killed while idle and
// files are created while no loader runs: every one of them is delivered; the
// same after a handover (SIGUSR2), which leaves the pins.
// With the module the pinned program is on the tracepoint's raw form, which
// every kernel of the matrix can pin (5.10 included).
func testChaosLoaderKilled(t *testing.T, g *guest, args []string) {
	st := loaderStatus(t, g)
	if st.PinDir != chaosPinDir || st.PinDetail != "" || st.Resumes != 0 {
		t.Fatalf("GetStatus says pin_dir %q, pin_detail %q, resumes %d; want %s, none, 0", st.PinDir, st.PinDetail, st.Resumes, chaosPinDir)
	}
	// A second loader on the same pins refuses, and leaves them alone.
	second := g.run(t, 1, vmagent.Request{Argv: vmagent.Args(append([]string{"filewatcher-loader",
		"--module", "/filewatcher/filewatcher.ko", "--listen", "127.0.0.1:50099"}, args...)...), TimeoutMS: 60_000})
	if !strings.Contains(string(second.Stderr), "--pin-dir "+chaosPinDir+" is in use by another loader") {
		t.Errorf("a second loader on the same --pin-dir said:\n%s", second.Stderr)
	}
	l := newLedger(t, g.client)
	dir, n := "/tmp/chaos-killed", 5000
	signalLoader(t, g, "KILL", fmt.Sprintf(`rm -rf %[1]s && mkdir -p %[1]s && ( i=0; while [ $i -lt %[2]d ]; do : > %[1]s/k$i; i=$((i+1)); done ) & sleep 0.5; `, dir, n))
	g.startLoader(t, args...)
	after := settledLastSequence(t, g)
	if after.RunId != st.RunId || after.Resumes != 1 {
		t.Fatalf("after the kill: run %s, resumes %d; want run %s taken over once", after.RunId, after.Resumes, st.RunId)
	}
	l.readUntil(t, after.LastSequence)
	delivered, lost := l.reconcile(t, dir, n)
	for reason := range l.gaps {
		switch reason {
		case "GAP_REASON_RINGBUF_FULL", "GAP_REASON_LOADER_RESTART", "GAP_REASON_REPLAY_EXPIRED":
		default:
			t.Errorf("a gap of %s; want only a full ring, the restart or the replay buffer", reason)
		}
	}
	if lr := after.Loss.GetLoaderRestart(); lr != l.gaps["GAP_REASON_LOADER_RESTART"] {
		t.Errorf("loss.loader_restart %d; the client saw %d", lr, l.gaps["GAP_REASON_LOADER_RESTART"])
	}
	t.Logf("killed mid-storm: %d created, %d delivered, %d lost (%v)", n, delivered, lost, l.gaps)

	// Idle, then killed, then handed over (SIGUSR2, which leaves the
	// pins): what is created meanwhile waits in the ring.
	m := 200
	restartIdle(t, g, l, "KILL", args, dir, "d", m, 2)
	restartIdle(t, g, l, "USR2", args, dir, "h", m, 3)
	l.reconcile(t, dir, n+2*m)
}

// testChaosMemory: after the cases above, the replay buffer is within its
// byte budget and the loader's peak resident memory within the systemd
// unit's MemoryMax (1 GiB, which the default budgets fit).
func testChaosMemory(t *testing.T, g *guest) {
	st := loaderStatus(t, g)
	if st.ReplayBytes > 32<<20 || st.ReplayEvents > 65536 {
		t.Errorf("replay buffer holds %d events, %d bytes; over the default bounds", st.ReplayEvents, st.ReplayBytes)
	}
	out := strings.Fields(string(g.sh(t, "grep VmHWM /proc/$(pidof filewatcher-loader)/status")))
	if len(out) != 3 || out[2] != "kB" {
		t.Fatalf("VmHWM line %q", out)
	}
	kb, err := strconv.Atoi(out[1])
	if err != nil {
		t.Fatal(err)
	}
	if kb > 1<<20 {
		t.Errorf("the loader's peak RSS is %d MiB, over the unit's MemoryMax (1 GiB)", kb>>10)
	}
	t.Logf("loader peak RSS %d MiB; replay buffer %d events, %d kB", kb>>10, st.ReplayEvents, st.ReplayBytes>>10)
}

// storm creates n files named dir/<prefix><i> from one busybox shell (no
// fork per file), in a dir made afresh (an earlier run's files would be
// opened, not created).
func storm(t *testing.T, g *guest, dir string, n int, prefix string) {
	t.Helper()
	g.sh(t, fmt.Sprintf(`rm -rf %s && mkdir -p %s && i=0 && while [ $i -lt %d ]; do : > %s/%s$i; i=$((i+1)); done`, dir, dir, n, dir, prefix))
}

// settledLastSequence waits until the loader has numbered everything the
// storm left in the ring: its last sequence stops moving.
func settledLastSequence(t *testing.T, g *guest) *fwv1.GetStatusResponse {
	t.Helper()
	st := loaderStatus(t, g)
	deadline := time.Now().Add(time.Minute)
	for {
		time.Sleep(500 * time.Millisecond)
		next := loaderStatus(t, g)
		if next.LastSequence == st.LastSequence && next.Loss.GetRingbufFull() == st.Loss.GetRingbufFull() {
			return next
		}
		if time.Now().After(deadline) {
			t.Fatalf("the loader's last sequence still moves after a minute (%d)", next.LastSequence)
		}
		st = next
	}
}

// ledger is a careful client: it accounts for every sequence of one run
// once, as an event or a kernel gap. Meeting a SUBSCRIBER_OVERFLOW gap, or
// the end of its stream, it subscribes again resuming after the last
// sequence it accounted for, so that the replay buffer sends what it missed.
type ledger struct {
	client fwv1.EventServiceClient
	runID  string
	next   uint64            // every sequence below it is accounted for
	paths  map[string]int    // deliveries per path
	gaps   map[string]uint64 // kernel gaps by reason
	ends   []error           // how each stream ended
	stream grpc.ServerStreamingClient[fwv1.SubscribeResponse]
	cancel context.CancelFunc
}

// newLedger subscribes live and returns once the loader has registered the
// stream, so that every file created afterwards is accounted for.
func newLedger(t *testing.T, client fwv1.EventServiceClient) *ledger {
	t.Helper()
	l := &ledger{client: client, paths: map[string]int{}, gaps: map[string]uint64{}}
	l.subscribe(t, &fwv1.SubscribeRequest{})
	t.Cleanup(func() { l.cancel() })
	return l
}

func (l *ledger) subscribe(t *testing.T, req *fwv1.SubscribeRequest) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := l.client.Subscribe(ctx, req)
	var md metadata.MD
	if err == nil {
		md, err = stream.Header()
	}
	if err != nil {
		cancel()
		t.Fatalf("subscribe (resume after %d of run %q): %v", req.ResumeAfterSequence, req.ResumeRunId, err)
	}
	start, err := strconv.ParseUint(first(md, "filewatcher-start-sequence"), 10, 64)
	if err != nil {
		cancel()
		t.Fatalf("start sequence header: %v", err)
	}
	run := first(md, "filewatcher-run-id")
	if l.runID == "" {
		l.runID, l.next = run, start
	} else if run != l.runID || start != l.next {
		cancel()
		t.Fatalf("resumed at %d of run %s; want %d of run %s", start, run, l.next, l.runID)
	}
	l.stream, l.cancel = stream, cancel
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// readUntil reads, resuming as needed, until every sequence up to last is
// accounted for.
func (l *ledger) readUntil(t *testing.T, last uint64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for l.next <= last {
		if time.Now().After(deadline) {
			t.Fatalf("accounted for %d of %d after two minutes; streams ended with %v", l.next-1, last, l.ends)
		}
		if l.stream == nil {
			if len(l.ends) > 20 {
				t.Fatalf("resumed %d times: %v", len(l.ends), l.ends)
			}
			l.subscribe(t, &fwv1.SubscribeRequest{ResumeRunId: l.runID, ResumeAfterSequence: l.next - 1})
		}
		msg, err := l.stream.Recv()
		if err != nil {
			l.ends = append(l.ends, err)
			l.cancel()
			l.stream = nil
			continue
		}
		if msg.RunId != l.runID {
			t.Fatalf("a message of run %s in a stream of run %s", msg.RunId, l.runID)
		}
		if !l.add(t, msg) {
			l.cancel() // re-ask from the overflow
			l.stream = nil
		}
	}
}

// add accounts for msg in sequence order; false at a SUBSCRIBER_OVERFLOW
// gap, where the rest of the stream is not taken.
func (l *ledger) add(t *testing.T, msg *fwv1.SubscribeResponse) bool {
	t.Helper()
	evs, gaps := msg.Events, msg.Gaps
	for len(evs) > 0 || len(gaps) > 0 {
		if len(gaps) == 0 || len(evs) > 0 && evs[0].Sequence < gaps[0].FirstSequence {
			if evs[0].Sequence != l.next {
				t.Fatalf("event %d where %d was next", evs[0].Sequence, l.next)
			}
			l.paths[string(evs[0].Path)]++
			l.next++
			evs = evs[1:]
			continue
		}
		g := gaps[0]
		if g.FirstSequence != l.next || g.LastSequence < g.FirstSequence {
			t.Fatalf("gap %d-%d where %d was next", g.FirstSequence, g.LastSequence, l.next)
		}
		if g.Reason == fwv1.GapReason_GAP_REASON_SUBSCRIBER_OVERFLOW {
			return false
		}
		l.gaps[g.Reason.String()] += g.LastSequence - g.FirstSequence + 1
		l.next = g.LastSequence + 1
		gaps = gaps[1:]
	}
	return true
}

// reconcile checks that each of the n storm files under dir was delivered
// at most once and that deliveries plus kernel gaps are n: nothing else is
// created in the guest meanwhile, so every gap is a storm file.
func (l *ledger) reconcile(t *testing.T, dir string, n int) (delivered int, lost uint64) {
	t.Helper()
	for p, c := range l.paths {
		if !strings.HasPrefix(p, dir+"/") {
			t.Logf("not a storm file: %q", p)
			continue
		}
		if c != 1 {
			t.Errorf("%q delivered %d times", p, c)
		}
		delivered++
	}
	for _, g := range l.gaps {
		lost += g
	}
	if uint64(delivered)+lost != uint64(n) {
		t.Errorf("%d files created; %d delivered + %d reported lost (%v) = %d", n, delivered, lost, l.gaps, uint64(delivered)+lost)
	}
	return delivered, lost
}

// testChaosStalledSubscriber: a client whose flow-control window is full
// stops reading during a storm; the loader ends its stream after the stall
// timeout, saying why, and the client, resuming from the replay buffer,
// ends up with every creation once (or reported lost by the kernel).
func testChaosStalledSubscriber(t *testing.T, g *guest) {
	conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := loaderStatus(t, g).SubscribersStalled
	l := newLedger(t, fwv1.NewEventServiceClient(conn))
	dir, n := "/tmp/chaos-stall", 5000
	storm(t, g, dir, n, strings.Repeat("s", 200)) // ~1.3 MB of messages
	deadline := time.Now().Add(time.Minute)
	for {
		st := loaderStatus(t, g)
		for _, sub := range st.Subscribers {
			if sub.QueueBytes > sub.QueueCapacityBytes {
				t.Errorf("subscriber %d holds %d bytes, over its budget %d", sub.Id, sub.QueueBytes, sub.QueueCapacityBytes)
			}
		}
		if st.SubscribersStalled != before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the loader did not end the stalled stream within a minute (--stall-timeout %v)", chaosStallTimeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st := settledLastSequence(t, g)
	l.readUntil(t, st.LastSequence)
	stalled := false
	for _, err := range l.ends {
		stalled = stalled || status.Code(err) == codes.ResourceExhausted && strings.Contains(err.Error(), "subscriber stalled")
	}
	if !stalled {
		t.Errorf("streams ended with %v; want one RESOURCE_EXHAUSTED \"subscriber stalled\"", l.ends)
	}
	delivered, lost := l.reconcile(t, dir, n)
	t.Logf("%d created: %d delivered, %d lost (%v), after %d stream ends", n, delivered, lost, l.gaps, len(l.ends))
}

// testChaosFullRing: the loader cannot drain (SIGSTOP) while a storm fills
// its ring; once it runs again, the records the ring kept are delivered and
// the rest arrive as RINGBUF_FULL gaps, exactly the kernel's count.
func testChaosFullRing(t *testing.T, g *guest) {
	l := newLedger(t, g.client)
	before := loaderStatus(t, g).Loss.GetRingbufFull()
	dir, n := "/tmp/chaos-ring", 2000
	g.sh(t, "kill -STOP $(pidof filewatcher-loader)")
	storm(t, g, dir, n, strings.Repeat("r", 200)) // ~0.6 MB of records for a 64 KiB ring
	g.sh(t, "kill -CONT $(pidof filewatcher-loader)")
	st := settledLastSequence(t, g)
	l.readUntil(t, st.LastSequence)
	delivered, lost := l.reconcile(t, dir, n)
	if full := st.Loss.GetRingbufFull() - before; lost == 0 || l.gaps["GAP_REASON_RINGBUF_FULL"] != full || uint64(len(l.gaps)) != 1 {
		t.Errorf("gaps %v; want only RINGBUF_FULL, as many as the kernel counted (%d), and some", l.gaps, full)
	}
	// With the module, its count of events fired reconciles with what was
	// read and lost: no false UNEXPLAINED gap under a full ring.
	if u := st.Loss.GetUnexplained(); u != 0 {
		t.Errorf("loss.unexplained %d after a full ring; want 0", u)
	}
	t.Logf("%d created into a %d-byte ring: %d delivered, %d lost", n, chaosRingbuf, delivered, lost)
}

// testChaosExporterStopped: the exporter is stopped (SIGSTOP) for longer
// than the stall timeout during a storm, then continued; it resumes its
// stream and its metrics count every file once, or as lost.
func testChaosExporterStopped(t *testing.T, g *guest) {
	exp := startExporter(t, g.addr)
	dir, n := "/tmp/chaos-exporter", 1500
	if err := exp.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	storm(t, g, dir, n, strings.Repeat("e", 200))
	time.Sleep(2 * chaosStallTimeout)
	if err := exp.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var counted, lost int
	text := exp.waitFor(t, "every storm file counted or lost", func(text string) bool {
		counted = sumSeries(t, seriesIn(text, dir))
		lost = int(sumSamples(text, "filewatcher_exporter_events_lost_total"))
		return counted+lost >= n
	})
	if counted+lost != n {
		t.Errorf("%d files created; the exporter counted %d and lost %d", n, counted, lost)
	}
	t.Logf("%d created: the exporter counted %d, lost %d; reconnects %v", n, counted, lost,
		sumSamples(text, "filewatcher_exporter_reconnects_total"))
}

// testChaosExporterKilled: an exporter with a state file (--state-file) is
// killed (SIGKILL) in the middle of a storm, having counted part of it that
// no scrape ever showed; the next exporter with the same state file counts
// the whole storm from the loader's replay buffer, and nothing its
// predecessor's last scrape had shown.
func testChaosExporterKilled(t *testing.T, g *guest) {
	state := filepath.Join(t.TempDir(), "position.json")
	a := startExporter(t, g.addr, "--state-file", state)
	dir1, n1 := "/tmp/chaos-expkill-1", 1000
	storm(t, g, dir1, n1, strings.Repeat("a", 100))
	a.waitFor(t, "the first storm counted or lost", func(text string) bool {
		return sumSeries(t, seriesIn(text, dir1))+int(sumSamples(text, "filewatcher_exporter_events_lost_total")) >= n1
	})
	// One more scrape, with nothing arriving: the position it saves as it
	// starts is that of the counts it shows.
	_, text, err := a.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	c1, l1 := sumSeries(t, seriesIn(text, dir1)), int(sumSamples(text, "filewatcher_exporter_events_lost_total"))
	if c1+l1 != n1 {
		t.Fatalf("%d files created; the exporter's last scrape shows %d counted and %d lost", n1, c1, l1)
	}

	delivered := func() (n uint64) {
		for _, s := range loaderStatus(t, g).Subscribers {
			n += s.Delivered
		}
		return n
	}
	before := delivered()
	dir2, n2 := "/tmp/chaos-expkill-2", 3000
	stormDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		resp, err := g.agent.Exec(ctx, vmagent.Request{Argv: vmagent.Args("sh", "-c", fmt.Sprintf(
			`rm -rf %[1]s && mkdir -p %[1]s && i=0 && while [ $i -lt %[2]d ]; do : > %[1]s/b$i; i=$((i+1)); done`, dir2, n2))})
		if err == nil && resp.ExitCode != 0 {
			err = fmt.Errorf("exit %d: %s", resp.ExitCode, resp.Stderr)
		}
		stormDone <- err
	}()
	// Kill it once the loader has sent it part of the storm, which it
	// counts in memory only: not scraped (a scrape would save a position).
	for deadline := time.Now().Add(time.Minute); delivered() == before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the loader sent the exporter nothing of the second storm in a minute")
		}
	}
	a.kill(t)
	if err := <-stormDone; err != nil {
		t.Fatalf("the second storm: %v", err)
	}
	b := startExporter(t, g.addr, "--state-file", state)
	var c2, l2 int
	text = b.waitFor(t, "the second storm counted or lost by the next exporter", func(text string) bool {
		c2, l2 = sumSeries(t, seriesIn(text, dir2)), int(sumSamples(text, "filewatcher_exporter_events_lost_total"))
		return c2+l2 >= n2
	})
	if c2+l2 != n2 {
		t.Errorf("%d files created during the kill; the next exporter counted %d and lost %d", n2, c2, l2)
	}
	if again := sumSeries(t, seriesIn(text, dir1)); again != 0 {
		t.Errorf("the next exporter counted %d files of the first storm again; its predecessor's last scrape had shown them", again)
	}
	t.Logf("killed mid-storm: %d created, the next exporter counted %d, lost %d", n2, c2, l2)
}

// sumSamples adds every sample of metric, whatever its labels.
func sumSamples(text, metric string) float64 {
	sum := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}
