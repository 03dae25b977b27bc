package kernelmodule

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestModInfo(t *testing.T) {
	want := goodModule(t)
	info, err := ModInfo(writeModule(t, want))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		if info[k] != v {
			t.Errorf("%s = %q, want %q", k, info[k], v)
		}
	}
}

func TestModInfoNotAModule(t *testing.T) {
	notELF := filepath.Join(t.TempDir(), "x.ko")
	if err := os.WriteFile(notELF, []byte("this is not an ELF file at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable() // an ELF file without .modinfo
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{notELF: "bad magic", exe: "no .modinfo", "/nonexistent.ko": "no such file"} {
		if _, err := ModInfo(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ModInfo(%s) = %v, want %q", path, err, want)
		}
	}
}

func TestCheckVermagic(t *testing.T) {
	tests := []struct {
		vermagic, release string
		wantErr           string
	}{
		{"6.1.0-56-cloud-amd64 SMP mod_unload modversions ", "6.1.0-56-cloud-amd64", ""},
		{"6.12.95+deb12-cloud-amd64 SMP preempt mod_unload", "6.12.95+deb12-cloud-amd64", ""},
		{"7.3.4+deb13-cloud-arm64 SMP preempt mod_unload aarch64", "7.3.4+deb13-cloud-arm64", ""},
		{"6.1.0-56-cloud-amd64 SMP mod_unload", "6.12.95+deb12-cloud-amd64", "module is for 6.1.0-56-cloud-amd64, running 6.12.95+deb12-cloud-amd64"},
		{"6.1.0-56-cloud-amd64 SMP", "6.1.0-56", "module is for"},
		{"", "6.1.0-56-cloud-amd64", "no vermagic"},
	}
	for _, tt := range tests {
		err := CheckVermagic(tt.vermagic, tt.release)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%q on %s: %v", tt.vermagic, tt.release, err)
			}
			continue
		}
		if !errors.Is(err, ErrVermagic) || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%q on %s: %v, want %q", tt.vermagic, tt.release, err, tt.wantErr)
		}
	}
}

// TestVersionIsTheModules keeps Version equal to the module source's
// MODULE_VERSION, and the module's open_functions equal to what the tests
// here assume.
func TestVersionIsTheModules(t *testing.T) {
	src, err := os.ReadFile("../../../kmod/filewatcher.c")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^MODULE_VERSION\("([^"]*)"\);$`).FindSubmatch(src)
	if m == nil || string(m[1]) != Version {
		t.Errorf("kmod/filewatcher.c has MODULE_VERSION %q, the loader's Version is %q", m, Version)
	}
	f := regexp.MustCompile(`(?m)^#define FW_OPEN_FUNCTIONS "([^"]*)"$`).FindSubmatch(src)
	if f == nil || string(f[1]) != goodModule(t)["open_functions"] {
		t.Errorf("kmod/filewatcher.c has FW_OPEN_FUNCTIONS %q, the tests assume %q", f, goodModule(t)["open_functions"])
	}
}
