package kmod

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// fixture describes do_filp_open as Linux 6.1 to 6.18 do, modified by edit.
func fixture(t *testing.T, edit func(params []btf.FuncParam, flags *btf.Struct)) *btf.Spec {
	t.Helper()
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u16 := &btf.Int{Name: "unsigned short", Size: 2}
	flags := &btf.Struct{Name: "open_flags", Size: 20, Members: []btf.Member{
		{Name: "open_flag", Type: i32, Offset: 0},
		{Name: "mode", Type: u16, Offset: 32},
		{Name: "acc_mode", Type: i32, Offset: 64},
		{Name: "intent", Type: i32, Offset: 96},
		{Name: "lookup_flags", Type: i32, Offset: 128},
	}}
	filename := &btf.Struct{Name: "filename", Size: 0}
	file := &btf.Struct{Name: "file", Size: 0}
	params := []btf.FuncParam{
		{Name: "dfd", Type: i32},
		{Name: "pathname", Type: &btf.Pointer{Target: filename}},
		{Name: "op", Type: &btf.Pointer{Target: &btf.Const{Type: flags}}},
	}
	if edit != nil {
		edit(params, flags)
	}
	fn := &btf.Func{Name: "do_filp_open", Linkage: btf.GlobalFunc, Type: &btf.FuncProto{
		Return: &btf.Pointer{Target: file}, Params: params,
	}}
	b, err := btf.NewBuilder([]btf.Type{fn}, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestCheckSignature(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(params []btf.FuncParam, flags *btf.Struct)
		wantErr string
	}{
		{"matches", nil, ""},
		{"renamed parameter", func(p []btf.FuncParam, _ *btf.Struct) { p[2].Name = "flags" }, "parameters are [dfd pathname flags]"},
		{"op not a pointer", func(p []btf.FuncParam, _ *btf.Struct) { p[2].Type = &btf.Int{Name: "int", Size: 4} }, "want a pointer"},
		{"op points elsewhere", func(p []btf.FuncParam, _ *btf.Struct) {
			p[2].Type = &btf.Pointer{Target: &btf.Struct{Name: "open_how", Size: 24}}
		}, "want struct open_flags"},
		{"open_flag moved", func(_ []btf.FuncParam, f *btf.Struct) {
			f.Members[0].Name, f.Members[1].Name = "mode", "open_flag"
			f.Members[1].Type = &btf.Int{Name: "int", Size: 4}
		}, "bit offset 32"},
		{"open_flag gone", func(_ []btf.FuncParam, f *btf.Struct) { f.Members[0].Name = "flags" }, "no member open_flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSignature(fixture(t, tt.edit))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckSignatureMissing(t *testing.T) {
	b, err := btf.NewBuilder([]btf.Type{&btf.Int{Name: "int", Size: 4}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckSignature(spec); !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), "find do_filp_open") {
		t.Fatalf("error = %v", err)
	}
}

// TestCheckSignatureRunningKernel checks the real BTF of the kernel the
// tests run on, where there is one.
func TestCheckSignatureRunningKernel(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI machines have kernel BTF, this one has none:", err)
		}
		t.Skip("no kernel BTF:", err)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckSignature(spec); err != nil {
		t.Fatal(err)
	}
}
