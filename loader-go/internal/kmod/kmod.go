// Package kmod loads, inspects and unloads the filewatcher kernel module.
//
// Before loading a module file it checks that the file was built for the
// running kernel (vermagic) and that the running kernel's do_filp_open still
// has the signature the module's kretprobe relies on (BTF). A module that is
// already loaded is used as it is and left loaded; one this process loads is
// unloaded by Close.
package kmod

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Name is the module's name.
const Name = "filewatcher"

// ErrNotLoaded is returned when no module is loaded and none was given.
var ErrNotLoaded = errors.New("module not loaded: pass --module or run make insmod")

// Options says which module to load and how.
type Options struct {
	// Path is the .ko file to load if the module is not loaded already;
	// empty means the module must be loaded already.
	Path string
	// Params are the module parameters, e.g. "maxactive=4096".
	Params string
	// Force loads the module despite failed vermagic or signature checks.
	Force bool
	// Sysfs is where sysfs is mounted; empty means /sys.
	Sysfs string
	// Log receives warnings and what was decided; nil discards.
	Log *slog.Logger
}

// Module is the filewatcher module in the running kernel.
type Module struct {
	sysfs string
	owned bool // loaded by this process, unloaded by Close
	log   *slog.Logger
}

// Load makes sure the module is loaded, loading opts.Path if needed.
func Load(opts Options) (*Module, error) {
	m := &Module{sysfs: opts.Sysfs, log: opts.Log}
	if m.sysfs == "" {
		m.sysfs = "/sys"
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.Loaded() {
		m.log.Info("using the loaded kernel module", "module", Name, "version", m.Version())
		return m, nil
	}
	if opts.Path == "" {
		return nil, ErrNotLoaded
	}
	if err := check(opts.Path); err != nil {
		if !opts.Force {
			return nil, fmt.Errorf("%w (pass --force to load it anyway)", err)
		}
		m.log.Warn("loading the module despite a failed check (--force)", "error", err)
	}
	if err := finit(opts.Path, opts.Params); errors.Is(err, unix.EEXIST) {
		m.log.Info("module was loaded meanwhile; using it", "module", Name)
		return m, nil
	} else if err != nil {
		return nil, err
	}
	m.owned = true
	m.log.Info("loaded kernel module", "path", opts.Path, "params", opts.Params, "version", m.Version())
	return m, nil
}

// check runs the vermagic and signature checks on a module file.
func check(path string) error {
	info, err := ModInfo(path)
	if err != nil {
		return err
	}
	release, err := Release()
	if err != nil {
		return err
	}
	if err := CheckVermagic(info["vermagic"], release); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("%w: cannot read the kernel's BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): %w", ErrSignature, err)
	}
	return CheckSignature(spec)
}

func finit(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open module: %w", err)
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), params, 0)
	switch {
	case err == nil, errors.Is(err, unix.EEXIST):
		return err
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("load module %s: %w (needs root or CAP_SYS_MODULE; module loading may be disabled)", path, err)
	case errors.Is(err, unix.ENOEXEC):
		return fmt.Errorf("load module %s: %w (invalid module: built for another kernel or architecture? see dmesg)", path, err)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("load module %s: %w (this kernel cannot load modules)", path, err)
	default:
		return fmt.Errorf("load module %s: %w (see dmesg)", path, err)
	}
}

// Owned reports whether this process loaded the module.
func (m *Module) Owned() bool { return m.owned }

// Loaded reports whether the module is in the kernel.
func (m *Module) Loaded() bool {
	_, err := os.Stat(filepath.Join(m.sysfs, "module", Name))
	return err == nil
}

// Version returns the module's version, or "" if it has none.
func (m *Module) Version() string {
	b, err := os.ReadFile(filepath.Join(m.sysfs, "module", Name, "version"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Close unloads the module if this process loaded it. Programs attached to
// its tracepoint must be detached first.
func (m *Module) Close() error {
	if !m.owned {
		return nil
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := unix.DeleteModule(Name, unix.O_NONBLOCK)
		// EBUSY/EAGAIN: a just-closed perf event may still hold a reference.
		if err == nil || !(errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EAGAIN)) || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("unload module: %w", err)
			}
			m.owned = false
			m.log.Info("unloaded kernel module", "module", Name)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Counters are the module's own counters, from sysfs.
type Counters struct {
	EventsFired    uint64 // tracepoint hits
	PathUnresolved uint64 // events whose absolute path could not be resolved
	KprobeMissed   uint64 // kretprobe misses (maxactive too small)
	MaxActive      uint64 // the kretprobe's maxactive
}

// Counters reads the module's counters.
func (m *Module) Counters() (Counters, error) {
	var c Counters
	for _, f := range []struct {
		name string
		dst  *uint64
	}{
		{"events_fired", &c.EventsFired},
		{"path_unresolved", &c.PathUnresolved},
		{"kprobe_missed", &c.KprobeMissed},
		{"maxactive", &c.MaxActive},
	} {
		v, err := m.counter(f.name)
		if err != nil {
			return Counters{}, err
		}
		*f.dst = v
	}
	return c, nil
}

// KprobeMissed reads the kretprobe's missed count.
func (m *Module) KprobeMissed() (uint64, error) { return m.counter("kprobe_missed") }

func (m *Module) counter(name string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(m.sysfs, "kernel", Name, name))
	if err != nil {
		return 0, fmt.Errorf("read module counter: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read module counter %s: %w", name, err)
	}
	return v, nil
}

// Release returns the running kernel's release (uname -r).
func Release() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}
