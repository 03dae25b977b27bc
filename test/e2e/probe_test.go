//go:build e2e

package e2e

import (
	"context"
	"os"
	"regexp"
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
		// The loader mounts tracefs where nothing has (minimal systems), and
		// unmounts it when it stops.
		g.sh(t, "umount "+tracing)
		g.startLoader(t, "--probe", "kmod")
		var runID string
		t.Run("events", func(t *testing.T) { runID = testEvents(t, g) })
		t.Run("ftrace", func(t *testing.T) { testFtrace(t, g) })
		t.Run("status", func(t *testing.T) { testStatus(t, g, runID, "kmod", "requested") })
		t.Run("exporter", func(t *testing.T) { testExporter(t, g) })
		g.stopLoader(t)
		if out := string(g.sh(t, "grep -c ' "+tracing+" tracefs ' /proc/mounts || true")); strings.TrimSpace(out) != "0" {
			t.Errorf("tracefs is still mounted after the loader that mounted it stopped")
		}
		g.sh(t, "mount -t tracefs tracefs "+tracing)
		t.Run("chaos", func(t *testing.T) { testChaos(t, g, "kmod") })
	})
	if !bpfProbeRuns(t, g) {
		t.Run("bpf refused", func(t *testing.T) {
			resp := g.run(t, 1, vmagent.Request{Argv: vmagent.Args("filewatcher-loader", "--listen", "127.0.0.1:50099", "--probe", "bpf"), TimeoutMS: 60_000})
			// 5.10 has no tracing programs on arm64 at all (the preflight
			// says so), 6.1 has them but cannot attach to kernel functions.
			want := regexp.MustCompile(`this kernel cannot run filewatcher: it has no BPF program type Tracing \(BPF trampolines: x86-64 since Linux 5\.5, arm64 since 6\.4\)` +
				`|the eBPF-only probe cannot run on this kernel: attach fexit ` + openFunction(t, g.release) + `: .* \(no BPF trampolines on kernel functions: x86-64 has them since Linux 5\.5, arm64 since 6\.4\)`)
			if !want.Match(resp.Stderr) {
				t.Errorf("the loader said:\n%s\nwant it to match %s", resp.Stderr, want)
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
		t.Run("chaos", func(t *testing.T) { testChaos(t, g, "bpf") })
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
// kernel: it needs BPF trampolines (fentry/fexit) on kernel functions, which
// arm64 has only since Linux 6.4 (ftrace direct calls; x86-64 since 5.5,
// older than any kernel tested).
func bpfProbeRuns(t *testing.T, g *guest) bool {
	t.Helper()
	if guestArch() != "arm64" {
		return true
	}
	v := strings.SplitN(g.release, ".", 3)
	major, err1 := strconv.Atoi(v[0])
	minor, err2 := strconv.Atoi(v[1])
	if err1 != nil || err2 != nil {
		t.Fatalf("kernel release %q: not major.minor.…", g.release)
	}
	return major > 6 || major == 6 && minor >= 4
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
	for _, k := range kernelList(t, "FILEWATCHER_E2E_LOCKDOWN_KERNELS", "E2E_LOCKDOWN_KERNELS") {
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

// TestAtomicOpen boots each of FILEWATCHER_E2E_9P_KERNELS (generic kernels:
// the cloud ones have no 9p) with a host directory shared over 9p, a file
// system that creates in ->atomic_open and sets FMODE_CREATED only after
// finish_open has run security_file_open: the eBPF-only probe must hold the
// event until the open returns (fexit_open). Each probe must report exactly
// the files created there, once each, and nothing for O_CREAT opens of files
// that exist.
func TestAtomicOpen(t *testing.T) {
	for _, k := range kernelList(t, "FILEWATCHER_E2E_9P_KERNELS", "E2E_9P_KERNELS") {
		t.Run(guestArch()+"/"+k, func(t *testing.T) {
			share := t.TempDir()
			g := bootGuest(t, k, "--no-loader", "--share", share+":fw9p")
			if out := string(g.sh(t, "grep ' /mnt/fw9p 9p ' /proc/mounts || true")); out == "" {
				t.Fatalf("no 9p mount at /mnt/fw9p")
			}
			probes := []string{"kmod", "bpf"}
			if !bpfProbeRuns(t, g) {
				probes = probes[:1]
			}
			for _, probe := range probes {
				t.Run(probe, func(t *testing.T) {
					g.startLoader(t, "--probe", probe)
					defer g.stopLoader(t)
					s := &scenario{g: g, dir: "/mnt/fw9p/" + probe}
					g.run(t, 0, argv("mkdir", "-p", s.dir+"/sub"))
					sub := subscribe(t, g.client, &fwv1.SubscribeRequest{Filter: &fwv1.Filter{PathPrefixes: [][]byte{[]byte(s.dir + "/")}}})
					syncPath := s.sync(t, sub)
					d := s.dir
					s.create(t, d+"/plain", "touch", argv("touch", d+"/plain"))
					s.create(t, d+"/sub/relative", "touch", vmagent.Request{Argv: vmagent.Args("touch", "relative"), Dir: []byte(d + "/sub")})
					s.create(t, d+"/excl-new", "fwopen", argv("fwopen", "-excl", d+"/excl-new"))
					s.create(t, d+"/redirect", "sh", argv("sh", "-c", `echo hi > "$1"`, "sh", d+"/redirect"))
					s.create(t, d+"/non-utf8-\xff\xfe", "touch", argv("touch", d+"/non-utf8-\xff\xfe"))
					s.none(t, 0, argv("touch", d+"/plain"))
					s.none(t, 0, argv("sh", "-c", `: >> "$1"`, "sh", d+"/plain"))
					s.none(t, 0, argv("fwopen", "-creat", d+"/plain"))
					s.none(t, 17, argv("fwopen", "-excl", d+"/plain"))
					end := d + "/end"
					s.create(t, end, "touch", argv("touch", end))
					if sub.waitPath([]byte(end), time.Minute) < 0 {
						t.Fatalf("no event for %s within a minute", end)
					}
					assertEvents(t, summarize(after(t, sub, syncPath)), s.want)
					// The files are the host's: the share is real.
					if _, err := os.Stat(share + "/" + probe + "/excl-new"); err != nil {
						t.Errorf("the host does not see the guest's file: %v", err)
					}
					assertKernelLogClean(t, g)
				})
			}
		})
	}
}
