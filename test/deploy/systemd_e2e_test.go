//go:build e2e

package deploy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSystemdGuest boots a Debian bookworm guest under systemd with both
// units installed by deploy/install.sh, and checks what a user relies on:
// both units active with the privileges they were given, a file created in
// the guest counted by the exporter, a real Prometheus scraping it, the
// loader restarted by systemd after kill -9 with the exporter reconnecting,
// and systemctl stop unloading the module.
func TestSystemdGuest(t *testing.T) {
	requireTools(t, "qemu-system-x86_64", "debootstrap", "mke2fs", "prometheus", "promtool", "make", "node", "systemctl")
	repo := repoRoot(t)
	work := t.TempDir()
	start := time.Now()
	step := func(what string) {
		t.Logf("[%5.1fs] %s", time.Since(start).Seconds(), what)
	}

	if _, err := os.Stat(filepath.Join(repo, "exporter", "dist", "main.js")); err != nil {
		t.Fatal("exporter/dist/main.js missing: run make exporter")
	}
	// FILEWATCHER_LOADER_BIN: test a loader built elsewhere (development).
	loader := os.Getenv("FILEWATCHER_LOADER_BIN")
	if loader == "" {
		// Type=notify needs the loader to call sd_notify(READY=1): without it
		// the unit would time out after TimeoutStartSec, a confusing failure.
		src, err := os.ReadFile(filepath.Join(repo, "loader-go", "cmd", "filewatcher-loader", "main.go"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(src), "sdnotify.Ready()") {
			t.Fatal("loader-go/cmd/filewatcher-loader/main.go does not call sdnotify.Ready(): " +
				"filewatcher-loader.service (Type=notify) cannot become active; wire loader-go/internal/sdnotify into main")
		}
		loader = filepath.Join(work, "filewatcher-loader")
		run(t, repo, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", loader, "./loader-go/cmd/filewatcher-loader")
	}
	agent := filepath.Join(work, "agent")
	run(t, repo, []string{"CGO_ENABLED=0"}, "go", "build", "-trimpath", "-o", agent, "./test/vm/agent")
	step("built loader and agent")

	guestDir := run(t, repo, nil, filepath.Join(repo, "test", "deploy", "rootfs.sh"), "--kernel", "6.1")
	step("guest image ready: " + guestDir)

	// The module, built for the guest kernel with its own toolchain.
	kdir := run(t, repo, nil, filepath.Join(repo, "test", "vm", "kernels.sh"), "fetch", "--kernel", "6.1")
	module := run(t, repo, nil, filepath.Join(repo, "test", "vm", "build-module.sh"),
		"--kernel-dir", kdir, "--out", filepath.Join(work, "kmod"))
	step("module built")

	payload := filepath.Join(work, "payload.img")
	run(t, repo, nil, filepath.Join(repo, "test", "deploy", "payload.sh"),
		"--out", payload, "--loader", loader, "--module", module, "--agent", agent)
	step("payload built (deploy/install.sh DESTDIR=...)")

	g := bootGuest(t, guestDir, payload, work)
	t.Cleanup(func() {
		if t.Failed() {
			// The journal of both units says why, in most failures.
			out, _, _ := g.sh(t, "journalctl --no-pager -b -u filewatcher-loader -u filewatcher-exporter | tail -n 80")
			t.Logf("guest journal (filewatcher units):\n%s", out)
			t.Logf("console tail:\n%s", g.consoleTail(40))
		}
	})
	g.waitAgent(t, 5*time.Minute)
	step("guest booted, agent answers")

	metricsURL := "http://" + g.exporterAddr + "/metrics"
	// metrics scrapes the exporter; an error (the exporter restarting) is
	// returned to the eventually loops that call it.
	metrics := func() ([]sample, error) {
		body, err := httpGet(metricsURL)
		if err != nil {
			return nil, fmt.Errorf("scrape exporter: %w", err)
		}
		return parseMetrics(body), nil
	}
	// lostTotal is filewatcher_exporter_events_lost_total, all reasons.
	lostTotal := func() (float64, error) {
		ms, err := metrics()
		if err != nil {
			return 0, err
		}
		var n float64
		for _, s := range ms {
			if s.name == "filewatcher_exporter_events_lost_total" {
				n += s.value
			}
		}
		return n, nil
	}
	// counted checks file_created_total{path=dir,name=name} == want.
	counted := func(dir, name string, want float64) error {
		ms, err := metrics()
		if err != nil {
			return err
		}
		v, found := find(ms, "file_created_total", map[string]string{"path": dir, "name": name})
		if !found || v != want {
			return fmt.Errorf("file_created_total{path=%q,name=%q}: found=%v value=%v, want %v", dir, name, found, v, want)
		}
		return nil
	}

	// subscribed waits until the exporter is active and subscribed to the
	// loader: files created before that are not the exporter's to count.
	subscribed := func(t *testing.T) {
		t.Helper()
		eventually(t, 2*time.Minute, time.Second, "exporter active and subscribed to the loader", func() error {
			if _, _, code := g.sh(t, "systemctl is-active -q filewatcher-exporter"); code != 0 {
				return fmt.Errorf("exporter not active")
			}
			ms, err := metrics()
			if err != nil {
				return err
			}
			v, found := find(ms, "filewatcher_exporter_stream_connected", nil)
			if !found || v != 1 {
				return fmt.Errorf("filewatcher_exporter_stream_connected found=%v value=%v", found, v)
			}
			return nil
		})
	}

	ok := t.Run("units active", func(t *testing.T) {
		// Type=notify: "active" means the loader reported READY=1.
		eventually(t, 3*time.Minute, time.Second, "filewatcher-loader and -exporter active", func() error {
			out, _, code := g.sh(t, "systemctl is-active filewatcher-loader.service filewatcher-exporter.service")
			if code != 0 {
				return fmt.Errorf("is-active: %s", strings.Join(strings.Fields(out), " "))
			}
			return nil
		})
		g.must(t, "test -d /sys/module/filewatcher")
		g.must(t, "getent group filewatcher")
		// The installed units are clean for the guest's own systemd too.
		if out := g.must(t, "systemd-analyze verify --man=no /usr/local/lib/systemd/system/filewatcher-loader.service /usr/local/lib/systemd/system/filewatcher-exporter.service 2>&1"); out != "" {
			t.Errorf("systemd-analyze verify in the guest:\n%s", out)
		}
		// Least privilege, as the kernel sees it.
		// CAP_SYS_MODULE, CAP_PERFMON, CAP_BPF, and CAP_SYS_ADMIN for the
		// Debian kernel's perf_event_paranoid=3 (see the unit).
		checkCaps(t, g, "filewatcher-loader", capsDefault, "SYS_MODULE, PERFMON, BPF, SYS_ADMIN", "Eff")
		checkCaps(t, g, "filewatcher-exporter", 0, "none", "Eff")
		ids := g.must(t, `ps -o uid=,gid=,supgrp= -p $(systemctl show -P MainPID filewatcher-exporter)`)
		if f := strings.Fields(ids); len(f) < 3 || f[0] == "0" || !strings.Contains(f[2], "filewatcher") {
			t.Errorf("exporter uid/gid/groups = %q, want a non-root uid in group filewatcher", ids)
		}
		sock := g.must(t, "stat -c '%a %U %G' /run/filewatcher/loader.sock")
		if sock != "660 root filewatcher" {
			t.Errorf("loader socket: %q, want 660 root filewatcher", sock)
		}
		eventually(t, time.Minute, time.Second, "exporter /readyz", func() error {
			_, err := httpGet("http://" + g.exporterAddr + "/readyz")
			return err
		})
		subscribed(t)
		step("units active")
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("file created in the guest is counted", func(t *testing.T) {
		g.must(t, "mkdir -p /srv/fw-e2e && touch /srv/fw-e2e/riptides-demo")
		eventually(t, time.Minute, time.Second, "riptides-demo counted", func() error {
			return counted("/srv/fw-e2e", "riptides-demo", 1)
		})
		step("file counted")
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("a local user outside the allowlists reads no paths", func(t *testing.T) {
		testLocalUser(t, g, subscribed)
		step("local user refused: socket, guard, protected /metrics")
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("prometheus", func(t *testing.T) {
		testPrometheus(t, repo, g, subscribed)
		step("prometheus e2e")
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("kill -9 of the loader: systemd restarts it, the new loader takes the run over", func(t *testing.T) {
		subscribed(t)
		loaderPID := g.must(t, "systemctl show -P MainPID filewatcher-loader")
		restarts := g.must(t, "systemctl show -P NRestarts filewatcher-loader")
		exporterPID := g.must(t, "systemctl show -P MainPID filewatcher-exporter")
		if out := g.must(t, "ls /sys/fs/bpf/filewatcher"); !strings.Contains(out, "checkpoint") {
			t.Fatalf("the unit's loader pinned nothing in /sys/fs/bpf/filewatcher: %q", out)
		}
		// Created while no loader runs: the pinned probe puts it in the
		// ring, and the next loader delivers it.
		g.must(t, "kill -9 "+loaderPID+" && touch /srv/fw-e2e/while-loader-down")
		eventually(t, 2*time.Minute, time.Second, "loader restarted by systemd", func() error {
			out, _, _ := g.sh(t, "systemctl show -P ActiveState filewatcher-loader; systemctl show -P MainPID filewatcher-loader; systemctl show -P NRestarts filewatcher-loader")
			f := strings.Fields(out)
			n, _ := strconv.Atoi(restarts)
			if len(f) != 3 || f[0] != "active" || f[1] == loaderPID || f[1] == "0" || f[2] != strconv.Itoa(n+1) {
				return fmt.Errorf("ActiveState, MainPID, NRestarts = %q (before: pid %s, %s restarts)", f, loaderPID, restarts)
			}
			return nil
		})
		// The unit's ExecStopPost (module-cleanup) left the module to the
		// pinned run, and the new loader took the run over.
		journal := g.must(t, "journalctl --no-pager -b -u filewatcher-loader -o cat")
		if !strings.Contains(journal, "leaving filewatcher loaded for the loader that takes it over") ||
			strings.Contains(journal, "module-cleanup: filewatcher unloaded") {
			t.Errorf("module-cleanup did not leave the module to the pinned run")
		}
		if !strings.Contains(journal, "took over the run an earlier loader left pinned") {
			t.Errorf("the new loader did not take the run over")
		}
		// The exporter is not restarted with the loader (Wants=, not
		// BindsTo=): it resumes its stream in the same run.
		subscribed(t)
		if pid := g.must(t, "systemctl show -P MainPID filewatcher-exporter"); pid != exporterPID {
			t.Errorf("the exporter was restarted with the loader (MainPID %s -> %s)", exporterPID, pid)
		}
		eventually(t, time.Minute, time.Second, "the exporter shows the run pinned and taken over once", func() error {
			ms, err := metrics()
			if err != nil {
				return err
			}
			pinned, _ := find(ms, "filewatcher_loader_pinned", nil)
			resumes, _ := find(ms, "filewatcher_loader_run_resumes", nil)
			if pinned != 1 || resumes != 1 {
				return fmt.Errorf("filewatcher_loader_pinned %v, filewatcher_loader_run_resumes %v; want 1, 1", pinned, resumes)
			}
			return nil
		})
		eventually(t, time.Minute, time.Second, "file created while no loader ran is counted", func() error {
			return counted("/srv/fw-e2e", "while-loader-down", 1)
		})
		g.must(t, "touch /srv/fw-e2e/after-restart")
		eventually(t, time.Minute, time.Second, "file created after the restart is counted", func() error {
			return counted("/srv/fw-e2e", "after-restart", 1)
		})
		step("kill -9: restarted, run taken over, reconnected")
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("kill -9 of the exporter: the next one counts what was created meanwhile", func(t *testing.T) {
		subscribed(t)
		g.must(t, "touch /srv/fw-e2e/before-exporter-kill")
		eventually(t, time.Minute, time.Second, "before-exporter-kill counted", func() error {
			return counted("/srv/fw-e2e", "before-exporter-kill", 1)
		})
		// One more scrape: it saves the position as of its start, after
		// the event (StateDirectory= and --state-file from the unit).
		if _, err := metrics(); err != nil {
			t.Fatal(err)
		}
		saved := g.must(t, "cat /var/lib/filewatcher-exporter/position.json")
		if !strings.Contains(saved, `"run_id":"`) || strings.Contains(saved, `"last_sequence":0,`) {
			t.Fatalf("saved position = %s", saved)
		}
		exporterPID := g.must(t, "systemctl show -P MainPID filewatcher-exporter")
		// Created while no exporter runs (systemd restarts it after
		// RestartSec=2): only the saved position gets it counted.
		g.must(t, "kill -9 "+exporterPID+" && touch /srv/fw-e2e/while-exporter-down")
		eventually(t, time.Minute, time.Second, "exporter restarted by systemd", func() error {
			if pid := g.must(t, "systemctl show -P MainPID filewatcher-exporter"); pid == exporterPID || pid == "0" {
				return fmt.Errorf("exporter MainPID %s", pid)
			}
			return nil
		})
		subscribed(t)
		eventually(t, time.Minute, time.Second, "while-exporter-down counted by the new exporter", func() error {
			return counted("/srv/fw-e2e", "while-exporter-down", 1)
		})
		// What the old process counted and Prometheus saw is not counted again.
		ms, err := metrics()
		if err != nil {
			t.Fatal(err)
		}
		if v, found := find(ms, "file_created_total", map[string]string{"path": "/srv/fw-e2e", "name": "before-exporter-kill"}); found {
			t.Errorf("before-exporter-kill counted again by the new exporter: %v", v)
		}
		step("kill -9 of the exporter: resumed from the saved position")
	})
	if !ok {
		t.FailNow()
	}

	ok = t.Run("restart with the least-privilege drop-in: a handover, no CAP_SYS_ADMIN", func(t *testing.T) {
		subscribed(t)
		exporterPID := g.must(t, "systemctl show -P MainPID filewatcher-exporter")
		lostBefore, err := lostTotal()
		if err != nil {
			t.Fatal(err)
		}
		// The drop-in is for kernels at the upstream perf_event_paranoid
		// default (2); Debian's is 3.
		// systemctl restart hands the run over (RestartKillSignal=SIGUSR2)
		// in the middle of a storm: every file of it is counted once.
		const storm = 2000
		g.must(t, fmt.Sprintf(`set -e
sysctl -q -w kernel.perf_event_paranoid=2
mkdir -p /etc/systemd/system/filewatcher-loader.service.d
cp /usr/local/share/doc/filewatcher/systemd/least-privilege.conf /etc/systemd/system/filewatcher-loader.service.d/
systemctl daemon-reload
mkdir -p /srv/fw-e2e/storm
(i=0; while [ $i -lt %d ]; do : > /srv/fw-e2e/storm/s$i; i=$((i+1)); done) &
sleep 0.3
systemctl restart filewatcher-loader.service
wait`, storm))
		if n := g.must(t, "journalctl --no-pager -b -u filewatcher-loader -o cat | grep -c 'handing over: the probe stays attached' || true"); n == "0" {
			t.Errorf("systemctl restart did not hand the run over")
		}
		// restart returned: the loader is ready again (Type=notify).
		checkCaps(t, g, "filewatcher-loader", capsLeast, "with least-privilege.conf: SYS_MODULE, PERFMON, BPF", "Eff")
		// The exporter stayed (Wants=) and resumed in the same run.
		subscribed(t)
		if pid := g.must(t, "systemctl show -P MainPID filewatcher-exporter"); pid != exporterPID {
			t.Errorf("the exporter was restarted with the loader (MainPID %s -> %s)", exporterPID, pid)
		}
		g.must(t, "touch /srv/fw-e2e/least-privilege")
		eventually(t, 2*time.Minute, time.Second, "file created under the least-privilege loader is counted", func() error {
			return counted("/srv/fw-e2e", "least-privilege", 1)
		})
		// A handover loses nothing: the old loader sent the exporter all it
		// numbered, the new one what the ring kept.
		var stormCounted float64
		eventually(t, time.Minute, time.Second, "every file of the storm counted or lost", func() error {
			ms, err := metrics()
			if err != nil {
				return err
			}
			stormCounted = 0
			for _, s := range ms {
				if s.name == "file_created_total" && s.labels["path"] == "/srv/fw-e2e/storm" {
					stormCounted += s.value
				}
			}
			lost, err := lostTotal()
			if err != nil {
				return err
			}
			if stormCounted+lost-lostBefore < storm {
				return fmt.Errorf("%v of the storm's %d files counted, %v lost", stormCounted, storm, lost-lostBefore)
			}
			return nil
		})
		if lost, err := lostTotal(); err != nil || lost != lostBefore || stormCounted != storm {
			t.Errorf("across a handover mid-storm: %v of %d files counted, the exporter's losses went from %v to %v (%v)",
				stormCounted, storm, lostBefore, lost, err)
		}
		step(fmt.Sprintf("handover mid-storm: %v of %d files counted once, nothing lost", stormCounted, storm))
		step("least-privilege restart")
	})
	if !ok {
		t.FailNow()
	}

	t.Run("systemctl stop unloads the module; start brings the stream back", func(t *testing.T) {
		g.must(t, "systemctl stop filewatcher-loader.service")
		// Wants=: the exporter stays, and says the stream is gone.
		states := strings.Join(strings.Fields(g.must(t, "systemctl show -P ActiveState filewatcher-loader filewatcher-exporter")), " ")
		if states != "inactive active" {
			t.Errorf("after stop: ActiveState loader, exporter = %q, want inactive active", states)
		}
		eventually(t, time.Minute, time.Second, "the exporter reports the stream disconnected", func() error {
			ms, err := metrics()
			if err != nil {
				return err
			}
			if v, found := find(ms, "filewatcher_exporter_stream_connected", nil); !found || v != 0 {
				return fmt.Errorf("filewatcher_exporter_stream_connected found=%v value=%v", found, v)
			}
			return nil
		})
		if _, _, code := g.sh(t, "test -e /sys/module/filewatcher"); code == 0 {
			t.Errorf("/sys/module/filewatcher still exists after systemctl stop")
		}
		// A deliberate stop unpins.
		if out := g.must(t, "ls -A /sys/fs/bpf/filewatcher 2>/dev/null || true"); out != "" {
			t.Errorf("/sys/fs/bpf/filewatcher holds %q after systemctl stop", out)
		}
		// The socket's runtime directory went with the unit.
		if _, _, code := g.sh(t, "test -e /run/filewatcher"); code == 0 {
			t.Errorf("/run/filewatcher still exists after systemctl stop")
		}
		step("stopped: module unloaded")
		g.must(t, "systemctl start filewatcher-loader.service")
		eventually(t, 2*time.Minute, time.Second, "both active again", func() error {
			out, _, code := g.sh(t, "systemctl is-active filewatcher-loader filewatcher-exporter")
			if code != 0 {
				return fmt.Errorf("is-active: %s", strings.Join(strings.Fields(out), " "))
			}
			return nil
		})
		g.must(t, "test -d /sys/module/filewatcher")
		subscribed(t)
		step("started again")
	})

	// Last: lockdown cannot be lifted without a reboot.
	loaderInfo := func(probe, reason string) error {
		ms, err := metrics()
		if err != nil {
			return err
		}
		if _, found := find(ms, "filewatcher_loader_info", map[string]string{"probe": probe, "probe_reason": reason}); !found {
			return fmt.Errorf("no filewatcher_loader_info{probe=%q,probe_reason=%q}", probe, reason)
		}
		return nil
	}
	capsWithout := capsLeast &^ (uint64(1) << capSysModule) // least-privilege.conf is still in place
	ok = t.Run("lockdown: auto falls back to the eBPF-only probe and drops CAP_SYS_MODULE", func(t *testing.T) {
		// Stop and start, as across the reboot that lockdown comes with in
		// real life: a restart would hand the module's pinned run over.
		g.must(t, "systemctl stop filewatcher-loader.service && echo integrity > /sys/kernel/security/lockdown && systemctl start filewatcher-loader.service")
		why := g.must(t, "journalctl --no-pager -b -u filewatcher-loader -o cat | grep 'not using the kernel module' | tail -n 1")
		if !strings.Contains(why, "reason=lockdown") || !strings.Contains(why, "lockdown=integrity") {
			t.Errorf("the loader's fallback line: %q, want reason=lockdown and lockdown=integrity", why)
		}
		if _, _, code := g.sh(t, "test -e /sys/module/filewatcher"); code == 0 {
			t.Errorf("/sys/module/filewatcher exists under lockdown")
		}
		// Gone from what the loader holds; the unit's bounding set keeps it
		// (changing that needs CAP_SETPCAP; NoNewPrivileges= stops an exec
		// from gaining it back).
		checkCaps(t, g, "filewatcher-loader", capsWithout, "PERFMON, BPF: no SYS_MODULE", "Eff", "Prm")
		subscribed(t)
		eventually(t, time.Minute, time.Second, "the exporter shows the probe", func() error { return loaderInfo("bpf", "lockdown") })
		g.must(t, "touch /srv/fw-e2e/locked-down")
		eventually(t, time.Minute, time.Second, "file created under lockdown is counted", func() error {
			return counted("/srv/fw-e2e", "locked-down", 1)
		})
		step("lockdown: eBPF-only probe")
	})
	if !ok {
		t.FailNow()
	}

	t.Run("bpf-probe.conf: the eBPF-only probe by the unit's rule", func(t *testing.T) {
		// Debian's perf_event_paranoid again: the eBPF-only probe opens no
		// perf event, so it needs no CAP_SYS_ADMIN (least-privilege.conf
		// stays in place).
		g.must(t, `set -e
sysctl -q -w kernel.perf_event_paranoid=3
cp /usr/local/share/doc/filewatcher/systemd/bpf-probe.conf /etc/systemd/system/filewatcher-loader.service.d/
systemctl daemon-reload
systemctl restart filewatcher-loader.service`)
		// The unit's rule: not even in the bounding set.
		checkCaps(t, g, "filewatcher-loader", capsWithout, "bpf-probe.conf: PERFMON, BPF", "Eff", "Prm", "Bnd")
		if n := g.must(t, "journalctl --no-pager -b -u filewatcher-loader -o cat _PID=$(systemctl show -P MainPID filewatcher-loader) | grep -c 'not using the kernel module' || true"); n != "0" {
			t.Errorf("the loader under --probe bpf logged a fallback")
		}
		subscribed(t)
		eventually(t, time.Minute, time.Second, "the exporter shows the probe", func() error { return loaderInfo("bpf", "requested") })
		g.must(t, "touch /srv/fw-e2e/bpf-probe")
		eventually(t, time.Minute, time.Second, "file created under bpf-probe.conf is counted", func() error {
			return counted("/srv/fw-e2e", "bpf-probe", 1)
		})
		step("bpf-probe.conf")
	})
}

// checkCaps checks that each of the capability sets named (Eff, Prm, Bnd) of
// unit's main process is exactly want, as the kernel shows them in
// /proc/PID/status; what describes want for the message.
func checkCaps(t *testing.T, g *guest, unit string, want uint64, what string, sets ...string) {
	t.Helper()
	for _, set := range sets {
		v := g.must(t, fmt.Sprintf(`grep ^Cap%s: /proc/$(systemctl show -P MainPID %s)/status | cut -f2`, set, unit))
		if got, err := strconv.ParseUint(v, 16, 64); err != nil || got != want {
			t.Errorf("%s Cap%s = %s, want %016x (%s)", unit, set, v, want, what)
		}
	}
}

// Loader capabilities (bit numbers from linux/capability.h).
const (
	capSysModule = 16
	capSysAdmin  = 21
	capPerfmon   = 38
	capBPF       = 39

	capsLeast   = uint64(1)<<capSysModule | uint64(1)<<capPerfmon | uint64(1)<<capBPF
	capsDefault = capsLeast | uint64(1)<<capSysAdmin
)

// testPrometheus runs a real Prometheus (Debian's package) on loopback with
// the example configuration, pointed at the guest's exporter, and checks the
// file_created_total series it stores.
func testPrometheus(t *testing.T, repo string, g *guest, subscribed func(*testing.T)) {
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(repo, "deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// The example, with this run's target and a fast scrape so the test is quick.
	text := string(cfg)
	for _, r := range [][2]string{
		{"['localhost:8080']", "['" + g.exporterAddr + "']"},
		{"scrape_interval: 15s", "scrape_interval: 1s"},
		{"evaluation_interval: 15s", "evaluation_interval: 1s"},
	} {
		if !strings.Contains(text, r[0]) {
			t.Fatalf("deploy/prometheus/prometheus.yml no longer contains %q: update this test", r[0])
		}
		text = strings.Replace(text, r[0], r[1], 1)
	}
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(filepath.Join(repo, "deploy", "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, dir, nil, "promtool", "check", "config", "prometheus.yml")

	port := freePorts(t, 1)[0]
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("prometheus",
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = logf, logf
	done := startProcess(t, cmd)
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", b)
		}
	}()
	eventually(t, time.Minute, 500*time.Millisecond, "prometheus ready", func() error {
		select {
		case <-done:
			t.Fatal("prometheus exited")
		default:
		}
		_, err := httpGet(base + "/-/ready")
		return err
	})

	// Files: riptides-demo created three times (created, removed, created
	// again: every creation counts), other once, in a directory of its own.
	g.must(t, `set -e; d=/srv/fw-prom; mkdir -p $d
for i in 1 2 3; do touch $d/riptides-demo; rm $d/riptides-demo; done
touch $d/other`)
	want := map[string]float64{"riptides-demo": 3, "other": 1}

	query := func(q string) ([]promSample, error) {
		body, err := httpGet(base + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, fmt.Errorf("%v: %s", err, body)
		}
		var r promResponse
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			return nil, fmt.Errorf("decode %s: %w", body, err)
		}
		if r.Status != "success" {
			return nil, fmt.Errorf("query %s: %s", q, body)
		}
		return r.Data.Result, nil
	}
	eventually(t, 90*time.Second, time.Second, "Prometheus stores file_created_total for /srv/fw-prom", func() error {
		res, err := query(`file_created_total{job="filewatcher", path="/srv/fw-prom"}`)
		if err != nil {
			return err
		}
		got := map[string]float64{}
		for _, s := range res {
			v, err := strconv.ParseFloat(s.Value[1].(string), 64)
			if err != nil {
				return err
			}
			if s.Metric["instance"] != g.exporterAddr {
				return fmt.Errorf("series %v: instance %q, want %q", s.Metric, s.Metric["instance"], g.exporterAddr)
			}
			got[s.Metric["name"]] = v
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("got %v, want %v", got, want)
		}
		return nil
	})

	// The target is healthy and the example rules loaded and evaluate.
	res, err := query(`up{job="filewatcher"}`)
	if err != nil || len(res) != 1 || res[0].Value[1] != "1" {
		t.Errorf("up{job=filewatcher} = %v (%v), want 1", res, err)
	}
	body, err := httpGet(base + "/api/v1/rules")
	if err != nil {
		t.Fatalf("rules API: %v", err)
	}
	var rr struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &rr); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, grp := range rr.Data.Groups {
		for _, r := range grp.Rules {
			n++
			if r.Health == "err" {
				t.Errorf("rule %s: %s", r.Name, r.LastError)
			}
		}
	}
	if n < 4 {
		t.Errorf("Prometheus loaded %d rules from rules.yml, want at least 4", n)
	}

	// The exporter's exposition passes promtool's linter.
	text, err = httpGet("http://" + g.exporterAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = strings.NewReader(text)
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	t.Run("rollup rules and the service label", func(t *testing.T) {
		testLabels(t, g, query, subscribed)
	})
}

// testLabels turns on a rollup rule and the service label in the guest's
// env file, restarts the exporter, creates files from a systemd unit and
// from cgroups laid out as container runtimes lay them out, and checks what
// Prometheus stores. The defaults are restored at the end for the tests
// that follow.
func testLabels(t *testing.T, g *guest, query func(string) ([]promSample, error), subscribed func(*testing.T)) {
	const (
		dockerID = "d0c0e7000000000000000000000000000000000000000000000000000000d0c0"
		podID    = "c0a7a1ae2d000000000000000000000000000000000000000000000000000000"
		podmanID = "b0d0a5000000000000000000000000000000000000000000000000000000b0d0"
	)
	g.must(t, `set -e
printf 'rules:\n  - match: /srv/fw-rollup/**\n    path: /srv/fw-rollup\n    name: ""\n' >/etc/filewatcher/label-rules.yml
chmod 0644 /etc/filewatcher/label-rules.yml
printf '%s\n' FILEWATCHER_EXPORTER_LABEL_RULES=/etc/filewatcher/label-rules.yml FILEWATCHER_EXPORTER_SERVICE_LABEL=true >>/etc/filewatcher/filewatcher.env
systemctl restart filewatcher-exporter.service`)
	defer func() {
		g.must(t, `set -e
systemctl stop fw-e2e-maker.service 2>/dev/null || true
sed -i '/^FILEWATCHER_EXPORTER_LABEL_RULES=/d; /^FILEWATCHER_EXPORTER_SERVICE_LABEL=/d' /etc/filewatcher/filewatcher.env
systemctl restart filewatcher-exporter.service
# These deliberate restarts are not a crash loop: clear the unit's start
# rate limit (StartLimitBurst=5 in 120 s), which the restarts the next
# tests cause would otherwise hit.
systemctl reset-failed filewatcher-exporter.service`)
		subscribed(t)
	}()
	subscribed(t)
	// The unit the agent's shells run in: the files it creates are its.
	agentUnit := g.must(t, `sed -n 's|^0::.*/||p' /proc/self/cgroup`)

	// A service that creates a file and keeps running; files created from
	// cgroups named as docker, containerd (Kubernetes) and podman name them
	// with the systemd driver; files the rule folds.
	g.must(t, `set -e
mkdir -p /srv/fw-svc /srv/fw-rollup/a/b
systemd-run --quiet --unit=fw-e2e-maker sh -c 'touch /srv/fw-svc/by-unit; exec sleep 600'
in_cgroup() { mkdir -p /sys/fs/cgroup/$1; sh -c 'echo $$ >"$1/cgroup.procs" && exec touch "$2"' sh /sys/fs/cgroup/$1 /srv/fw-svc/$2; }
in_cgroup system.slice/docker-`+dockerID+`.scope in-docker
in_cgroup kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_4e5f.slice/cri-containerd-`+podID+`.scope in-pod
in_cgroup machine.slice/libpod-`+podmanID+`.scope in-podman
touch /srv/fw-rollup/1 /srv/fw-rollup/a/2 /srv/fw-rollup/a/b/3`)

	expect := func(q string, want map[string]string) {
		eventually(t, 90*time.Second, time.Second, "Prometheus stores "+q, func() error {
			res, err := query(q)
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, s := range res {
				got[s.Metric["name"]+" service="+s.Metric["service"]] = fmt.Sprint(s.Value[1])
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("got %v, want %v", got, want)
			}
			return nil
		})
	}
	expect(`file_created_total{job="filewatcher", path="/srv/fw-svc"}`, map[string]string{
		"by-unit service=fw-e2e-maker.service":      "1",
		"in-docker service=docker:" + dockerID[:12]: "1",
		"in-pod service=containerd:" + podID[:12]:   "1",
		"in-podman service=podman:" + podmanID[:12]: "1",
	})
	// The rule: one series for the three files, the name folded away.
	expect(`file_created_total{job="filewatcher", path="/srv/fw-rollup"}`, map[string]string{
		" service=" + agentUnit: "3",
	})
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

type promResponse struct {
	Status string `json:"status"`
	Data   struct {
		Result []promSample `json:"result"`
	} `json:"data"`
}

// localClient is run in the guest by an unprivileged user: connect to the
// loader's socket, call GetStatus (grpc-js from the installed exporter), or
// GET /metrics (with "user:password" as basic auth, if given).
const localClient = `const [what, cred] = process.argv.slice(2);
const sock = '/run/filewatcher/loader.sock';
if (what === 'connect') {
  require('net').connect(sock)
    .on('connect', () => { console.log('connected'); process.exit(0); })
    .on('error', (e) => { console.log(e.code); process.exit(0); });
} else if (what === 'status') {
  const grpc = require('/usr/local/lib/filewatcher/node/node_modules/@grpc/grpc-js');
  const c = new grpc.Client('unix://' + sock, grpc.credentials.createInsecure());
  c.makeUnaryRequest('/filewatcher.v1.EventService/GetStatus', (b) => b, (b) => b, Buffer.alloc(0),
    (err) => { console.log(err ? 'code=' + err.code : 'ok'); process.exit(0); });
} else {
  const headers = cred ? { authorization: 'Basic ' + Buffer.from(cred).toString('base64') } : {};
  fetch('http://127.0.0.1:8080/metrics', { headers }).then(async (r) => {
    const text = await r.text();
    console.log(r.status, text.includes('file_created_total{') ? 'paths' : 'no-paths');
  }, (e) => console.log('error', e.message));
}
`

// e2ePasswordHash is bcrypt("e2e-password", cost 10), as htpasswd -B makes it.
const e2ePasswordHash = "$2b$10$K1cbcXEMzGUkMqEeXg9ymeUqQxF0hVdfxca7tCQRroIAk8RG5SCHe"

// testLocalUser checks, as uid 65534 (nobody, in no group), that the
// socket's directory and mode keep it out, that the loader's peer-credential
// check still refuses it when both are loosened, and that a
// /metrics protected by a web configuration gives it no paths without the
// password. The exporter's unprotected default is restored at the end for
// the tests that follow.
func testLocalUser(t *testing.T, g *guest, subscribed func(*testing.T)) {
	g.must(t, "cat >/tmp/fw-local-client.js <<'EOF'\n"+localClient+"EOF\nchmod 0644 /tmp/fw-local-client.js")
	asNobody := func(args string) string {
		return g.must(t, "setpriv --reuid=65534 --regid=65534 --clear-groups -- \"$(command -v node)\" /tmp/fw-local-client.js "+args)
	}
	if got := asNobody("connect"); got != "EACCES" {
		t.Errorf("nobody connecting to the socket (0660, in a 0750 directory): %q, want EACCES", got)
	}
	// Loosen both layers of file permissions: the unit's RuntimeDirectory
	// (0750) and the socket (0660).
	g.must(t, "chmod 0751 /run/filewatcher && chmod 0666 /run/filewatcher/loader.sock")
	got := asNobody("status")
	g.must(t, "chmod 0750 /run/filewatcher && chmod 0660 /run/filewatcher/loader.sock")
	if got != "code=7" {
		t.Errorf("nobody calling GetStatus through a loosened socket: %q, want code=7 (PERMISSION_DENIED)", got)
	}
	if out := g.must(t, "journalctl --no-pager -b -u filewatcher-loader -o cat | grep -c 'refused a call from a peer not in the allowlist' || true"); out == "0" {
		t.Error("the loader did not log the refused call")
	}
	if got := asNobody("metrics"); got != "200 paths" {
		t.Errorf("nobody scraping the unprotected default: %q, want 200 paths (what the docs say the default allows)", got)
	}

	// Protect /metrics as the env file says, restart the exporter.
	g.must(t, `set -e
printf 'basic_auth_users:\n  prometheus: %s\n' '`+e2ePasswordHash+`' >/etc/filewatcher/web-config.yml
chown root:filewatcher /etc/filewatcher/web-config.yml
chmod 0640 /etc/filewatcher/web-config.yml
echo FILEWATCHER_EXPORTER_WEB_CONFIG_FILE=/etc/filewatcher/web-config.yml >>/etc/filewatcher/filewatcher.env
systemctl restart filewatcher-exporter.service`)
	eventually(t, 2*time.Minute, time.Second, "protected exporter serving", func() error {
		if got := asNobody("metrics"); got != "401 no-paths" {
			return fmt.Errorf("nobody without the password: %q, want 401 no-paths", got)
		}
		return nil
	})
	if got := asNobody("metrics prometheus:wrong"); got != "401 no-paths" {
		t.Errorf("nobody with a wrong password: %q, want 401 no-paths", got)
	}
	// The restarted exporter counts from now on: create a file for it.
	g.must(t, "touch /srv/fw-e2e/behind-basic-auth")
	eventually(t, time.Minute, time.Second, "the new file served with the password", func() error {
		if got := asNobody("metrics prometheus:e2e-password"); got != "200 paths" {
			return fmt.Errorf("with the password: %q, want 200 paths", got)
		}
		return nil
	})
	if out := g.must(t, "journalctl --no-pager -b -u filewatcher-exporter -o cat | grep -c 'metrics_access=.*basic auth (1 users)' || true"); out == "0" {
		t.Error("the exporter's ready line does not say /metrics is protected")
	}

	g.must(t, `set -e
sed -i '/^FILEWATCHER_EXPORTER_WEB_CONFIG_FILE=/d' /etc/filewatcher/filewatcher.env
systemctl restart filewatcher-exporter.service`)
	subscribed(t)
}
