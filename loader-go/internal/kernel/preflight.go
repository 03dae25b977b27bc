package kernel

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"
	"github.com/filewatcher/filewatcher/loader-go/internal/bpfobj"
)

// ErrKernelUnsupported is wrapped by Preflight's refusal.
var ErrKernelUnsupported = errors.New("this kernel cannot run filewatcher")

// featureProbes are the kernel feature tests Preflight runs; tests replace them.
type featureProbes struct {
	mapType     func(ebpf.MapType) error
	programType func(ebpf.ProgramType) error
	helper      func(ebpf.ProgramType, asm.BuiltinFunc) error
}

var kernelProbes = featureProbes{features.HaveMapType, features.HaveProgramType, features.HaveProgramHelper}

// Since when Linux has what the program needs, for the refusal's message.
var since = map[string]string{
	kernelBTF:                                         "CONFIG_DEBUG_INFO_BTF",
	"BPF map type " + ebpf.RingBuf.String():           "Linux 5.8",
	"BPF program type " + ebpf.TracePoint.String():    "CONFIG_BPF_EVENTS",
	"BPF program type " + ebpf.Tracing.String():       "BPF trampolines: x86-64 since Linux 5.5, arm64 since 6.4",
	"BPF helper " + asm.FnRingbufOutput.String():      "Linux 5.8",
	"BPF helper " + asm.FnRingbufQuery.String():       "Linux 5.8",
	"BPF helper " + asm.FnProbeReadKernelStr.String(): "Linux 5.5",
	"BPF helper " + asm.FnGetCurrentCgroupId.String(): "Linux 4.18",
}

const kernelBTF = "kernel BTF at /sys/kernel/btf/vmlinux"

// Preflight checks, before anything is loaded into the kernel, that it has
// what probe needs: its BTF (the module's prototype check and the eBPF-only
// probe's relocations read it) under sysfs (empty: /sys), and every map type,
// program type and helper the probe's BPF programs use, as the programs' own
// object lists them. It names everything missing at once. (The kernel has no
// feature test for the helpers of tracing programs, the eBPF-only probe's:
// the verifier names those when the probe loads.)
func Preflight(sysfs string, probe Probe) error {
	if sysfs == "" {
		sysfs = "/sys"
	}
	spec, err := bpfobj.LoadFilewatcher()
	if err != nil {
		return fmt.Errorf("load BPF spec: %w", err)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, and the probes
	// below create maps and programs.
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("remove memlock limit: %w", err)
	}
	return preflight(spec, probe.programNames(), filepath.Join(sysfs, "kernel", "btf", "vmlinux"), kernelProbes)
}

// programNames are the BPF programs of a probe, as Open loads them.
func (p Probe) programNames() []string {
	if p == ProbeBPF {
		return []string{bpfobj.FilewatcherProgFentrySecurityFileOpen, bpfobj.FilewatcherProgFexitOpen}
	}
	return []string{bpfobj.FilewatcherProgFileCreated}
}

func preflight(spec *ebpf.CollectionSpec, programs []string, btfPath string, probe featureProbes) error {
	var missing []string
	named := map[string]bool{} // each missing thing once, though several programs need it
	lack := func(what string, err error) error {
		if errors.Is(err, ebpf.ErrNotSupported) && named[what] {
			return nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			named[what] = true
			if s := since[what]; s != "" {
				what += " (" + s + ")"
			}
			missing = append(missing, what)
			return nil
		}
		if err != nil {
			return fmt.Errorf("probe the kernel for %s: %w", what, err)
		}
		return nil
	}
	haveBTF := true
	if _, err := os.Stat(btfPath); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("kernel BTF: %w", err)
		}
		_ = lack(kernelBTF, ebpf.ErrNotSupported)
		haveBTF = false
	}
	for _, name := range slices.Sorted(maps.Keys(spec.Maps)) {
		if err := lack("BPF map type "+spec.Maps[name].Type.String(), probe.mapType(spec.Maps[name].Type)); err != nil {
			return err
		}
	}
	for _, name := range programs {
		p := spec.Programs[name]
		if p == nil {
			return fmt.Errorf("the BPF object has no program %s", name)
		}
		if p.Type == ebpf.Tracing {
			// Tracing programs attach by BTF: without it the kernel's
			// answer says nothing more than "no BTF".
			if haveBTF {
				if err := lack("BPF program type "+p.Type.String(), probe.programType(p.Type)); err != nil {
					return err
				}
			}
			continue
		}
		if err := lack("BPF program type "+p.Type.String(), probe.programType(p.Type)); err != nil {
			return err
		}
		for _, fn := range helpers(p.Instructions) {
			if err := lack("BPF helper "+fn.String(), probe.helper(p.Type, fn)); err != nil {
				return err
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: it has no %s; nothing was loaded", ErrKernelUnsupported, strings.Join(missing, ", no "))
	}
	return nil
}

// helpers lists the BPF helpers insns call, each once, in order.
func helpers(insns asm.Instructions) []asm.BuiltinFunc {
	seen := map[asm.BuiltinFunc]bool{}
	var fns []asm.BuiltinFunc
	for _, ins := range insns {
		if !ins.IsBuiltinCall() {
			continue
		}
		fn := asm.BuiltinFunc(ins.Constant)
		if !seen[fn] {
			seen[fn] = true
			fns = append(fns, fn)
		}
	}
	return fns
}
