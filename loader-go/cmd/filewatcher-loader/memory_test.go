package main

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/filewatcher/filewatcher/loader-go/internal/config"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"github.com/filewatcher/filewatcher/loader-go/internal/server"
)

// TestUnitMemoryFitsDefaults checks that the systemd unit's GOMEMLIMIT and
// MemoryMax= hold what the default bounds let the loader pin: events in the
// replay buffer and in every subscriber's queue (hub's TestMemoryWithinBudgets
// checks that EventCost does not undercount them), a message being built and
// one being sent per subscriber, and the runtime; then the ring buffer and
// what is not Go heap (stacks, the binary, fragmentation) under MemoryMax.
func TestUnitMemoryFitsDefaults(t *testing.T) {
	unit, err := os.ReadFile("../../../deploy/systemd/filewatcher-loader.service")
	if err != nil {
		t.Fatal(err)
	}
	limit := unitBytes(t, unit, `(?m)^Environment=GOMEMLIMIT=(\d+)(MiB|GiB)$`)
	memoryMax := unitBytes(t, unit, `(?m)^MemoryMax=(\d+)([MG])$`)
	const mib = 1 << 20
	pinned := hub.DefaultReplayBytes + server.DefaultMaxSubscribers*max(hub.DefaultQueueBytes, hub.DefaultReplayBytes)
	inFlight := server.DefaultMaxSubscribers * 2 * hub.DefaultMaxBytes
	runtime := 64 * mib
	if need := pinned + inFlight + runtime; limit < need {
		t.Errorf("GOMEMLIMIT %d MiB < %d MiB: events %d MiB, messages %d MiB, runtime %d MiB", limit/mib, need/mib,
			pinned/mib, inFlight/mib, runtime/mib)
	}
	if need := limit + config.DefaultRingbufSize + 128*mib; memoryMax < need {
		t.Errorf("MemoryMax %d MiB < GOMEMLIMIT + ring buffer + 128 MiB = %d MiB", memoryMax/mib, need/mib)
	}
}

func unitBytes(t *testing.T, unit []byte, pattern string) int {
	t.Helper()
	m := regexp.MustCompile(pattern).FindSubmatch(unit)
	if m == nil {
		t.Fatalf("unit has no line matching %s", pattern)
	}
	n, err := strconv.Atoi(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if m[2][0] == 'G' {
		return n << 30
	}
	return n << 20
}
