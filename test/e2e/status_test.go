//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// testStatus checks GetStatus after the event tests: the run they saw, this
// kernel, the module's counters in step with the sequence numbers, and no
// loss but the one unresolved path the event test made on purpose.
func testStatus(t *testing.T, g *guest, runID string) {
	var st *fwv1.GetStatusResponse
	// The module counts a tracepoint hit a moment before the loader reads
	// the event from the ring buffer and numbers it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		st, err = g.client.GetStatus(ctx, &fwv1.GetStatusRequest{})
		cancel()
		if err != nil {
			t.Fatalf("GetStatus: %v", err)
		}
		if st.GetModuleEventsFired() == st.GetLastSequence() || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("status: %v", st)
	if runID != "" && st.GetRunId() != runID {
		t.Errorf("run_id %q, the stream said %q", st.GetRunId(), runID)
	}
	if st.GetKernelRelease() != g.release {
		t.Errorf("kernel_release %q, guest runs %q", st.GetKernelRelease(), g.release)
	}
	if st.GetSource() != "kernel" {
		t.Errorf("source %q, want kernel", st.GetSource())
	}
	if st.GetModuleVersion() == "" || st.GetLoaderVersion() == "" {
		t.Errorf("module_version %q, loader_version %q: want both set", st.GetModuleVersion(), st.GetLoaderVersion())
	}
	if st.GetLastSequence() == 0 || st.GetModuleEventsFired() != st.GetLastSequence() {
		t.Errorf("module_events_fired %d, last_sequence %d: want equal and nonzero (every event fired is numbered)",
			st.GetModuleEventsFired(), st.GetLastSequence())
	}
	loss := st.GetLoss()
	if loss.GetRingbufFull() != 0 || loss.GetKprobeMissed() != 0 || loss.GetReadErrors() != 0 || loss.GetSubscriberDropped() != 0 {
		t.Errorf("loss on a quiet guest: %v", loss)
	}
	if loss.GetPathUnresolved() != 1 {
		t.Errorf("path_unresolved %d, want 1 (the event test's one over-long path)", loss.GetPathUnresolved())
	}
	if st.GetKprobeMaxactive() == 0 || st.GetRingbufSizeBytes() == 0 {
		t.Errorf("kprobe_maxactive %d, ringbuf_size_bytes %d: want both set", st.GetKprobeMaxactive(), st.GetRingbufSizeBytes())
	}
	assertKernelLogClean(t, g)
}
