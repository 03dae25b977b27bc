//go:build e2e

package e2e

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// testProbes runs the loader with each probe in one boot: the module
// (--probe kmod: events, the seed's ftrace line, status, the exporter), then
// the eBPF-only probe (--probe bpf: the same scripted events, exactly, and
// status), then --probe auto given a module built for another kernel, which
// must fall back to the eBPF-only probe and say why. Where the eBPF-only
// probe cannot run (bpfProbeRuns), --probe bpf must refuse and say why.
func testProbes(t *testing.T, g *guest) {
	t.Run("kmod", func(t *testing.T) {
		g.startLoader(t, "--probe", "kmod")
		var runID string
		t.Run("events", func(t *testing.T) { runID = testEvents(t, g) })
		t.Run("ftrace", func(t *testing.T) { testFtrace(t, g) })
		t.Run("status", func(t *testing.T) { testStatus(t, g, runID, "kmod", "requested") })
		t.Run("exporter", func(t *testing.T) { testExporter(t, g) })
		g.stopLoader(t)
	})
	if !bpfProbeRuns(t, g) {
		t.Run("bpf refused", func(t *testing.T) {
			resp := g.run(t, 1, vmagent.Request{Argv: vmagent.Args("filewatcher-loader", "--listen", "127.0.0.1:50099", "--probe", "bpf"), TimeoutMS: 60_000})
			want := "the eBPF-only probe cannot run on this kernel: attach fexit " + openFunction(t, g.release)
			if !strings.Contains(string(resp.Stderr), want) || !strings.Contains(string(resp.Stderr), "arm64 since 6.0") {
				t.Errorf("the loader said:\n%s\nwant %q and why", resp.Stderr, want)
			}
		})
		return
	}
	t.Run("bpf", func(t *testing.T) {
		g.startLoader(t, "--probe", "bpf")
		var runID string
		t.Run("events", func(t *testing.T) { runID = testEvents(t, g) })
		t.Run("status", func(t *testing.T) { testStatus(t, g, runID, "bpf", "requested") })
		t.Run("no module", func(t *testing.T) {
			if out := g.sh(t, "grep -c '^filewatcher ' /proc/modules || true"); strings.TrimSpace(string(out)) != "0" {
				t.Errorf("the eBPF-only probe inserted the module")
			}
			assertNoModuleCapability(t, g)
		})
		g.stopLoader(t)
	})
	t.Run("auto falls back from a module for another kernel", func(t *testing.T) {
		otherKO, otherRelease := otherKernelModule(t, g.kernel)
		g.writeFile(t, "/tmp/other-kernel.ko", otherKO)
		g.startLoader(t, "--module", "/tmp/other-kernel.ko")
		testFallback(t, g, "module_mismatch", "module is for "+otherRelease+", running "+g.release)
		g.stopLoader(t)
	})
}

// testFallback checks a loader that runs under --probe auto without the
// module: one log line says why, GetStatus says so, and a file created is
// reported.
func testFallback(t *testing.T, g *guest, reason, detail string) {
	t.Helper()
	log := string(g.sh(t, "cat /var/log/filewatcher-loader.log"))
	if n := strings.Count(log, `msg="not using the kernel module: using the eBPF-only probe" reason=`+reason); n != 1 {
		t.Errorf("the loader's log has %d fallback lines with reason=%s, want 1:\n%s", n, reason, log)
	}
	if !strings.Contains(log, detail) {
		t.Errorf("the loader's log does not say %q:\n%s", detail, log)
	}
	st := loaderStatus(t, g)
	if st.GetProbe() != "bpf" || st.GetProbeReason() != reason || !strings.Contains(st.GetProbeDetail(), detail) {
		t.Errorf("status probe %q, reason %q, detail %q: want bpf, %s, and %q in the detail",
			st.GetProbe(), st.GetProbeReason(), st.GetProbeDetail(), reason, detail)
	}
	s := newScenario(g)
	s.setup(t)
	sub := subscribe(t, g.client, &fwv1.SubscribeRequest{Filter: &fwv1.Filter{PathPrefixes: [][]byte{[]byte(s.dir + "/")}}})
	syncPath := s.sync(t, sub)
	end := s.dir + "/after-fallback"
	s.create(t, end, "touch", argv("touch", end))
	if sub.waitPath([]byte(end), time.Minute) < 0 {
		t.Fatalf("no event for %s within a minute", end)
	}
	assertEvents(t, summarize(after(t, sub, syncPath)), s.want)
	if out := g.sh(t, "grep -c '^filewatcher ' /proc/modules || true"); strings.TrimSpace(string(out)) != "0" {
		t.Errorf("the module is loaded after the fallback")
	}
	assertNoModuleCapability(t, g)
	assertKernelLogClean(t, g)
}

// assertNoModuleCapability: the loader running the eBPF-only probe has
// dropped CAP_SYS_MODULE (bit 16) from its effective, permitted and
// bounding sets.
func assertNoModuleCapability(t *testing.T, g *guest) {
	t.Helper()
	out := string(g.sh(t, `grep -E '^Cap(Eff|Prm|Bnd):' /proc/$(pidof filewatcher-loader)/status`))
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		v, err := strconv.ParseUint(f[len(f)-1], 16, 64)
		if err != nil {
			t.Fatalf("capabilities %q: %v", line, err)
		}
		if v&(1<<16) != 0 {
			t.Errorf("%s: CAP_SYS_MODULE still set", line)
		}
		if v&(1<<21) == 0 {
			t.Errorf("%s: CAP_SYS_ADMIN gone too: the drop took more than CAP_SYS_MODULE", line)
		}
	}
}

// bpfProbeRuns says whether the eBPF-only probe can run on the guest's
// kernel: it needs BPF trampolines (fentry/fexit), which arm64 has only
// since Linux 6.0 (x86-64 since 5.5, older than any kernel tested).
func bpfProbeRuns(t *testing.T, g *guest) bool {
	t.Helper()
	if guestArch() != "arm64" {
		return true
	}
	v := strings.SplitN(g.release, ".", 3)
	major, err := strconv.Atoi(v[0])
	if err != nil {
		t.Fatalf("kernel release %q: %v", g.release, err)
	}
	return major >= 6
}

// loaderStatus asks the guest's loader for its status.
func loaderStatus(t *testing.T, g *guest) *fwv1.GetStatusResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := g.client.GetStatus(ctx, &fwv1.GetStatusRequest{})
	if err != nil {
		t.Fatalf("GetStatus: %v", err)
	}
	return st
}

// stopLoader stops the loader started with startLoader (SIGTERM) and waits
// until it has exited, cleanly, and unloaded the module if it loaded it.
func (g *guest) stopLoader(t *testing.T) {
	t.Helper()
	g.sh(t, "kill -TERM $(pidof filewatcher-loader)")
	deadline := time.Now().Add(30 * time.Second)
	for strings.TrimSpace(string(g.sh(t, "pidof filewatcher-loader >/dev/null || echo gone"))) != "gone" {
		if time.Now().After(deadline) {
			t.Fatalf("the loader is still running 30 s after SIGTERM")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if log := string(g.sh(t, "tail -n 5 /var/log/filewatcher-loader.log")); strings.Contains(log, "level=ERROR") {
		t.Errorf("the loader's exit:\n%s", log)
	}
	if out := g.sh(t, "grep -c '^filewatcher ' /proc/modules || true"); strings.TrimSpace(string(out)) != "0" {
		t.Errorf("the module is still loaded after the loader stopped")
	}
	// The next loader's log starts empty.
	g.sh(t, ": > /var/log/filewatcher-loader.log")
}

// TestLockdown boots each of FILEWATCHER_E2E_LOCKDOWN_KERNELS with
// lockdown=integrity, what Secure Boot gives on Debian: under --probe auto
// the kernel refuses the module, the loader says so in one line and in
// GetStatus, and the eBPF-only probe delivers every event of the scripted
// operations, exactly.
func TestLockdown(t *testing.T) {
	ks := strings.Fields(os.Getenv("FILEWATCHER_E2E_LOCKDOWN_KERNELS"))
	if len(ks) == 0 {
		t.Fatal("set FILEWATCHER_E2E_LOCKDOWN_KERNELS to the kernels to boot locked down (make test-e2e sets it from E2E_LOCKDOWN_KERNELS)")
	}
	for _, k := range ks {
		t.Run(guestArch()+"/"+k, func(t *testing.T) {
			g := bootGuest(t, k, "--no-loader", "--kernel-args", "lockdown=integrity")
			if mode := string(g.sh(t, "cat /sys/kernel/security/lockdown")); !strings.Contains(mode, "[integrity]") {
				t.Fatalf("/sys/kernel/security/lockdown says %q, want [integrity]", mode)
			}
			if !bpfProbeRuns(t, g) {
				t.Fatalf("kernel %s cannot run the eBPF-only probe: not a kernel for this test", g.release)
			}
			g.startLoader(t)
			testFallback(t, g, "lockdown", "lockdown=integrity")
			var runID string
			t.Run("events", func(t *testing.T) { runID = testEvents(t, g) })
			t.Run("status", func(t *testing.T) {
				st := loaderStatus(t, g)
				if st.GetRunId() != runID || st.GetProbe() != "bpf" || st.GetProbeReason() != "lockdown" {
					t.Errorf("status: %v", st)
				}
			})
			g.stopLoader(t)
		})
	}
}
