package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/filewatcher/filewatcher/loader-go/internal/config"
	"github.com/filewatcher/filewatcher/loader-go/internal/kernel"
	"github.com/filewatcher/filewatcher/loader-go/internal/kernelmodule"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"golang.org/x/sys/unix"
)

func TestFallbackReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{kernelmodule.ErrNotLoaded, reasonNoModule},
		{fmt.Errorf("load module x.ko: %w (lockdown=integrity): %w", kernelmodule.ErrLockdown, unix.EPERM), reasonLockdown},
		{fmt.Errorf("load module x.ko: %w (this kernel cannot load modules)", unix.ENOSYS), reasonNoModuleSupport},
		{fmt.Errorf("x.ko: %w: built for 6.1.0-9-amd64", kernelmodule.ErrVermagic), reasonModuleMismatch},
		{fmt.Errorf("x.ko: %w: it is version 0.1.0", kernelmodule.ErrVersion), reasonModuleMismatch},
		{fmt.Errorf("x.ko: %w: do_filp_open has 4 parameters", kernelmodule.ErrPrototype), reasonModuleMismatch},
		{fmt.Errorf("%w: it has no BPF map type RingBuf", kernel.ErrKernelUnsupported), reasonKernelUnsupported},
		{fmt.Errorf("load module x.ko: %w (invalid module)", unix.ENOEXEC), reasonModuleError},
		// Without lockdown to blame, EPERM is some other refusal.
		{fmt.Errorf("load module x.ko: %w", unix.EPERM), reasonModuleError},
	}
	for _, tt := range tests {
		if got := fallbackReason(tt.err); got != tt.want {
			t.Errorf("fallbackReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

// TestOpenProbe: what runs under each --probe, and what it says.
func TestOpenProbe(t *testing.T) {
	modSrc, bpfSrc := &source{name: "kmod"}, &source{name: "bpf"}
	ok := func(s *source) func() (*source, error) { return func() (*source, error) { return s, nil } }
	fail := func(err error) func() (*source, error) { return func() (*source, error) { return nil, err } }
	lockdown := fmt.Errorf("load module /x.ko: %w (lockdown=integrity)", kernelmodule.ErrLockdown)
	noTrampoline := fmt.Errorf("%w: attach fexit do_filp_open: not supported", kernel.ErrBPFProbe)
	tests := []struct {
		name       string
		probe      string
		open       kernelOpeners
		want       *source
		wantChoice probeChoice
		wantErr    []string // substrings of the error
		wantLog    string   // substring of the log
	}{
		{"kmod", config.ProbeKmod, kernelOpeners{ok(modSrc), ok(bpfSrc)}, modSrc,
			probeChoice{kernel.ProbeModule, reasonRequested, ""}, nil, ""},
		{"kmod does not fall back", config.ProbeKmod, kernelOpeners{fail(lockdown), ok(bpfSrc)}, nil,
			probeChoice{kernel.ProbeModule, reasonRequested, ""}, []string{"lockdown=integrity"}, ""},
		{"bpf", config.ProbeBPF, kernelOpeners{ok(modSrc), ok(bpfSrc)}, bpfSrc,
			probeChoice{kernel.ProbeBPF, reasonRequested, ""}, nil, ""},
		{"bpf does not fall back", config.ProbeBPF, kernelOpeners{ok(modSrc), fail(noTrampoline)}, nil,
			probeChoice{kernel.ProbeBPF, reasonRequested, ""}, []string{"attach fexit"}, ""},
		{"auto with a module", config.ProbeAuto, kernelOpeners{ok(modSrc), ok(bpfSrc)}, modSrc,
			probeChoice{kernel.ProbeModule, reasonModule, ""}, nil, ""},
		{"auto under lockdown", config.ProbeAuto, kernelOpeners{fail(lockdown), ok(bpfSrc)}, bpfSrc,
			probeChoice{kernel.ProbeBPF, reasonLockdown, lockdown.Error()}, nil,
			`msg="not using the kernel module: using the eBPF-only probe" reason=lockdown`},
		{"auto, neither", config.ProbeAuto, kernelOpeners{fail(lockdown), fail(noTrampoline)}, nil,
			probeChoice{kernel.ProbeBPF, reasonLockdown, lockdown.Error()},
			[]string{"no probe can run", "the kernel module: load module /x.ko", "the eBPF-only probe: the eBPF-only probe cannot run"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			got, choice, err := openProbe(config.Config{Probe: tt.probe}, tt.open, slog.New(slog.NewTextHandler(&logs, nil)))
			if got != tt.want || choice != tt.wantChoice {
				t.Errorf("got %v %+v, want %v %+v", got, choice, tt.want, tt.wantChoice)
			}
			if (err != nil) != (len(tt.wantErr) > 0) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %q lacks %q", logs.String(), tt.wantLog)
			}
			if choice.reason == reasonModule || choice.reason == reasonRequested {
				if logs.Len() != 0 {
					t.Errorf("logged %q, want nothing when the wanted probe runs", logs.String())
				}
			}
		})
	}
}

func TestProbeChoiceStatus(t *testing.T) {
	var resp pb.GetStatusResponse
	probeChoice{kernel.ProbeBPF, reasonLockdown, "lockdown!"}.FillStatus(&resp)
	if resp.ProbeReason != reasonLockdown || resp.ProbeDetail != "lockdown!" {
		t.Errorf("status %v", &resp)
	}
}

// TestOpenKernelHere: on this host (no module support, tracing programs
// refused) --probe auto says why neither probe runs, naming both.
func TestOpenKernelHere(t *testing.T) {
	if unix.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI runs the tests as root")
		}
		t.Skip("needs root to probe the kernel")
	}
	src, err := openKernel(config.Config{Probe: config.ProbeAuto, RingbufSize: 1 << 16}, "", slog.New(slog.DiscardHandler))
	if err == nil {
		// A host that runs a probe: it must say which, and why.
		defer src.close(false)
		var resp pb.GetStatusResponse
		for _, f := range src.status {
			f.FillStatus(&resp)
		}
		if resp.Probe == "" || resp.ProbeReason == "" || resp.ProbeFunction == "" {
			t.Errorf("a probe runs here, but the status says probe %q, reason %q, function %q", resp.Probe, resp.ProbeReason, resp.ProbeFunction)
		}
		return
	}
	for _, w := range []string{"no probe can run", "the kernel module: ", "the eBPF-only probe: "} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if !errors.Is(err, kernelmodule.ErrNotLoaded) {
		t.Errorf("error %v: want the module's ErrNotLoaded (no --module) in it", err)
	}
}
