package bpfobj

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
)

// TestVerifier loads the kmod probe's programs (on the tracepoint and on its
// raw form) and maps into the running kernel, which runs the verifier. Attaching needs the module's tracepoint and
// is left to the VM tests; loading does not. The eBPF-only probe's programs
// are tracing programs, which the kernel verifies against the functions they
// attach to, and which this machine's kernel does not let us load: the VM
// tests load them on every kernel they boot.
func TestVerifier(t *testing.T) {
	requireBPF(t)
	spec, err := LoadFilewatcher()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []uint32{4096, 1 << 24} {
		spec.Maps[FilewatcherMapEvents].MaxEntries = size
		var objs struct {
			FilewatcherMaps
			FileCreated    *ebpf.Program `ebpf:"file_created"`
			FileCreatedRaw *ebpf.Program `ebpf:"file_created_raw"`
		}
		if err := spec.LoadAndAssign(&objs, nil); err != nil {
			var verr *ebpf.VerifierError
			if errors.As(err, &verr) {
				t.Fatalf("verifier rejected the program:\n%+v", verr)
			}
			t.Fatalf("load with ring size %d: %v", size, err)
		}
		info, err := objs.Events.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.MaxEntries != size {
			t.Errorf("ring size = %d, want %d", info.MaxEntries, size)
		}
		if err := errors.Join(objs.FilewatcherMaps.Close(), objs.FileCreated.Close(), objs.FileCreatedRaw.Close()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLayout pins the record header layout that the kernel source decodes by
// hand: 80 bytes, path right after it.
func TestLayout(t *testing.T) {
	var h FilewatcherEventHdr
	if got := binary.Size(h); got != 80 {
		t.Errorf("header size = %d, want 80", got)
	}
	offsets := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"ktime_ns", unsafe.Offsetof(h.KtimeNs), 0},
		{"cgroup_id", unsafe.Offsetof(h.CgroupId), 8},
		{"pid", unsafe.Offsetof(h.Pid), 16},
		{"tgid", unsafe.Offsetof(h.Tgid), 20},
		{"uid", unsafe.Offsetof(h.Uid), 24},
		{"gid", unsafe.Offsetof(h.Gid), 28},
		{"flags", unsafe.Offsetof(h.Flags), 32},
		{"path_len", unsafe.Offsetof(h.PathLen), 36},
		{"comm", unsafe.Offsetof(h.Comm), 40},
		{"stream_seq", unsafe.Offsetof(h.StreamSeq), 56},
		{"cpu", unsafe.Offsetof(h.Cpu), 64},
		{"slot", unsafe.Offsetof(h.Slot), 68},
		{"fsuid", unsafe.Offsetof(h.Fsuid), 72},
		{"fsgid", unsafe.Offsetof(h.Fsgid), 76},
	}
	for _, o := range offsets {
		if o.got != o.want {
			t.Errorf("offset of %s = %d, want %d", o.name, o.got, o.want)
		}
	}
	var p FilewatcherPending
	if off := unsafe.Offsetof(p.Ev.Path); off != 80 {
		t.Errorf("path offset = %d, want 80", off)
	}
}

// requireBPF skips the test where BPF cannot be used (not root), except in CI
// (CI=true), where it must run.
func requireBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		t.Skip("loading BPF programs needs root")
	}
}
