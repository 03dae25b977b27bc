//go:build e2e

package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

const tracing = "/sys/kernel/tracing"

// testFtrace is the seed's check: with events/filewatcher enabled, a relative
// `touch riptides` shows in trace_pipe as "file_created: /abs/path/riptides"
// from the touch process.
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
	// trace_pipe blocks for more; the agent ends it after 3 s. What was
	// traced before it was opened is still in the buffer.
	pipe := g.run(t, 137, vmagent.Request{Argv: vmagent.Args("cat", tracing+"/trace_pipe"), TimeoutMS: 3000})
	line := regexp.MustCompile(fmt.Sprintf(`(?m)^\s*touch-%d\s+\[\d+\] \S+\s+[\d.]+: file_created: %s/riptides$`,
		touch.PID, regexp.QuoteMeta(dir)))
	if n := len(line.FindAll(pipe.Stdout, -1)); n != 1 {
		t.Errorf("trace_pipe has %d lines matching %s, want 1:\n%s", n, line, pipe.Stdout)
	}
}

// TestModuleWithoutLoader follows the seed's walkthrough by hand in a guest
// booted without the loader: insmod, the module in /proc/modules, the
// tracepoint directory, trace_pipe, the module's counters, and a clean rmmod.
func TestModuleWithoutLoader(t *testing.T) {
	forEachKernel(t, func(t *testing.T, kernel string) {
		g := bootGuest(t, kernel, "--no-loader")
		if out := g.sh(t, "grep -c '^filewatcher ' /proc/modules || true"); strings.TrimSpace(string(out)) != "0" {
			t.Fatalf("module loaded before insmod (--no-loader): %s", out)
		}
		g.run(t, 0, argv("insmod", "/filewatcher/filewatcher.ko"))
		if out := g.sh(t, "grep '^filewatcher ' /proc/modules || true"); len(out) == 0 {
			t.Fatalf("filewatcher not in /proc/modules after insmod")
		}
		testFtrace(t, g)
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
	})
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
