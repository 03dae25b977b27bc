package kmod

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const fixtureModule = "testdata/modinfo-6.1.0-56-cloud-amd64.o"

func TestModInfo(t *testing.T) {
	info, err := ModInfo(fixtureModule)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"license":  "GPL",
		"version":  "0.1.0",
		"vermagic": "6.1.0-56-cloud-amd64 SMP mod_unload modversions ",
		"name":     "filewatcher",
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
