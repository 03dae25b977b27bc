package kernelmodule

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// fakeKernel lays out what Load reads of a kernel: sysfs with the kernel's
// BTF (the open function as fn describes it) and, when loaded, what the
// module shows there; procfs with a kallsyms naming do_filp_open.
type fakeKernel struct {
	sysfs, procfs string
}

func newFakeKernel(t *testing.T, fn *btf.Func, loaded map[string]string) fakeKernel {
	t.Helper()
	k := fakeKernel{sysfs: t.TempDir(), procfs: t.TempDir()}
	if fn != nil {
		kernelSpec(t, k.sysfs, fn)
	}
	writeFile(t, filepath.Join(k.procfs, "kallsyms"), kallsyms61)
	for name, content := range loaded {
		writeFile(t, filepath.Join(k.sysfs, name), content)
	}
	return k
}

func (k fakeKernel) load(path string) (*Module, error) {
	return Load(Options{Path: path, Sysfs: k.sysfs, Procfs: k.procfs})
}

// loadedModule is what a loaded module of this version shows in sysfs.
func loadedModule() map[string]string {
	return map[string]string{
		"module/filewatcher/version":         Version + "\n",
		"module/filewatcher/srcversion":      "D183F1A29577052148DB89B\n",
		"module/filewatcher/taint":           "OE\n",
		"kernel/filewatcher/function":        "do_filp_open\n",
		"kernel/filewatcher/events_fired":    "12345\n",
		"kernel/filewatcher/path_unresolved": "2\n",
		"kernel/filewatcher/kprobe_missed":   "7\n",
		"kernel/filewatcher/maxactive":       "4096\n",
	}
}

func TestLoadUsesLoadedModule(t *testing.T) {
	k := newFakeKernel(t, openFunction(t, "do_filp_open", nil), loadedModule())
	m, err := k.load(writeModule(t, goodModule(t)))
	if err != nil {
		t.Fatal(err)
	}
	if m.Owned() {
		t.Error("a module loaded before must not be owned")
	}
	if err := m.Close(); err != nil {
		t.Errorf("close of a module not owned: %v", err)
	}
	if v := m.Version(); v != Version {
		t.Errorf("version = %q", v)
	}
	if fn, err := m.Function(); err != nil || fn != "do_filp_open" {
		t.Errorf("function = %q, %v", fn, err)
	}
	c, err := m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counters{EventsFired: 12345, PathUnresolved: 2, KprobeMissed: 7, MaxActive: 4096}) {
		t.Errorf("counters = %+v", c)
	}
}

// TestLoadRefusesLoadedModule: a module someone else loaded is checked like
// one the loader inserts.
func TestLoadRefusesLoadedModule(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(sysfs map[string]string)
		fn      *btf.Func
		wantIs  error
		wantErr string
	}{
		{"older version", func(s map[string]string) {
			s["module/filewatcher/version"] = "0.1.0\n"
			delete(s, "kernel/filewatcher/function")
		}, openFunction(t, "do_filp_open", nil), ErrVersion, `it is version "0.1.0", this loader needs ` + Version},
		{"force-loaded", func(s map[string]string) { s["module/filewatcher/taint"] = "OEF\n" }, openFunction(t, "do_filp_open", nil),
			ErrVermagic, "force-loaded (taint F)"},
		{"no probed function shown", func(s map[string]string) { delete(s, "kernel/filewatcher/function") }, openFunction(t, "do_filp_open", nil),
			nil, "read the module's probed function"},
		{"probes a function of another prototype", nil, openFunction(t, "do_filp_open", func(p *btf.FuncProto, _ *btf.Struct) {
			p.Params[0], p.Params[1] = p.Params[1], p.Params[0]
		}), ErrPrototype, "the loaded module probes do_filp_open"},
		{"no kernel BTF", nil, nil, ErrPrototype, "cannot read the kernel's BTF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sysfs := loadedModule()
			if tt.edit != nil {
				tt.edit(sysfs)
			}
			k := newFakeKernel(t, tt.fn, sysfs)
			_, err := k.load("")
			if err == nil || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// TestLoadRefusesModuleFile: every check on a module file fails before the
// module is inserted (the fixtures are not real modules: an insert would
// fail with another error).
func TestLoadRefusesModuleFile(t *testing.T) {
	good := openFunction(t, "do_filp_open", nil)
	tests := []struct {
		name    string
		edit    func(info map[string]string)
		fn      *btf.Func
		wantIs  error
		wantErr string
	}{
		{"another module", func(i map[string]string) { i["name"] = "other" }, good, nil, `is the module "other"`},
		{"older version", func(i map[string]string) { i["version"] = "0.1.0" }, good, ErrVersion, `it is version "0.1.0"`},
		{"another kernel", func(i map[string]string) { i["vermagic"] = "5.10.0-32-cloud-amd64 SMP mod_unload modversions " }, good,
			ErrVermagic, "module is for 5.10.0-32-cloud-amd64"},
		{"no kernel BTF", nil, nil, ErrPrototype, "kernels built without CONFIG_DEBUG_INFO_BTF"},
		{"names no function the kernel has", func(i map[string]string) { i["open_functions"] = "do_file_open" }, good,
			ErrPrototype, "has none of do_file_open"},
		{"the function has another prototype", nil, openFunction(t, "do_filp_open", func(p *btf.FuncProto, _ *btf.Struct) {
			p.Return = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
		}), ErrPrototype, "do_filp_open returns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := goodModule(t)
			if tt.edit != nil {
				tt.edit(info)
			}
			k := newFakeKernel(t, tt.fn, nil)
			_, err := k.load(writeModule(t, info))
			if err == nil || (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "load module") {
				t.Fatalf("the module was inserted despite failing a check: %v", err)
			}
		})
	}
}

func TestLoadNotLoaded(t *testing.T) {
	k := newFakeKernel(t, openFunction(t, "do_filp_open", nil), nil)
	_, err := k.load("")
	if !errors.Is(err, ErrNotLoaded) || err.Error() != "module not loaded: pass --module or run make insmod" {
		t.Fatalf("error = %v", err)
	}
}

func TestCountersMissing(t *testing.T) {
	m := &Module{sysfs: t.TempDir()}
	if _, err := m.Counters(); err == nil || !strings.Contains(err.Error(), "read module counter") {
		t.Fatalf("error = %v", err)
	}
	if m.Version() != "" || m.Loaded() {
		t.Error("module reported loaded")
	}
}

func TestLockdown(t *testing.T) {
	sysfs := t.TempDir()
	if got := Lockdown(sysfs); got != "" {
		t.Errorf("no securityfs: Lockdown = %q, want \"\"", got)
	}
	if err := os.MkdirAll(filepath.Join(sysfs, "kernel", "security"), 0o755); err != nil {
		t.Fatal(err)
	}
	for content, want := range map[string]string{
		"[none] integrity confidentiality\n": "none",
		"none [integrity] confidentiality\n": "integrity",
		"none integrity [confidentiality]\n": "confidentiality",
		"garbage\n":                          "",
	} {
		if err := os.WriteFile(filepath.Join(sysfs, "kernel", "security", "lockdown"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := Lockdown(sysfs); got != want {
			t.Errorf("Lockdown with %q = %q, want %q", content, got, want)
		}
	}
}

// TestHolders: a module that cannot be unloaded says what holds it.
func TestHolders(t *testing.T) {
	sysfs := t.TempDir()
	m := &Module{sysfs: sysfs}
	if got := m.holders(); !strings.Contains(got, "refcnt cannot be read") {
		t.Errorf("no sysfs: %q", got)
	}
	dir := filepath.Join(sysfs, "module", Name)
	if err := os.MkdirAll(filepath.Join(dir, "holders"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "refcnt"), []byte("2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := m.holders(); !strings.HasPrefix(got, "refcnt 2 (BPF programs, links or perf events") {
		t.Errorf("held by references: %q", got)
	}
	if err := os.Mkdir(filepath.Join(dir, "holders", "other"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := m.holders(); got != "refcnt 2, held by the modules other" {
		t.Errorf("held by a module: %q", got)
	}
}
