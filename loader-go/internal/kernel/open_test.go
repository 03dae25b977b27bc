package kernel

import (
	"os"
	"strings"
	"testing"
)

// TestOpenWithoutTracepoint loads the BPF objects into the running kernel
// (so the verifier accepts them with the requested ring size) and fails
// cleanly where the module's tracepoint does not exist, as on a host that
// cannot load modules. The VM tests cover the attached case.
func TestOpenWithoutTracepoint(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		t.Skip("loading BPF programs needs root")
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/filewatcher/file_created"); err == nil {
		t.Skip("the filewatcher tracepoint exists here")
	}
	s, err := Open(Options{RingbufSize: 1 << 20})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded without the tracepoint")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "read the format of tracepoint filewatcher/file_created (is the module loaded?)") {
		t.Fatalf("error = %v", err)
	}
}
