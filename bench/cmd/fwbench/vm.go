package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// VM is a test/vm guest booted for the kernel benchmarks: the module and our
// loader are in it but not started (vm.sh up --no-loader), so runs with and
// without them alternate in one boot.
type VM struct {
	b        *Bench
	name     string
	grpcAddr string // host side of the guest's port 50051
	Kernel   string // uname -r in the guest
	Bpftrace bool   // bpftrace and its libraries were added
	Fsnotify bool   // fsnotifywait (inotify-tools) and its libraries were added
	BootTime time.Duration
}

const (
	guestStorm  = "/usr/local/bin/fwstorm"
	guestLoader = "/usr/local/bin/filewatcher-loader"
	guestModule = "/filewatcher/filewatcher.ko"
	guestFwopen = "/usr/local/bin/fwopen"
)

func (b *Bench) vmScript() string { return filepath.Join(b.repo, "test/vm/vm.sh") }

// vmUp boots the guest with the storm program, fwopen (the e2e tests'
// creation routes), the loader and, when this host has them, bpftrace and
// fsnotifywait with every library they link.
func (b *Bench) vmUp(ctx context.Context) (*VM, error) {
	v := &VM{b: b, name: fmt.Sprintf("fwbench-%d", os.Getpid())}
	args := []string{b.vmScript(), "up", "--kernel", b.kernelSeries, "--name", v.name, "--no-loader",
		"--ttl", strconv.Itoa(int(b.cfg.vmTTL.Seconds())),
		"--add", b.stormBin + ":" + guestStorm, "--add", b.fwopenBin + ":" + guestFwopen, "--add", b.loaderBin + ":" + guestLoader}
	if adds, err := hostToolAdds("bpftrace", "bpftrace"); err == nil {
		args = append(args, adds...)
		v.Bpftrace = true
	} else {
		logf("  no bpftrace peer: %v", err)
	}
	if adds, err := fsnotifyAdds(); err == nil {
		args = append(args, adds...)
		v.Fsnotify = true
	} else {
		logf("  no fanotify peer: %v", err)
	}
	onStop(v.down)
	start := time.Now()
	var out string
	var err error
	// vm.sh shares its build folder between VMs and copies the module out of
	// it after releasing its build lock: a test booting the same kernel at
	// the same time can remove it under us. Such a failure is worth a retry.
	for try := 1; try <= 3; try++ {
		out, err = run(ctx, 10*time.Minute, args...)
		if err == nil || ctx.Err() != nil {
			break
		}
		v.down()
		logf("  vm.sh up failed (try %d of 3): %s", try, lastLines(err.Error(), 2))
	}
	if err != nil {
		return nil, fmt.Errorf("vm.sh up: %w", err)
	}
	v.BootTime = time.Since(start)
	v.grpcAddr = lastLine(out)
	if !strings.HasPrefix(v.grpcAddr, "127.0.0.1:") {
		v.down()
		return nil, fmt.Errorf("vm.sh up printed no address: %q", lastLines(out, 5))
	}
	if v.Kernel, err = v.sh(ctx, "uname -r"); err != nil {
		v.down()
		return nil, err
	}
	return v, nil
}

// bootEarly starts booting the guest in the background, so that a smoke run
// does the other sections meanwhile (a full run never does: qemu would
// disturb the host measurements).
func (b *Bench) bootEarly(ctx context.Context) {
	ch := make(chan vmResult, 1)
	b.early = ch
	go func() {
		v, err := b.vmUp(ctx)
		ch <- vmResult{v, err}
	}()
}

type vmResult struct {
	vm  *VM
	err error
}

// guest returns the guest booted early, or boots one now.
func (b *Bench) guest(ctx context.Context) (*VM, error) {
	if b.early != nil {
		r := <-b.early
		b.early = nil
		return r.vm, r.err
	}
	return b.vmUp(ctx)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// hostToolAdds lists --add arguments that put this host's tool (from
// Debian's package pkg) and the shared libraries it needs (resolved through
// symlinks) in the guest.
func hostToolAdds(tool, pkg string) ([]string, error) {
	bin, err := exec.LookPath(tool)
	if err != nil {
		return nil, fmt.Errorf("%s is not installed on this host (apt-get install %s)", tool, pkg)
	}
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	paths := []string{bin}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			paths = append(paths, f)
		}
	}
	var adds []string
	for _, p := range paths {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, err
		}
		adds = append(adds, "--add", real+":"+p)
	}
	return adds, nil
}

// fsnotifyAdds lists --add arguments for fsnotifywait and stdbuf (with
// coreutils' libstdbuf.so, which it preloads): see startFsnotifywait.
func fsnotifyAdds() ([]string, error) {
	adds, err := hostToolAdds("fsnotifywait", "inotify-tools")
	if err != nil {
		return nil, err
	}
	stdbuf, err := hostToolAdds("stdbuf", "coreutils")
	if err != nil {
		return nil, err
	}
	const lib = "/usr/libexec/coreutils/libstdbuf.so"
	if _, err := os.Stat(lib); err != nil {
		return nil, fmt.Errorf("stdbuf's %s: %w", lib, err)
	}
	return append(append(adds, stdbuf...), "--add", lib+":"+lib), nil
}

// down powers the guest off and removes its state folder (its initramfs
// holds bpftrace's libraries: ~240 MB).
func (v *VM) down() {
	_, _ = run(context.Background(), 2*time.Minute, v.b.vmScript(), "down", "--name", v.name, "--clean")
}

// exec runs argv in the guest and returns its stdout+stderr.
func (v *VM) exec(ctx context.Context, timeout time.Duration, argv ...string) (string, error) {
	args := []string{v.b.vmScript(), "exec", "--name", v.name, "--timeout", timeout.String(), "--"}
	return run(ctx, timeout+time.Minute, append(args, argv...)...)
}

// sh runs a shell command line in the guest and returns its trimmed output.
func (v *VM) sh(ctx context.Context, script string, args ...string) (string, error) {
	out, err := v.exec(ctx, 10*time.Minute, append([]string{"sh", "-c", script}, args...)...)
	return strings.TrimSpace(out), err
}

// background starts a shell command line in the guest, detached, with its
// output in logFile, and returns its pid. "$0", "$1"... are args.
func (v *VM) background(ctx context.Context, logFile, script string, args ...string) (int, error) {
	out, err := v.sh(ctx, "("+script+") >"+logFile+" 2>&1 </dev/null & echo $!", args...)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(lastLine(out))
}

// waitFor polls a guest shell condition until it holds.
func (v *VM) waitFor(ctx context.Context, what, cond string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := v.sh(ctx, cond); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("guest: %s: not after %v", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cpu is a guest process's utime+stime.
func (v *VM) cpu(ctx context.Context, pid int) (time.Duration, error) {
	out, err := v.sh(ctx, fmt.Sprintf("cat /proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(out)
}

// idleCPU is the fraction of a CPU a guest process uses while nothing
// happens (pollers, timers), measured over d.
func (v *VM) idleCPU(ctx context.Context, pid int, d time.Duration) (float64, error) {
	c0, err := v.cpu(ctx, pid)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	time.Sleep(d)
	c1, err := v.cpu(ctx, pid)
	if err != nil {
		return 0, err
	}
	return (c1 - c0).Seconds() / time.Since(start).Seconds(), nil
}

// counters reads the module's sysfs counters.
func (v *VM) counters(ctx context.Context) (fired, missed uint64, err error) {
	out, err := v.sh(ctx, "cat /sys/kernel/filewatcher/events_fired /sys/kernel/filewatcher/kprobe_missed")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("sysfs counters: %q", out)
	}
	fired, err1 := strconv.ParseUint(f[0], 10, 64)
	missed, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("sysfs counters: %q", out)
	}
	return fired, missed, nil
}

// Storm is one fwstorm run's result line.
type Storm struct {
	Mode              string
	N, OK, Failed     uint64
	Workers           int
	NS                uint64
	PerSec            float64
	UtimeUS, StimeUS  int64
	FirstErrno        int
	raw               string
	Dir               string
	ElapsedOnHostSecs float64
}

// NSPerOp is the wall time per successful operation.
func (s Storm) NSPerOp() float64 { return float64(s.NS) / max(1, float64(s.OK)) }

// CPUPerOp is the workers' CPU time (user + system) per successful operation, in ns.
func (s Storm) CPUPerOp() float64 {
	return float64(s.UtimeUS+s.StimeUS) * 1000 / max(1, float64(s.OK))
}

// storm runs fwstorm in the guest: mode create|open|creat-existing.
func (v *VM) storm(ctx context.Context, mode string, workers int, target string, n int) (Storm, error) {
	start := time.Now()
	out, err := v.exec(ctx, 20*time.Minute, guestStorm, mode, "-w", strconv.Itoa(workers), target, strconv.Itoa(n))
	s, perr := parseStorm(lastLine(out))
	s.Dir = target
	s.ElapsedOnHostSecs = time.Since(start).Seconds()
	if err != nil {
		return s, fmt.Errorf("fwstorm %s: %w", mode, err)
	}
	return s, perr
}

func parseStorm(line string) (Storm, error) {
	s := Storm{raw: line}
	kv := map[string]string{}
	for _, f := range strings.Fields(line) {
		if k, val, ok := strings.Cut(f, "="); ok {
			kv[k] = val
		}
	}
	if kv["mode"] == "" {
		return s, fmt.Errorf("fwstorm printed %q", line)
	}
	u := func(k string) uint64 { n, _ := strconv.ParseUint(kv[k], 10, 64); return n }
	i := func(k string) int64 { n, _ := strconv.ParseInt(kv[k], 10, 64); return n }
	s.Mode = kv["mode"]
	s.N, s.OK, s.Failed, s.NS = u("n"), u("ok"), u("failed"), u("ns")
	s.Workers = int(i("workers"))
	s.PerSec, _ = strconv.ParseFloat(kv["per_sec"], 64)
	s.UtimeUS, s.StimeUS = i("utime_us"), i("stime_us")
	s.FirstErrno = int(i("first_errno"))
	return s, nil
}

// GuestLoader is our loader running in the guest, with a gRPC client on the host.
type GuestLoader struct {
	*Loader
	vm  *VM
	pid int
	log string
}

// startLoader starts the loader in the guest (it loads the module and the
// BPF program) and connects to it from the host.
func (v *VM) startLoader(ctx context.Context, tag string, ringSize int, probe string, extra ...string) (*GuestLoader, error) {
	log := "/tmp/loader-" + tag + ".log"
	args := []string{guestLoader, "--probe", probe, "--module", guestModule, "--listen", "0.0.0.0:50051", "--allow-insecure-tcp"}
	if ringSize > 0 {
		args = append(args, "--ringbuf-size", strconv.Itoa(ringSize))
	}
	args = append(args, extra...)
	pid, err := v.background(ctx, log, `exec "$@"`, append([]string{"loader"}, args...)...)
	if err != nil {
		return nil, err
	}
	g := &GuestLoader{vm: v, pid: pid, log: log, Loader: &Loader{Addr: v.grpcAddr}}
	if err := v.waitFor(ctx, "loader ready", "grep -q msg=ready "+log, 60*time.Second); err != nil {
		out, _ := v.sh(ctx, "tail -n 20 "+log)
		g.stop(ctx)
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	if err := g.dial(); err != nil {
		g.stop(ctx)
		return nil, err
	}
	return g, nil
}

// stop ends the guest loader (it detaches and unloads the module) and makes
// sure the module is gone.
func (g *GuestLoader) stop(ctx context.Context) error {
	if g.conn != nil {
		g.conn.Close()
		g.conn = nil
	}
	v := g.vm
	_, _ = v.sh(ctx, fmt.Sprintf("kill -TERM %d", g.pid))
	if err := v.waitFor(ctx, "loader exit", fmt.Sprintf("! kill -0 %d 2>/dev/null", g.pid), 30*time.Second); err != nil {
		_, _ = v.sh(ctx, fmt.Sprintf("kill -KILL %d", g.pid))
	}
	// The loader unloads what it loaded, waiting up to 10 s for the last
	// reference (a just-closed perf event) to go; unload whatever is left
	// the same way, and say what holds it if that fails.
	if _, err := v.sh(ctx, "test -e /sys/kernel/filewatcher"); err == nil {
		if err := v.waitFor(ctx, "rmmod filewatcher", "rmmod filewatcher 2>/dev/null", 10*time.Second); err != nil {
			held, _ := v.sh(ctx, "cat /sys/module/filewatcher/refcnt; ls /sys/module/filewatcher/holders")
			return fmt.Errorf("module still loaded after the loader stopped, and rmmod failed for 10 s (refcnt, holders: %s): %w",
				strings.Join(strings.Fields(held), " "), err)
		}
	}
	return nil
}
