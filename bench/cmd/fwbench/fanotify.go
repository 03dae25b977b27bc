package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The fanotify peer (issue 13): what a user would try first instead of
// filewatcher. Debian's fsnotifywait (inotify-tools 3.22.6) with -F -S puts
// one fanotify mark on a whole filesystem (FAN_MARK_FILESYSTEM, FAN_CREATE,
// file handles and names) and prints each event it reads; here it watches
// the guest's /tmp, where every route and storm below creates.

const (
	fanotifyName = "fanotify: fsnotifywait -F -S -e create"
	fanotifyFS   = "/tmp"
	// fsnotifyMark starts each line fsnotifywait prints for an event
	// (--format), so that nothing else it prints is taken for one.
	fsnotifyMark = "fwb|"
)

// fsnotifyRun is fsnotifywait running in the guest under a shell that, when
// it exits, prints its status and CPU time (fsnotifywait exits on its own
// when its queue overflows). Its output (events and messages) is in out,
// outside the watched filesystem.
type fsnotifyRun struct {
	vm    *VM
	pid   int // the shell
	child int // fsnotifywait
	out   string
}

// fsnotifyShell runs fsnotifywait, then prints "fwb-exit STATUS CUTIME
// CSTIME" (the shell's waited-for children's CPU ticks: fsnotifywait's).
// stdbuf -oL: writing to a file, fsnotifywait (stdio) would hold its events
// in 4 KiB blocks until exit, and a SIGTERM loses them.
const fsnotifyShell = `stdbuf -oL fsnotifywait -F -S -m -e create --format "$1" "$2"; echo "fwb-exit $? $(cut -d ' ' -f 16,17 /proc/$$/stat)"`

// startFsnotifywait starts fsnotifywait on fanotifyFS and waits until its
// mark is in place ("Watches established.").
func startFsnotifywait(ctx context.Context, v *VM, tag string) (*fsnotifyRun, error) {
	f := &fsnotifyRun{vm: v, out: "/fsnotifywait-" + tag + ".out"}
	pid, err := v.background(ctx, f.out, `exec sh -c "$1" sh "$2" "$3"`, "sh", fsnotifyShell, fsnotifyMark+"%e|%w%f", fanotifyFS)
	if err != nil {
		return nil, err
	}
	f.pid = pid
	if err := v.waitFor(ctx, "fsnotifywait watching", "grep -q 'Watches established' "+f.out, 2*time.Minute); err != nil {
		text, _ := v.sh(ctx, "tail -n 5 "+f.out)
		_, _ = v.sh(ctx, fmt.Sprintf("kill -KILL %d $(pidof fsnotifywait)", pid))
		return nil, fmt.Errorf("%w: %s", err, text)
	}
	child, err := v.sh(ctx, "pidof fsnotifywait")
	if err != nil {
		return nil, err
	}
	if f.child, err = strconv.Atoi(lastLine(child)); err != nil {
		return nil, fmt.Errorf("pidof fsnotifywait: %q", child)
	}
	return f, nil
}

// stop ends fsnotifywait and waits for its shell to exit. SIGTERM: started
// in the background by a non-interactive shell, it ignores SIGINT, and it
// has no handler of its own; its events are already written (line-buffered).
func (f *fsnotifyRun) stop(ctx context.Context) error {
	v := f.vm
	_, _ = v.sh(ctx, fmt.Sprintf("kill -TERM %d 2>/dev/null", f.child))
	if err := v.waitFor(ctx, "fsnotifywait exit", fmt.Sprintf("! kill -0 %d 2>/dev/null", f.pid), time.Minute); err != nil {
		_, _ = v.sh(ctx, fmt.Sprintf("kill -KILL %d %d", f.child, f.pid))
		return err
	}
	return nil
}

// state says whether fsnotifywait has exited by itself (with its status and
// the last message it printed) and its CPU time so far.
func (f *fsnotifyRun) state(ctx context.Context) (exited bool, why string, cpu time.Duration, err error) {
	for try := 0; ; try++ {
		exited, why, cpu, err = f.stateOnce(ctx)
		// A failed /proc read falls between its exit and its shell's line:
		// look again, a few times.
		if err == nil || exited || try == 10 {
			return exited, why, cpu, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (f *fsnotifyRun) stateOnce(ctx context.Context) (exited bool, why string, cpu time.Duration, err error) {
	line, err := f.vm.sh(ctx, `grep '^fwb-exit ' "$1" || true`, "grep", f.out)
	if err != nil {
		return false, "", 0, err
	}
	if fields := strings.Fields(line); len(fields) == 4 {
		ut, err1 := strconv.ParseUint(fields[2], 10, 64)
		st, err2 := strconv.ParseUint(fields[3], 10, 64)
		if err1 != nil || err2 != nil {
			return true, "", 0, fmt.Errorf("fsnotifywait's shell printed %q", line)
		}
		msg, _ := f.vm.sh(ctx, `grep -v -e '^fwb' -e '^\[fid=' -e 'Failed to decode' "$1" | tail -n 1`, "grep", f.out)
		return true, fmt.Sprintf("status %s, %q", fields[1], msg), time.Duration(float64(ut+st) / clockTicks * float64(time.Second)), nil
	}
	cpu, err = f.vm.cpu(ctx, f.child)
	return false, "", cpu, err
}

// events returns what fsnotifywait reported under prefix: path → the
// event names of each report, in order (CREATE, or CREATE,ISDIR for a
// directory).
func (f *fsnotifyRun) events(ctx context.Context, prefix string) (map[string][]string, error) {
	text, err := f.vm.sh(ctx, `grep -F "$1" "$2" || true`, "grep", fsnotifyMark, f.out)
	if err != nil {
		return nil, err
	}
	got := map[string][]string{}
	for _, line := range strings.Split(text, "\n") {
		ev, path, ok := strings.Cut(strings.TrimPrefix(line, fsnotifyMark), "|")
		if ok && strings.HasPrefix(path, prefix) {
			got[path] = append(got[path], ev)
		}
	}
	return got, nil
}

// count is how many events fsnotifywait has read so far (it prints a
// "[fid=...;name='...'] PATH" line for each, PATH empty when it could not
// resolve the directory's handle), and how many of them it named under
// prefix.
func (f *fsnotifyRun) count(ctx context.Context, prefix string) (read, named uint64, err error) {
	s, err := f.vm.sh(ctx, `grep -c '^\[fid=' "$1" || true; grep -c -F "$2" "$1" || true`, "grep", f.out, fsnotifyMark+"CREATE|"+prefix)
	if err != nil {
		return 0, 0, err
	}
	lines := strings.Fields(s)
	if len(lines) != 2 {
		return 0, 0, fmt.Errorf("fsnotifywait counts: %q", s)
	}
	if read, err = strconv.ParseUint(lines[0], 10, 64); err == nil {
		named, err = strconv.ParseUint(lines[1], 10, 64)
	}
	return read, named, err
}

// fanotifyPeer runs fsnotifywait during the same storm as the other peers
// (without the module: fanotify needs nothing of ours) and counts what it
// printed once it has caught up.
func (b *Bench) fanotifyPeer(ctx context.Context, v *VM) (PeerRun, error) {
	p := PeerRun{Name: fanotifyName,
		Note: "one mark on the guest's /tmp filesystem; each event's directory handle resolved to a path by fsnotifywait (open_by_handle_at), printed to a file; no pid, uid or comm in its output"}
	dir := "/tmp/fwb-fanotify"
	f, err := startFsnotifywait(ctx, v, "peer")
	if err != nil {
		return p, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = f.stop(ctx)
		}
	}()
	idle, err := v.idleCPU(ctx, f.child, b.cfg.idleTime)
	if err != nil {
		return p, err
	}
	_, _, cpu0, err := f.state(ctx)
	if err != nil {
		return p, err
	}
	start := time.Now()
	if p.Storm, err = v.storm(ctx, "create", b.cfg.stormWorkers, dir, b.cfg.stormN); err != nil {
		return p, err
	}
	// Wait until fsnotifywait has read what it will read, or has exited.
	var read, named uint64
	var exited bool
	var why string
	var cpu1 time.Duration
	for stable := 0; stable < 3 && !exited; {
		time.Sleep(500 * time.Millisecond)
		if exited, why, cpu1, err = f.state(ctx); err != nil {
			return p, err
		}
		r, n, err := f.count(ctx, dir+"/")
		if err != nil {
			return p, err
		}
		if r == read && n == named {
			stable++
		} else {
			read, named, stable = r, n, 0
		}
	}
	p.ConsumerCPU = cpu1 - cpu0
	p.IdleCPU = time.Duration(idle * float64(time.Since(start)))
	// fwstorm's own directories (the storm's and one per worker) are
	// creations too; nothing else creates in the guest's /tmp meanwhile.
	dirs := uint64(1 + b.cfg.stormWorkers)
	if read >= dirs {
		p.Seen = read - dirs
	}
	if p.Seen > named {
		p.Note += fmt.Sprintf("; %d of the %d events read came without a path (\"Failed to decode directory fid\": fwstorm had removed its folders before fsnotifywait resolved their handles)",
			p.Seen-named, p.Seen)
	}
	if exited {
		// Its queue (16,384 events) overflowed: the overflow event has no
		// file handle, and fsnotifywait gives up.
		p.Note += fmt.Sprintf("; **fsnotifywait exited during the storm** (%s) after reading %d events: nothing tells how many it missed", why, p.Seen)
	}
	stopped = true
	if err := f.stop(ctx); err != nil {
		return p, err
	}
	logf("  %-22s seen %d of %d (%d with a path), consumer CPU %.2fs, %.0f creates/s", "fanotify", p.Seen, p.Storm.OK, named, p.ConsumerCPU.Seconds(), p.Storm.PerSec)
	return p, nil
}

// Route is one scripted way of making (or not making) a file, run once with
// filewatcher and fsnotifywait watching side by side.
type Route struct {
	Name     string
	Creation bool   // a new regular file appears under a new name
	Path     string // the name it appears under (or would)
	// What each reported for Path: filewatcher's event kind and identity,
	// fsnotifywait's event names; "" when it reported nothing.
	Ours, Fanotify string
}

// routeStep is one guest command of the routes table: its name, whether it
// creates a regular file, the path it names (under routesDir), its argv.
type routeStep struct {
	name     string
	creation bool
	path     string
	argv     []string
}

const routesDir = "/tmp/fwb-routes"

func routeSteps() []routeStep {
	d := routesDir + "/"
	return []routeStep{
		{"open(O_CREAT) (`touch`)", true, d + "open", []string{"touch", d + "open"}},
		{"open(O_CREAT) of an existing file", false, d + "open", []string{"touch", d + "open"}},
		{"io_uring OPENAT with O_CREAT", true, d + "uring-open", []string{"fwopen", "-uring", "-creat", d + "uring-open"}},
		{"mknod(S_IFREG)", true, d + "mknod", []string{"fwopen", "-mknod", d + "mknod"}},
		{"O_TMPFILE + linkat(AT_EMPTY_PATH)", true, d + "tmpfile-empty", []string{"fwopen", "-tmpfile-link", "empty", d + "tmpfile-empty"}},
		{"O_TMPFILE + linkat(/proc/self/fd/N)", true, d + "tmpfile-proc", []string{"fwopen", "-tmpfile-link", "proc", d + "tmpfile-proc"}},
		{"O_TMPFILE never linked", false, d + "tmpfile-unlinked", []string{"fwopen", "-tmpfile", d + "tmpfile-unlinked"}},
		{"hard link of an existing file (`ln`)", false, d + "hardlink", []string{"ln", d + "open", d + "hardlink"}},
		{"rename (`mv`)", false, d + "renamed", []string{"mv", d + "mknod", d + "renamed"}},
		{"FIFO (`mkfifo`)", false, d + "fifo", []string{"mkfifo", d + "fifo"}},
		{"symlink (`ln -s`)", false, d + "symlink", []string{"ln", "-s", "open", d + "symlink"}},
		{"directory (`mkdir`)", false, d + "dir", []string{"mkdir", d + "dir"}},
		{"end marker (`touch`)", true, d + "end", []string{"touch", d + "end"}},
	}
}

// routes runs every route once with the loader (module) streaming to a
// subscriber on the host and fsnotifywait watching /tmp, and says what each
// reported for each route's path.
func (b *Bench) routes(ctx context.Context, v *VM) ([]Route, error) {
	logf("  creation routes, filewatcher and fanotify side by side")
	if _, err := v.sh(ctx, "rm -rf "+routesDir+" && mkdir -p "+routesDir); err != nil {
		return nil, err
	}
	g, err := v.startLoader(ctx, "routes", 0, probeModule)
	if err != nil {
		return nil, err
	}
	defer g.stop(ctx)
	c, err := g.subscribe(ctx, routesDir+"/")
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.record()
	f, err := startFsnotifywait(ctx, v, "routes")
	if err != nil {
		return nil, err
	}
	defer f.stop(ctx)
	steps := routeSteps()
	for _, s := range steps {
		if _, err := v.exec(ctx, time.Minute, s.argv...); err != nil {
			return nil, fmt.Errorf("route %s: %w", s.name, err)
		}
	}
	end := steps[len(steps)-1].path
	deadline := time.Now().Add(time.Minute)
	for {
		fan, err := f.events(ctx, routesDir+"/")
		if err != nil {
			return nil, err
		}
		if len(c.recorded()[end]) > 0 && len(fan[end]) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("routes: no event for %s within a minute (filewatcher %q, fanotify %q)", end, c.recorded()[end], fan[end])
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := c.waitDrained(ctx, g.Loader, 500*time.Millisecond, time.Minute); err != nil {
		return nil, err
	}
	fan, err := f.events(ctx, routesDir+"/")
	if err != nil {
		return nil, err
	}
	out := attribute(steps, c.recorded(), fan)
	for _, r := range out {
		logf("    %-40s creation %-5v filewatcher %-24q fanotify %q", r.Name, r.Creation, r.Ours, r.Fanotify)
	}
	return out, nil
}

// attribute gives each step what each tool reported for its path (reports
// joined by "; "). A path that several steps name (the touch of the file
// the first one created) has its first report on the first step's row and
// any later ones on the next's, which must have none.
func attribute(steps []routeStep, ours, fan map[string][]string) []Route {
	named := map[string]int{}
	for _, s := range steps {
		named[s.path]++
	}
	taken := map[string]bool{}
	var out []Route
	for _, s := range steps {
		pick := func(reports []string) string {
			switch {
			case named[s.path] == 1:
				return strings.Join(reports, "; ")
			case !taken[s.path]:
				return strings.Join(reports[:min(1, len(reports))], "; ")
			}
			return strings.Join(reports[min(1, len(reports)):], "; ")
		}
		out = append(out, Route{Name: s.name, Creation: s.creation, Path: s.path, Ours: pick(ours[s.path]), Fanotify: pick(fan[s.path])})
		taken[s.path] = true
	}
	return out
}
