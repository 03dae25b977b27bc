//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

const tracing = "/sys/kernel/tracing"

// testFtrace is the seed's check: with events/filewatcher enabled, a relative
// `touch riptides` shows in trace_pipe as "file_created: /abs/path/riptides"
// from the touch process. ftrace prints the comm from a cache that can miss
// (about a third of the lines on 7.3 say `<...>`): either is accepted, the
// pid and the path must be right.
func testFtrace(t *testing.T, g *guest) {
	ls := string(g.sh(t, "ls "+tracing+"/events/filewatcher/"))
	for _, want := range []string{"enable", "file_created", "filter"} {
		if !strings.Contains(ls, want) {
			t.Errorf("%s/events/filewatcher/ lists %q, want %s in it", tracing, ls, want)
		}
	}
	dir := newScenario(g).dir + "-ftrace"
	g.run(t, 0, argv("mkdir", "-p", dir))
	g.sh(t, "echo 1 > "+tracing+"/events/filewatcher/enable")
	defer g.sh(t, "echo 0 > "+tracing+"/events/filewatcher/enable")
	touch := g.run(t, 0, vmagent.Request{Argv: vmagent.Args("touch", "riptides"), Dir: []byte(dir)})
	mknod := g.run(t, 0, argv("fwopen", "-mknod", dir+"/by-mknod"))
	// trace_pipe blocks for more; the agent ends it after 3 s. What was
	// traced before it was opened is still in the buffer.
	pipe := g.run(t, 137, vmagent.Request{Argv: vmagent.Args("cat", tracing+"/trace_pipe"), TimeoutMS: 3000})
	for _, want := range []struct {
		comm string
		pid  int
		tail string // after the directory
	}{
		{"touch", touch.PID, "/riptides"},
		{"fwopen", mknod.PID, "/by-mknod (mknod)"}, // a kind other than open says so
	} {
		line := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*(%s|<\.\.\.>)-%d\s+\[\d+\] \S+\s+[\d.]+: file_created: %s%s$`,
			want.comm, want.pid, regexp.QuoteMeta(dir), regexp.QuoteMeta(want.tail)))
		if n := len(line.FindAll(pipe.Stdout, -1)); n != 1 {
			t.Errorf("trace_pipe has %d lines matching %s, want 1:\n%s", n, line, pipe.Stdout)
		}
	}
}

// openFunction is the function the module must probe on release: Linux 7.0
// renamed do_filp_open to do_file_open.
func openFunction(t *testing.T, release string) string {
	major, err := strconv.Atoi(release[:strings.IndexByte(release, '.')])
	if err != nil {
		t.Fatalf("kernel release %q: %v", release, err)
	}
	if major >= 7 {
		return "do_file_open"
	}
	return "do_filp_open"
}

// testWalkthrough follows the seed's walkthrough by hand, before any loader
// ran: insmod, the module in /proc/modules, the tracepoint directory,
// trace_pipe, the tracepoint switched on and off under a create loop, the
// module's counters and the function it chose, a clean rmmod.
func testWalkthrough(t *testing.T, g *guest) {
	if out := g.sh(t, "grep -c '^filewatcher ' /proc/modules || true"); strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("module loaded before insmod (--no-loader): %s", out)
	}
	g.run(t, 0, argv("insmod", "/filewatcher/filewatcher.ko"))
	if out := g.sh(t, "grep '^filewatcher ' /proc/modules || true"); len(out) == 0 {
		t.Fatalf("filewatcher not in /proc/modules after insmod")
	}
	want := openFunction(t, g.release)
	if got := strings.TrimSpace(string(g.sh(t, "cat /sys/kernel/filewatcher/function"))); got != want {
		t.Errorf("the module probes %q on %s, want %s", got, g.release, want)
	}
	if log := g.sh(t, "dmesg | grep 'filewatcher: watching' || true"); !strings.Contains(string(log), "watching file creation through "+want+",") {
		t.Errorf("kernel log says %q, want it to name %s", log, want)
	}
	testFtrace(t, g)
	// Switching a tracepoint on and off patches the kernel's code while other
	// CPUs run through it: 30 times, while files are being created.
	g.sh(t, `T=`+tracing+`/events/filewatcher/enable
		mkdir -p /tmp/toggle && (while :; do touch /tmp/toggle/a; rm /tmp/toggle/a; done) & loop=$!
		for i in $(seq 1 30); do echo 1 >$T; echo 0 >$T; done
		kill $loop`)
	counters := g.sh(t, "cd /sys/kernel/filewatcher && grep . *")
	for _, want := range []string{"kprobe_missed:0", "path_unresolved:0"} {
		if !strings.Contains(string(counters), want) {
			t.Errorf("module counters lack %q:\n%s", want, counters)
		}
	}
	if regexp.MustCompile(`(?m)^events_fired:0$`).Match(counters) {
		t.Errorf("events_fired is 0 after a touch:\n%s", counters)
	}
	g.run(t, 0, argv("rmmod", "filewatcher"))
	g.sh(t, "test ! -e "+tracing+"/events/filewatcher && touch /tmp/after-rmmod")
	assertKernelLogClean(t, g)
}

// assertKernelLogClean fails on any kernel warning, oops or BUG in the guest.
func assertKernelLogClean(t *testing.T, g *guest) {
	t.Helper()
	bad := regexp.MustCompile(`(?m)^.*(WARNING:|BUG:|Oops|general protection|list_add corruption|Call Trace).*$`)
	if found := bad.FindAll(g.sh(t, "dmesg"), 10); len(found) > 0 {
		t.Errorf("kernel log has problems:\n%s", bytesJoin(found))
	}
}

func bytesJoin(lines [][]byte) string {
	var b strings.Builder
	for _, l := range lines {
		b.Write(l)
		b.WriteByte('\n')
	}
	return b.String()
}
