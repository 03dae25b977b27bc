//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// event is what the tests expect of one FileCreatedEvent.
type event struct {
	path      []byte
	flags     uint32
	pid, tgid uint32
	uid, gid  uint32
	// The filesystem ids; the e2e expectations set them (createAs: the
	// same as uid and gid unless the test says otherwise).
	fsuid, fsgid uint32
	comm         []byte
	kind         fwv1.EventKind // 0: EVENT_KIND_OPEN
	// An expectation may allow several identities (pid, tgid, comm) for
	// the same creation: alts, each a whole event (io_uring runs an
	// operation in the calling thread or in one of the process's worker
	// threads, as the kernel decides).
	alts []event
}

func (e event) String() string {
	who := fmt.Sprintf("pid=%d tgid=%d comm=%q", e.pid, e.tgid, e.comm)
	if len(e.alts) > 0 {
		var ids []string
		for _, a := range e.alts {
			ids = append(ids, fmt.Sprintf("pid=%d tgid=%d comm=%q", a.pid, a.tgid, a.comm))
		}
		who = "one of: " + strings.Join(ids, ", ")
	}
	return fmt.Sprintf("path=%q flags=%d kind=%v uid=%d gid=%d fsuid=%d fsgid=%d %s", shorten(e.path), e.flags, e.kindOrOpen(),
		e.uid, e.gid, e.fsuid, e.fsgid, who)
}

func fromProto(e *fwv1.FileCreatedEvent) event {
	return event{path: e.GetPath(), flags: e.GetFlags(), pid: e.GetPid(), tgid: e.GetTgid(),
		uid: e.GetUid(), gid: e.GetGid(), fsuid: e.GetFsuid(), fsgid: e.GetFsgid(), comm: e.GetComm(), kind: e.GetKind()}
}

// kindOrOpen is e's kind, where 0 in a test's expectation means an open.
func (e event) kindOrOpen() fwv1.EventKind {
	if e.kind == fwv1.EventKind_EVENT_KIND_UNSPECIFIED {
		return fwv1.EventKind_EVENT_KIND_OPEN
	}
	return e.kind
}

// identities are the events an expectation allows: its alts, or itself.
func (e event) identities() []event {
	if len(e.alts) > 0 {
		return e.alts
	}
	return []event{e}
}

// equal says whether e (an event received) is o (an expectation).
func (e event) equal(o event) bool {
	if !bytes.Equal(e.path, o.path) || e.flags != o.flags || e.uid != o.uid || e.gid != o.gid ||
		e.fsuid != o.fsuid || e.fsgid != o.fsgid || e.kindOrOpen() != o.kindOrOpen() {
		return false
	}
	if len(o.alts) > 0 {
		return slices.ContainsFunc(o.alts, e.equal)
	}
	return e.pid == o.pid && e.tgid == o.tgid && bytes.Equal(e.comm, o.comm)
}

// shorten keeps long paths readable in failure messages.
func shorten(p []byte) []byte {
	if len(p) <= 120 {
		return p
	}
	return []byte(fmt.Sprintf("%s...(%d bytes)...%s", p[:40], len(p), p[len(p)-60:]))
}

// after returns the events a subscription received after the marker.
func after(t *testing.T, sub *subscription, marker string) []*fwv1.FileCreatedEvent {
	t.Helper()
	i := sub.waitPath([]byte(marker), 0)
	if i < 0 {
		t.Fatalf("marker %s not in the stream", marker)
	}
	events, _, _ := sub.snapshot()
	return events[i+1:]
}

// summarize keeps what the tests compare of each event.
func summarize(events []*fwv1.FileCreatedEvent) []event {
	out := make([]event, len(events))
	for i, e := range events {
		out[i] = fromProto(e)
	}
	return out
}

// assertEvents wants exactly want, in order.
func assertEvents(t *testing.T, got, want []event) {
	t.Helper()
	n := max(len(got), len(want))
	bad := 0
	for i := range n {
		switch {
		case i >= len(got):
			t.Errorf("missing event %d: %v", i, want[i])
		case i >= len(want):
			t.Errorf("unexpected event %d: %v", i, got[i])
		case !got[i].equal(want[i]):
			t.Errorf("event %d:\n got %v\nwant %v", i, got[i], want[i])
		default:
			continue
		}
		if bad++; bad >= 10 {
			t.Fatalf("giving up after 10 mismatches (%d events, want %d)", len(got), len(want))
		}
	}
}

// assertDense checks that an unfiltered stream's sequence numbers have no
// holes and that it reported no gaps.
func assertDense(t *testing.T, sub *subscription) {
	t.Helper()
	events, gaps, err := sub.snapshot()
	if err != nil {
		t.Errorf("stream error: %v", err)
	}
	for _, g := range gaps {
		t.Errorf("gap on a quiet guest: %v", g)
	}
	for i := 1; i < len(events); i++ {
		if prev, cur := events[i-1].GetSequence(), events[i].GetSequence(); cur != prev+1 {
			t.Errorf("sequence %d follows %d (event %q)", cur, prev, shorten(events[i].GetPath()))
		}
	}
	if len(events) > 0 && events[0].GetSequence() == 0 {
		t.Errorf("sequence numbers start at 1, got 0")
	}
}

// assertEventTimes checks what event equality leaves out: the monotonic
// clock in order for operations run one after another, the wall clock close
// to the host's (qemu starts the guest's clock from it), cgroup ids set.
func assertEventTimes(t *testing.T, events []*fwv1.FileCreatedEvent) {
	t.Helper()
	now := time.Now()
	for i, e := range events {
		if i > 0 && e.GetKtimeNs() < events[i-1].GetKtimeNs() {
			t.Errorf("ktime_ns goes back: %d after %d", e.GetKtimeNs(), events[i-1].GetKtimeNs())
		}
		wall := time.Unix(0, e.GetTimeUnixNano())
		if d := now.Sub(wall); d < -time.Minute || d > 30*time.Minute {
			t.Errorf("event %q at %v, host time %v", shorten(e.GetPath()), wall, now)
		}
		if e.GetCgroupId() == 0 {
			t.Errorf("event %q has cgroup id 0", shorten(e.GetPath()))
		}
	}
}
