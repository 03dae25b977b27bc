package kernel

import (
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// TestOpenWithoutTracepoint loads the BPF objects into the running kernel
// (so the verifier accepts them with the requested ring size) and fails
// cleanly where the module's tracepoint does not exist, as on a host that
// cannot load modules. The VM tests cover the attached case.
func TestOpenWithoutTracepoint(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		t.Skip("loading BPF programs needs root")
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/filewatcher/file_created"); err == nil {
		// CI's host cannot load modules, so the tracepoint is never there.
		if os.Getenv("CI") == "true" {
			t.Fatal("the filewatcher tracepoint exists on this CI host: this test needs a host without the module")
		}
		t.Skip("the filewatcher tracepoint exists here")
	}
	s, err := Open(Options{RingbufSize: 1 << 20})
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded without the tracepoint")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), "read the format of tracepoint filewatcher/file_created (is the module loaded?)") {
		t.Fatalf("error = %v", err)
	}
}

// TestOpenFunction: the eBPF-only probe attaches to the first name of the
// open function the kernel's BTF has, and only if it returns a struct file.
func TestOpenFunction(t *testing.T) {
	file := &btf.Pointer{Target: &btf.Struct{Name: "file"}}
	fn := func(name string, ret btf.Type) btf.Type {
		return &btf.Func{Name: name, Linkage: btf.GlobalFunc, Type: &btf.FuncProto{Return: ret}}
	}
	tests := []struct {
		name    string
		types   []btf.Type
		want    string
		wantErr string
	}{
		{"6.x", []btf.Type{fn("do_filp_open", file)}, "do_filp_open", ""},
		{"7.x", []btf.Type{fn("do_file_open", file)}, "do_file_open", ""},
		{"both: the older name first", []btf.Type{fn("do_file_open", file), fn("do_filp_open", file)}, "do_filp_open", ""},
		{"other return type", []btf.Type{fn("do_filp_open", &btf.Int{Name: "int", Size: 4})}, "",
			"do_filp_open does not return a struct file pointer"},
		{"neither", []btf.Type{fn("vfs_open", file)}, "", "the kernel's BTF has none of do_filp_open, do_file_open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := openFunction(kernelSpec(t, tt.types...))
			if got != tt.want || (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("openFunction = %q, %v; want %q, %q", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
