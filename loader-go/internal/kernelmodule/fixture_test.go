package kernelmodule

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// writeModule writes an ELF file with a .modinfo section holding fields, as
// modpost lays it out (key=value strings, NUL-separated), and returns its path.
func writeModule(t *testing.T, fields map[string]string) string {
	t.Helper()
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var modinfo []byte
	for _, k := range keys {
		modinfo = append(append(modinfo, k+"="+fields[k]...), 0)
	}
	shstrtab := []byte("\x00.modinfo\x00.shstrtab\x00")

	const ehsize, shentsize = 64, 64
	le := binary.LittleEndian
	var f bytes.Buffer
	hdr := make([]byte, ehsize)
	copy(hdr, "\x7fELF\x02\x01\x01") // 64-bit, little-endian, version 1
	le.PutUint16(hdr[16:], 1)        // ET_REL, as a .ko
	le.PutUint16(hdr[18:], 62)       // EM_X86_64
	le.PutUint32(hdr[20:], 1)
	shoff := ehsize + len(modinfo) + len(shstrtab)
	le.PutUint64(hdr[40:], uint64(shoff))
	le.PutUint16(hdr[52:], ehsize)
	le.PutUint16(hdr[58:], shentsize)
	le.PutUint16(hdr[60:], 3) // sections: null, .modinfo, .shstrtab
	le.PutUint16(hdr[62:], 2) // the section names are in .shstrtab
	f.Write(hdr)
	f.Write(modinfo)
	f.Write(shstrtab)
	section := func(name uint32, typ uint32, off, size int) {
		sh := make([]byte, shentsize)
		le.PutUint32(sh[0:], name)
		le.PutUint32(sh[4:], typ)
		le.PutUint64(sh[24:], uint64(off))
		le.PutUint64(sh[32:], uint64(size))
		le.PutUint64(sh[48:], 1)
		f.Write(sh)
	}
	section(0, 0, 0, 0)
	section(1, 1, ehsize, len(modinfo))                // SHT_PROGBITS
	section(10, 3, ehsize+len(modinfo), len(shstrtab)) // SHT_STRTAB
	path := filepath.Join(t.TempDir(), "filewatcher.ko")
	if err := os.WriteFile(path, f.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// goodModule is the modinfo of a module that fits the running kernel.
func goodModule(t *testing.T) map[string]string {
	t.Helper()
	release, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"name":           Name,
		"version":        Version,
		"license":        "GPL",
		"vermagic":       release + " SMP preempt mod_unload ",
		"open_functions": "do_filp_open do_file_open",
		"srcversion":     "D183F1A29577052148DB89B",
	}
}

// openFunction describes name as Linux 5.10 to 7.3 declare their open
// function, modified by edit, in a BTF spec of its own.
func openFunction(t *testing.T, name string, edit func(proto *btf.FuncProto, flags *btf.Struct)) *btf.Func {
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
	proto := &btf.FuncProto{
		Return: &btf.Pointer{Target: &btf.Struct{Name: "file", Size: 0}},
		Params: []btf.FuncParam{
			{Name: "dfd", Type: i32},
			{Name: "pathname", Type: &btf.Pointer{Target: &btf.Struct{Name: "filename", Size: 0}}},
			{Name: "op", Type: &btf.Pointer{Target: &btf.Const{Type: flags}}},
		},
	}
	if edit != nil {
		edit(proto, flags)
	}
	return &btf.Func{Name: name, Linkage: btf.GlobalFunc, Type: proto}
}

// kernelSpec builds BTF holding types; with dir, it is also written to
// dir/kernel/btf/vmlinux, where the kernel shows its own.
func kernelSpec(t *testing.T, dir string, types ...btf.Type) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	if dir != "" {
		raw, err := b.Marshal(nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "kernel/btf/vmlinux"), string(raw))
	}
	spec, err := b.Spec()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
