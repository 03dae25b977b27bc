package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"unsafe"

	"github.com/filewatcher/filewatcher/loader-go/internal/config"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"github.com/filewatcher/filewatcher/loader-go/internal/kernel"
	"github.com/filewatcher/filewatcher/loader-go/internal/kernelmodule"
	"github.com/filewatcher/filewatcher/loader-go/internal/server"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"golang.org/x/sys/unix"
)

// This file is where the loader decides which probe sees the creations
// (--probe) and says why: in one log line, in GetStatus (probe,
// probe_reason, probe_detail) and so in the exporter's
// filewatcher_loader_info.
//
//	--probe kmod  the module, or fail                     reason "requested"
//	--probe bpf   the eBPF-only probe, or fail            reason "requested"
//	--probe auto  the module if it loads and passes every check: "module";
//	              else the eBPF-only probe, reason why the module was not
//	              used (fallbackReason), detail the module's error
//
// Under the eBPF-only probe the loader needs no CAP_SYS_MODULE and drops it.

// Reasons in GetStatus.probe_reason (documented in the proto).
const (
	reasonRequested         = "requested"
	reasonModule            = "module"
	reasonNoModule          = "no_module"
	reasonLockdown          = "lockdown"
	reasonNoModuleSupport   = "no_module_support"
	reasonModuleMismatch    = "module_mismatch"
	reasonKernelUnsupported = "kernel_unsupported"
	reasonModuleError       = "module_error"
)

// probeChoice is the probe that runs, and why.
type probeChoice struct {
	probe  kernel.Probe
	reason string
	detail string
}

// FillStatus adds the choice to a status report.
func (c probeChoice) FillStatus(resp *pb.GetStatusResponse) {
	resp.ProbeReason = c.reason
	resp.ProbeDetail = c.detail
}

// fallbackReason says, for GetStatus, why the module could not be used.
func fallbackReason(err error) string {
	switch {
	case errors.Is(err, kernelmodule.ErrNotLoaded):
		return reasonNoModule
	case errors.Is(err, kernelmodule.ErrLockdown):
		return reasonLockdown
	case errors.Is(err, unix.ENOSYS):
		return reasonNoModuleSupport
	case errors.Is(err, kernelmodule.ErrVersion), errors.Is(err, kernelmodule.ErrVermagic), errors.Is(err, kernelmodule.ErrPrototype):
		return reasonModuleMismatch
	case errors.Is(err, kernel.ErrKernelUnsupported):
		return reasonKernelUnsupported
	default:
		return reasonModuleError
	}
}

// kernelOpeners open each probe; tests replace them.
type kernelOpeners struct {
	module func() (*source, error)
	bpf    func() (*source, error)
}

// openProbe opens the probe cfg.Probe asks for.
func openProbe(cfg config.Config, open kernelOpeners, log *slog.Logger) (*source, probeChoice, error) {
	switch cfg.Probe {
	case config.ProbeKmod:
		src, err := open.module()
		return src, probeChoice{kernel.ProbeModule, reasonRequested, ""}, err
	case config.ProbeBPF:
		src, err := open.bpf()
		return src, probeChoice{kernel.ProbeBPF, reasonRequested, ""}, err
	}
	src, merr := open.module()
	if merr == nil {
		return src, probeChoice{kernel.ProbeModule, reasonModule, ""}, nil
	}
	choice := probeChoice{kernel.ProbeBPF, fallbackReason(merr), merr.Error()}
	log.Warn("not using the kernel module: using the eBPF-only probe", "reason", choice.reason, "error", merr)
	src, berr := open.bpf()
	if berr != nil {
		return nil, choice, fmt.Errorf("no probe can run: the kernel module: %w; the eBPF-only probe: %w", merr, berr)
	}
	return src, choice, nil
}

// openKernel opens the kernel source with the probe cfg asks for.
func openKernel(cfg config.Config, runID string, log *slog.Logger) (*source, error) {
	opts := kernel.Options{RingbufSize: uint32(cfg.RingbufSize), Log: log, MountTracefs: true,
		PinDir: cfg.PinDir, RunID: runID}
	wrap := func(k *kernel.Source, closeAlso func() error) *source {
		return &source{
			name:   k.Name(),
			run:    func(ctx context.Context, h *hub.Hub) error { return k.Run(ctx, h) },
			status: []server.StatusFiller{k},
			close: func(handover bool) error {
				if handover && k.Pinned() {
					// The pinned attachment holds the module, and the
					// next loader takes both over.
					return k.Handover()
				}
				// Detach before unloading: the attached program pins the module.
				return errors.Join(k.Close(), closeAlso())
			},
			resumed: k.Resumed(),
		}
	}
	open := kernelOpeners{
		module: func() (*source, error) {
			// Refuse a kernel that cannot run the program before loading anything.
			if err := kernel.Preflight("", kernel.ProbeModule); err != nil {
				return nil, err
			}
			mod, err := kernelmodule.Load(kernelmodule.Options{Path: cfg.Module, Params: cfg.ModuleParams, Log: log})
			if err != nil {
				return nil, err
			}
			o := opts
			o.Probe, o.Module = kernel.ProbeModule, mod
			k, err := kernel.Open(o)
			if err != nil {
				return nil, errors.Join(err, mod.Close())
			}
			return wrap(k, mod.Close), nil
		},
		bpf: func() (*source, error) {
			if err := kernel.Preflight("", kernel.ProbeBPF); err != nil {
				return nil, err
			}
			o := opts
			o.Probe = kernel.ProbeBPF
			k, err := kernel.Open(o)
			if err != nil {
				return nil, err
			}
			return wrap(k, func() error { return nil }), nil
		},
	}
	src, choice, err := openProbe(cfg, open, log)
	if err != nil {
		return nil, err
	}
	src.status = append(src.status, choice)
	if choice.probe == kernel.ProbeBPF {
		if cfg.Module != "" {
			log.Info("--module is not used by the eBPF-only probe", "module", cfg.Module)
		}
		if err := dropModuleCapability(log); err != nil {
			log.Warn("cannot drop CAP_SYS_MODULE", "error", err)
		}
	}
	log.Info("probe chosen", "probe", choice.probe, "reason", choice.reason)
	return src, nil
}

// dropModuleCapability removes CAP_SYS_MODULE from every thread's effective,
// permitted and inheritable sets (so from the ambient set too), and from the
// bounding set where the loader may change it (CAP_SETPCAP: as root, not in
// the systemd unit, whose NoNewPrivileges= already keeps an exec from
// gaining it back): the eBPF-only probe never loads or unloads a module, so
// a compromised loader cannot either.
func dropModuleCapability(log *slog.Logger) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	bit := uint32(1) << (unix.CAP_SYS_MODULE % 32)
	i := unix.CAP_SYS_MODULE / 32
	data[i].Effective &^= bit
	data[i].Permitted &^= bit
	data[i].Inheritable &^= bit
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return fmt.Errorf("capset: %w", errno)
	}
	if _, _, errno := syscall.AllThreadsSyscall(syscall.SYS_PRCTL, unix.PR_CAPBSET_DROP, unix.CAP_SYS_MODULE, 0); errno == unix.EPERM {
		log.Debug("CAP_SYS_MODULE stays in the bounding set (no CAP_SETPCAP); it is gone from the other sets")
	} else if errno != 0 {
		return fmt.Errorf("prctl(PR_CAPBSET_DROP): %w", errno)
	}
	return nil
}
