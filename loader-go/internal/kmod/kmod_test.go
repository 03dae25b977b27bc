package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSysfs lays out what the module shows in sysfs when loaded.
func fakeSysfs(t *testing.T, loaded bool) string {
	t.Helper()
	root := t.TempDir()
	if !loaded {
		return root
	}
	files := map[string]string{
		"module/filewatcher/version":         "0.1.0\n",
		"kernel/filewatcher/events_fired":    "12345\n",
		"kernel/filewatcher/path_unresolved": "2\n",
		"kernel/filewatcher/kprobe_missed":   "7\n",
		"kernel/filewatcher/maxactive":       "4096\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestLoadUsesLoadedModule(t *testing.T) {
	m, err := Load(Options{Path: "/nonexistent.ko", Sysfs: fakeSysfs(t, true)})
	if err != nil {
		t.Fatal(err)
	}
	if m.Owned() {
		t.Error("a module loaded before must not be owned")
	}
	if err := m.Close(); err != nil {
		t.Errorf("close of a module not owned: %v", err)
	}
	if v := m.Version(); v != "0.1.0" {
		t.Errorf("version = %q", v)
	}
	c, err := m.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c != (Counters{EventsFired: 12345, PathUnresolved: 2, KprobeMissed: 7, MaxActive: 4096}) {
		t.Errorf("counters = %+v", c)
	}
}

func TestLoadNotLoaded(t *testing.T) {
	_, err := Load(Options{Sysfs: fakeSysfs(t, false)})
	if !errors.Is(err, ErrNotLoaded) || err.Error() != "module not loaded: pass --module or run make insmod" {
		t.Fatalf("error = %v", err)
	}
}

// TestLoadRefusesOtherKernel uses a fixture built for 6.1.0-56-cloud-amd64,
// which is not the kernel the tests run on.
func TestLoadRefusesOtherKernel(t *testing.T) {
	if r, _ := Release(); r == "6.1.0-56-cloud-amd64" {
		t.Skip("running the fixture's kernel")
	}
	_, err := Load(Options{Path: fixtureModule, Sysfs: fakeSysfs(t, false)})
	if !errors.Is(err, ErrVermagic) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("error = %v", err)
	}
}

func TestCountersMissing(t *testing.T) {
	m := &Module{sysfs: fakeSysfs(t, false)}
	if _, err := m.Counters(); err == nil || !strings.Contains(err.Error(), "read module counter") {
		t.Fatalf("error = %v", err)
	}
	if m.Version() != "" || m.Loaded() {
		t.Error("module reported loaded")
	}
}
