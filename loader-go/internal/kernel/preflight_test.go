package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/filewatcher/filewatcher/loader-go/internal/bpfobj"
)

// fakeProbes answers like a kernel that lacks exactly what lacks names.
func fakeProbes(lacks ...string) featureProbes {
	answer := func(name string) error {
		for _, l := range lacks {
			if l == name {
				return ebpf.ErrNotSupported
			}
		}
		return nil
	}
	return featureProbes{
		mapType:     func(t ebpf.MapType) error { return answer(t.String()) },
		programType: func(t ebpf.ProgramType) error { return answer(t.String()) },
		helper:      func(_ ebpf.ProgramType, fn asm.BuiltinFunc) error { return answer(fn.String()) },
	}
}

// btfFile returns a path where a kernel BTF file exists (empty: preflight
// only looks for it).
func btfFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPreflight(t *testing.T) {
	spec, err := bpfobj.LoadFilewatcher()
	if err != nil {
		t.Fatal(err)
	}
	withBTF := btfFile(t)
	noBTF := filepath.Join(t.TempDir(), "vmlinux")
	tests := []struct {
		name    string
		btf     string
		lacks   []string
		wantErr string
	}{
		{"everything there", withBTF, nil, ""},
		{"no BTF", noBTF, nil, "it has no kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF); nothing was loaded"},
		{"before 5.8", withBTF, []string{"RingBuf", "FnRingbufOutput", "FnRingbufQuery"},
			"no BPF map type RingBuf (Linux 5.8), no BPF helper FnRingbufQuery (Linux 5.8), no BPF helper FnRingbufOutput (Linux 5.8)"},
		{"no tracepoint programs, no BTF", noBTF, []string{"TracePoint"},
			"no kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF), no BPF program type TracePoint (CONFIG_BPF_EVENTS)"},
		{"before 5.5", withBTF, []string{"FnProbeReadKernelStr"}, "no BPF helper FnProbeReadKernelStr (Linux 5.5)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := preflight(spec, ProbeModule.programNames(), tt.btf, fakeProbes(tt.lacks...))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrKernelUnsupported) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v\nwant %q", err, tt.wantErr)
			}
		})
	}
}

// TestPreflightProbeError: a probe that fails for another reason than a
// missing feature is an error of its own, not a verdict on the kernel.
func TestPreflightProbeError(t *testing.T) {
	spec, err := bpfobj.LoadFilewatcher()
	if err != nil {
		t.Fatal(err)
	}
	probes := fakeProbes()
	probes.mapType = func(ebpf.MapType) error { return errors.New("operation not permitted") }
	err = preflight(spec, ProbeModule.programNames(), "/nonexistent", probes)
	if err == nil || errors.Is(err, ErrKernelUnsupported) || !strings.Contains(err.Error(), "operation not permitted") {
		t.Fatalf("error = %v", err)
	}
}

// TestPreflightBPFProbe: the eBPF-only probe is checked for its own programs'
// needs (tracing programs), not the module's (tracepoint programs), and the
// helpers of tracing programs are left to the verifier (no feature test).
func TestPreflightBPFProbe(t *testing.T) {
	spec, err := bpfobj.LoadFilewatcher()
	if err != nil {
		t.Fatal(err)
	}
	withBTF := btfFile(t)
	if err := preflight(spec, ProbeBPF.programNames(), withBTF, fakeProbes("TracePoint", "FnDPath")); err != nil {
		t.Errorf("no tracepoint programs: %v, want no objection from the eBPF-only probe", err)
	}
	err = preflight(spec, ProbeBPF.programNames(), withBTF, fakeProbes("Tracing"))
	if !errors.Is(err, ErrKernelUnsupported) || !strings.HasSuffix(err.Error(), "it has no BPF program type Tracing (BPF trampolines: x86-64 since Linux 5.5, arm64 since 6.4); nothing was loaded") {
		t.Errorf("no tracing programs: error = %v", err)
	}
	noBTF := filepath.Join(t.TempDir(), "vmlinux")
	err = preflight(spec, ProbeBPF.programNames(), noBTF, fakeProbes("Tracing"))
	if !errors.Is(err, ErrKernelUnsupported) || !strings.HasSuffix(err.Error(), "it has no kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF); nothing was loaded") {
		t.Errorf("no BTF: error = %v, want only the missing BTF named", err)
	}
	if err := preflight(spec, ProbeModule.programNames(), withBTF, fakeProbes("Tracing")); err != nil {
		t.Errorf("no tracing programs: %v, want no objection from the kmod probe", err)
	}
}

// TestPreflightRunningKernel runs the real probes on the kernel the tests run
// on, which has everything the kmod probe needs (CI machines run Debian's 6.x
// with BTF, as root). The eBPF-only probe's are checked in the VM tests: this
// machine's kernel refuses tracing programs.
func TestPreflightRunningKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs the tests as root")
		}
		t.Skip("feature probes load BPF programs: needs root")
	}
	if err := Preflight("", ProbeModule); err != nil {
		t.Fatal(err)
	}
}
