package kernelmodule

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

func TestCheckPrototype(t *testing.T) {
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	tests := []struct {
		name    string
		edit    func(p *btf.FuncProto, flags *btf.Struct)
		wantErr string
	}{
		{"matches", nil, ""},
		{"parameter names do not matter", func(p *btf.FuncProto, _ *btf.Struct) { p.Params[2].Name = "flags" }, ""},
		{"returns an int", func(p *btf.FuncProto, _ *btf.Struct) { p.Return = i32 }, "returns int: is int, want a pointer to struct file"},
		{"returns another struct", func(p *btf.FuncProto, _ *btf.Struct) {
			p.Return = &btf.Pointer{Target: &btf.Struct{Name: "dentry"}}
		}, "returns struct dentry *: is struct dentry *, want a pointer to struct file"},
		{"two parameters", func(p *btf.FuncProto, _ *btf.Struct) { p.Params = p.Params[:2] }, "has 2 parameters (dfd, pathname)"},
		{"dfd unsigned", func(p *btf.FuncProto, _ *btf.Struct) {
			p.Params[0].Type = &btf.Int{Name: "unsigned int", Size: 4}
		}, "first parameter dfd is unsigned int, want int"},
		{"pathname a string", func(p *btf.FuncProto, _ *btf.Struct) {
			p.Params[1].Type = &btf.Pointer{Target: &btf.Int{Name: "char", Size: 1}}
		}, "second parameter pathname: is char *, want a pointer to struct filename"},
		{"op not a pointer", func(p *btf.FuncProto, _ *btf.Struct) { p.Params[2].Type = i32 }, "third parameter op: is int, want a pointer to struct open_flags"},
		{"op points elsewhere", func(p *btf.FuncProto, _ *btf.Struct) {
			p.Params[2].Type = &btf.Pointer{Target: &btf.Struct{Name: "open_how", Size: 24}}
		}, "third parameter op: is struct open_how *, want a pointer to struct open_flags"},
		{"open_flag moved", func(_ *btf.FuncProto, f *btf.Struct) {
			f.Members[0].Name, f.Members[1].Name = "mode", "open_flag"
			f.Members[1].Type = i32
		}, "bit offset 32"},
		{"open_flag narrowed", func(_ *btf.FuncProto, f *btf.Struct) {
			f.Members[0].Type = &btf.Int{Name: "short", Size: 2, Encoding: btf.Signed}
		}, "open_flag as short at bit offset 0, want a 4-byte int at offset 0"},
		{"open_flag gone", func(_ *btf.FuncProto, f *btf.Struct) { f.Members[0].Name = "flags" }, "no member open_flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := kernelSpec(t, "", openFunction(t, "do_filp_open", tt.edit))
			err := CheckPrototype(spec, "do_filp_open")
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrPrototype) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckPrototypeMissingOrAmbiguous(t *testing.T) {
	spec := kernelSpec(t, "", &btf.Int{Name: "int", Size: 4})
	if err := CheckPrototype(spec, "do_filp_open"); !errors.Is(err, ErrPrototype) || !strings.Contains(err.Error(), "has no function do_filp_open") {
		t.Fatalf("missing: error = %v", err)
	}
	spec = kernelSpec(t, "", openFunction(t, "do_filp_open", nil), openFunction(t, "do_filp_open", nil))
	if err := CheckPrototype(spec, "do_filp_open"); !errors.Is(err, ErrPrototype) || !strings.Contains(err.Error(), "2 functions called do_filp_open") {
		t.Fatalf("ambiguous: error = %v", err)
	}
}

const kallsyms61 = `ffffffff8134e0a0 t path_openat
ffffffff8134f2c0 T do_filp_open
ffffffff8134f3e0 T do_file_open_root
ffffffffc0a01000 t fw_ret	[filewatcher]
`

const kallsyms73 = `ffffffff8134e0a0 t path_openat
ffffffff8134f2c0 T do_file_open
ffffffff8134f3e0 T do_file_open_root
`

func TestResolveOpenFunction(t *testing.T) {
	candidates := []string{"do_filp_open", "do_file_open"}
	both := kernelSpec(t, "", openFunction(t, "do_filp_open", nil), openFunction(t, "do_file_open", nil))
	tests := []struct {
		name     string
		kallsyms string
		spec     *btf.Spec
		want     string
		wantErr  string
	}{
		{"6.x", kallsyms61, both, "do_filp_open", ""},
		{"7.x renamed it", kallsyms73, both, "do_file_open", ""},
		{"neither", "ffffffff8134e0a0 t path_openat\n", both, "", "has none of do_filp_open, do_file_open"},
		{"only a module's symbol", "ffffffffc0a01000 t do_filp_open\t[other]\n", both, "", "has none of"},
		{"a data symbol", "ffffffff8134f2c0 d do_filp_open\n", both, "", "has none of"},
		{"listed twice", kallsyms61 + "ffffffff8134f9c0 t do_filp_open\n", both, "", "lists do_filp_open 2 times"},
		{"in kallsyms, not in BTF", kallsyms73, kernelSpec(t, "", openFunction(t, "do_filp_open", nil)), "", "BTF has no function do_file_open"},
		{"the probed one differs", kallsyms73, kernelSpec(t, "",
			openFunction(t, "do_filp_open", nil),
			openFunction(t, "do_file_open", func(p *btf.FuncProto, _ *btf.Struct) { p.Params = p.Params[1:] })),
			"", "do_file_open has 2 parameters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ResolveOpenFunction(candidates, strings.NewReader(tt.kallsyms), tt.spec)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("= %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrPrototype) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if _, err := ResolveOpenFunction(nil, strings.NewReader(kallsyms61), both); err == nil || !strings.Contains(err.Error(), "names no function") {
		t.Fatalf("no candidates: error = %v", err)
	}
}

// TestRunningKernel resolves the open function of the kernel the tests run
// on, from its real kallsyms and BTF.
func TestRunningKernel(t *testing.T) {
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
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fn, err := ResolveOpenFunction([]string{"do_filp_open", "do_file_open"}, f, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the running kernel's open function: %s", fn)
}
