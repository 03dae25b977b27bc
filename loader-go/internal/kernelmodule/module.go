// Package kernelmodule loads, checks, inspects and unloads the filewatcher
// kernel module (../../../kmod).
//
// Nothing that does not fit the running kernel goes in: before a module file
// is inserted, its version must be the one this loader speaks, its vermagic
// must name the running kernel, and the function it will probe (the first of
// its open_functions that the kernel has) must have, in the kernel's BTF, the
// prototype the module reads. A module that is already loaded is checked the
// same way (version, forced load, the prototype of the function it probes)
// and is used, and left loaded; one this process inserted is unloaded by
// Close.
package kernelmodule

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

// Version is the module version this loader works with: the MODULE_VERSION
// of kmod/filewatcher.c (a test keeps the two equal). The sysfs counters, the
// tracepoint's layout and the open_functions list belong to it.
const Version = "0.2.0"

// ErrNotLoaded is returned when no module is loaded and none was given.
var ErrNotLoaded = errors.New("module not loaded: pass --module or run make insmod")

// ErrVersion is wrapped when a module is of another version than Version.
var ErrVersion = errors.New("module of another version")

// ErrLockdown is wrapped when kernel lockdown refused to load the module.
var ErrLockdown = errors.New("kernel lockdown refuses unsigned modules")

// Options says which module to load and how.
type Options struct {
	// Path is the .ko file to load if the module is not loaded already;
	// empty means the module must be loaded already.
	Path string
	// Params are the module parameters, e.g. "maxactive=4096".
	Params string
	// Sysfs and Procfs are where sysfs and procfs are mounted; empty means
	// /sys and /proc. The kernel's BTF is read from Sysfs/kernel/btf/vmlinux.
	Sysfs, Procfs string
	// Log receives warnings and what was decided; nil discards.
	Log *slog.Logger
}

// Module is the filewatcher module in the running kernel.
type Module struct {
	sysfs, procfs string
	owned         bool // loaded by this process, unloaded by Close
	log           *slog.Logger
}

// Load makes sure a module that fits the running kernel is loaded, loading
// opts.Path if none is.
func Load(opts Options) (*Module, error) {
	m := &Module{sysfs: opts.Sysfs, procfs: opts.Procfs, log: opts.Log}
	if m.sysfs == "" {
		m.sysfs = "/sys"
	}
	if m.procfs == "" {
		m.procfs = "/proc"
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.Loaded() {
		return m, m.useLoaded(opts.Path)
	}
	if opts.Path == "" {
		return nil, ErrNotLoaded
	}
	function, err := m.checkFile(opts.Path)
	if err != nil {
		return nil, err
	}
	if err := finit(opts.Path, opts.Params); errors.Is(err, unix.EEXIST) {
		m.log.Info("module was loaded meanwhile; checking it", "module", Name)
		return m, m.useLoaded(opts.Path)
	} else if errors.Is(err, unix.EPERM) {
		if mode := Lockdown(m.sysfs); mode != "" && mode != "none" {
			return nil, fmt.Errorf("load module %s: %w (lockdown=%s, as under Secure Boot): sign it with a key the kernel trusts, or use the eBPF-only probe (--probe bpf or auto)",
				opts.Path, ErrLockdown, mode)
		}
		return nil, err
	} else if err != nil {
		return nil, err
	}
	m.owned = true
	// The module chose by itself; it must be the function checked above.
	if got, err := m.Function(); err != nil || got != function {
		return nil, errors.Join(fmt.Errorf("%w: the module probes %q, the loader checked %s", ErrPrototype, got, function), err, m.Close())
	}
	m.log.Info("loaded kernel module", "path", opts.Path, "params", opts.Params, "version", m.Version(), "function", function)
	return m, nil
}

// checkFile checks a module file against the running kernel and returns the
// function it will probe.
func (m *Module) checkFile(path string) (string, error) {
	info, err := ModInfo(path)
	if err != nil {
		return "", err
	}
	if info["name"] != Name {
		return "", fmt.Errorf("%s is the module %q, not %s", path, info["name"], Name)
	}
	if info["version"] != Version {
		return "", fmt.Errorf("%s: %w: it is version %q, this loader needs %s: install the module built with this loader (make)", path, ErrVersion, info["version"], Version)
	}
	release, err := Release()
	if err != nil {
		return "", err
	}
	if err := CheckVermagic(info["vermagic"], release); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	spec, err := m.kernelBTF()
	if err != nil {
		return "", err
	}
	kallsyms, err := os.Open(filepath.Join(m.procfs, "kallsyms"))
	if err != nil {
		return "", fmt.Errorf("find the open function: %w", err)
	}
	defer kallsyms.Close()
	function, err := ResolveOpenFunction(strings.Fields(info["open_functions"]), kallsyms, spec)
	if err != nil {
		return "", fmt.Errorf("%s: %w; nothing was loaded", path, err)
	}
	return function, nil
}

// useLoaded checks a module someone else loaded. path, if set, is the file
// the loader would have loaded: a different build is worth a warning.
func (m *Module) useLoaded(path string) error {
	version := m.Version()
	if version != Version {
		return fmt.Errorf("the loaded module: %w: it is version %q, this loader needs %s: unload it (rmmod %s) and let the loader load its own (--module)",
			ErrVersion, version, Version, Name)
	}
	taint, _ := os.ReadFile(filepath.Join(m.sysfs, "module", Name, "taint"))
	if strings.Contains(string(taint), "F") {
		return fmt.Errorf("the loaded module was force-loaded (taint F): %w, or against other symbol versions: unload it (rmmod %s)",
			ErrVermagic, Name)
	}
	function, err := m.Function()
	if err != nil {
		return err
	}
	spec, err := m.kernelBTF()
	if err != nil {
		return err
	}
	if err := CheckPrototype(spec, function); err != nil {
		return fmt.Errorf("the loaded module probes %s: %w: unload it (rmmod %s)", function, err, Name)
	}
	if path != "" {
		if info, err := ModInfo(path); err == nil && info["srcversion"] != m.srcversion() {
			m.log.Warn("the loaded module is another build than --module; using the loaded one",
				"loaded_srcversion", m.srcversion(), "file", path, "file_srcversion", info["srcversion"])
		}
	}
	m.log.Info("using the loaded kernel module", "module", Name, "version", version, "function", function)
	return nil
}

// kernelBTF reads the running kernel's BTF, which the prototype check needs.
func (m *Module) kernelBTF() (*btf.Spec, error) {
	path := filepath.Join(m.sysfs, "kernel", "btf", "vmlinux")
	spec, err := btf.LoadSpec(path)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read the kernel's BTF (%s; kernels built without CONFIG_DEBUG_INFO_BTF have none): %w",
			ErrPrototype, path, err)
	}
	return spec, nil
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
		return fmt.Errorf("load module %s: %w (needs root or CAP_SYS_MODULE; module loading may be disabled, or kernel lockdown refuses unsigned modules: see dmesg)", path, err)
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

// Adopt makes the module this process's to unload, as if it had loaded it:
// for a loader that takes over the run of one that loaded it and died
// (loader-go/internal/kernel, --pin-dir).
func (m *Module) Adopt() { m.owned = true }

// Loaded reports whether the module is in the kernel.
func (m *Module) Loaded() bool {
	_, err := os.Stat(filepath.Join(m.sysfs, "module", Name))
	return err == nil
}

// Version returns the module's version, or "" if it has none.
func (m *Module) Version() string { return m.moduleAttr("version") }

func (m *Module) srcversion() string { return m.moduleAttr("srcversion") }

func (m *Module) moduleAttr(name string) string {
	b, err := os.ReadFile(filepath.Join(m.sysfs, "module", Name, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Function returns the kernel function the module probes.
func (m *Module) Function() (string, error) {
	b, err := os.ReadFile(filepath.Join(m.sysfs, "kernel", Name, "function"))
	if err != nil {
		return "", fmt.Errorf("read the module's probed function: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// AllRoutes is what the module's routes file says when it watches every
// creation route it knows (kmod/filewatcher.c, routes_show).
const AllRoutes = "open mknod tmpfile_link"

// Routes reads the creation routes the module watches: AllRoutes, or "open"
// on a kernel without CONFIG_SECURITY_PATH.
func (m *Module) Routes() (string, error) {
	b, err := os.ReadFile(filepath.Join(m.sysfs, "kernel", Name, "routes"))
	if err != nil {
		return "", fmt.Errorf("read the module's routes: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Close unloads the module if this process loaded it. Programs attached to
// its tracepoint must be detached first.
func (m *Module) Close() error {
	if !m.owned {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.DeleteModule(Name, unix.O_NONBLOCK)
		// EBUSY/EAGAIN: a just-closed perf event may still hold a reference.
		if err == nil || !(errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EAGAIN)) || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("unload module: %w (after 10 s; %s)", err, m.holders())
			}
			m.owned = false
			m.log.Info("unloaded kernel module", "module", Name)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// holders says what still holds the module: its reference count and the
// modules that depend on it, as sysfs shows them.
func (m *Module) holders() string {
	dir := filepath.Join(m.sysfs, "module", Name)
	refcnt, err := os.ReadFile(filepath.Join(dir, "refcnt"))
	if err != nil {
		return "its refcnt cannot be read: " + err.Error()
	}
	s := "refcnt " + strings.TrimSpace(string(refcnt))
	if entries, err := os.ReadDir(filepath.Join(dir, "holders")); err == nil && len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		s += ", held by the modules " + strings.Join(names, ", ")
	} else {
		s += " (BPF programs, links or perf events on its tracepoint that have not been released yet: bpftool link, bpftool perf; or a run pinned with --pin-dir, released when a loader stops with SIGTERM or its pins are removed)"
	}
	return s
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

// EventsFired reads how many creations the module has counted. It counts
// each after its tracepoint call has returned, so every event counted has
// had its record written to the ring, or its loss counted, by then.
func (m *Module) EventsFired() (uint64, error) { return m.counter("events_fired") }

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

// Lockdown returns the kernel's lockdown mode as sysfs/kernel/security/lockdown
// shows it ("none", "integrity" or "confidentiality"), or "" if it cannot be
// read (no securityfs mounted, or a kernel without the lockdown LSM).
func Lockdown(sysfs string) string {
	b, err := os.ReadFile(filepath.Join(sysfs, "kernel", "security", "lockdown"))
	if err != nil {
		return ""
	}
	// "none [integrity] confidentiality": the active mode is bracketed.
	s := string(b)
	i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']')
	if i < 0 || j < i {
		return ""
	}
	return s[i+1 : j]
}

// Release returns the running kernel's release (uname -r).
func Release() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}
