//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// testStatus checks GetStatus after the event tests: the run they saw, this
// kernel, the probe that ran and why, with the module its counters in step
// with the sequence numbers, and no loss but the one unresolved path the
// event test made on purpose.
func testStatus(t *testing.T, g *guest, runID, probe, reason string) {
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
		if probe != "kmod" || st.GetModuleEventsFired() == st.GetLastSequence() || time.Now().After(deadline) {
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
	if st.GetProbe() != probe || st.GetProbeReason() != reason || st.GetProbeDetail() != "" {
		t.Errorf("probe %q, probe_reason %q, probe_detail %q: want %s, %s and no detail", st.GetProbe(), st.GetProbeReason(), st.GetProbeDetail(), probe, reason)
	}
	if fn := openFunction(t, g.release); st.GetProbeFunction() != fn {
		t.Errorf("probe_function %q, want %s", st.GetProbeFunction(), fn)
	}
	if st.GetLoaderVersion() == "" {
		t.Errorf("loader_version empty")
	}
	if probe == "kmod" {
		if st.GetModuleVersion() == "" {
			t.Errorf("module_version empty")
		}
		if st.GetLastSequence() == 0 || st.GetModuleEventsFired() != st.GetLastSequence() {
			t.Errorf("module_events_fired %d, last_sequence %d: want equal and nonzero (every event fired is numbered)",
				st.GetModuleEventsFired(), st.GetLastSequence())
		}
		if st.GetKprobeMaxactive() == 0 {
			t.Errorf("kprobe_maxactive 0: want it set")
		}
	} else if st.GetModuleVersion() != "" || st.GetModuleEventsFired() != 0 || st.GetKprobeMaxactive() != 0 {
		t.Errorf("module_version %q, module_events_fired %d, kprobe_maxactive %d: want none without the module",
			st.GetModuleVersion(), st.GetModuleEventsFired(), st.GetKprobeMaxactive())
	}
	loss := st.GetLoss()
	if loss.GetRingbufFull() != 0 || loss.GetKprobeMissed() != 0 || loss.GetReadErrors() != 0 || loss.GetSubscriberDropped() != 0 ||
		loss.GetUnexplained() != 0 || loss.GetProgramSkipped() != 0 {
		t.Errorf("loss on a quiet guest: %v", loss)
	}
	if loss.GetPathUnresolved() != 2 {
		t.Errorf("path_unresolved %d, want 2 (the event test's two over-long paths, an open's and an mknod's)", loss.GetPathUnresolved())
	}
	if st.GetRingbufSizeBytes() == 0 {
		t.Errorf("ringbuf_size_bytes 0: want it set")
	}
	assertKernelLogClean(t, g)
}
