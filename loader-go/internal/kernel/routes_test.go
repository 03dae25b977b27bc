package kernel

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// kernelSpec is a BTF spec holding types, as a kernel's would.
func kernelSpec(t *testing.T, types ...btf.Type) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// TestRoutePrograms: the vfs_create and vfs_link variants are picked by the
// prototypes of 5.10, 5.12 to 6.x and 7.x, and a kernel without a hook, or
// with a prototype the programs do not know, gets none (opens only).
func TestRoutePrograms(t *testing.T) {
	ptr := func(name string) btf.Type { return &btf.Pointer{Target: &btf.Struct{Name: name}} }
	intT := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	ushort := &btf.Int{Name: "unsigned short", Size: 2}
	fn := func(name string, params ...string) *btf.Func { // params: "name:struct" or "name:" for an integer
		var ps []btf.FuncParam
		for _, p := range params {
			n, st, _ := strings.Cut(p, ":")
			var typ btf.Type = ushort
			if st != "" {
				typ = ptr(st)
			}
			ps = append(ps, btf.FuncParam{Name: n, Type: typ})
		}
		return &btf.Func{Name: name, Type: &btf.FuncProto{Return: intT, Params: ps}, Linkage: btf.GlobalFunc}
	}
	mknod := fn("security_path_mknod", "dir:path", "dentry:dentry", "mode:", "dev:")
	link := fn("security_path_link", "old_dentry:dentry", "new_dir:path", "new_dentry:dentry")
	create510 := fn("vfs_create", "dir:inode", "dentry:dentry", "mode:", "want_excl:")
	create612 := fn("vfs_create", "idmap:mnt_idmap", "dir:inode", "dentry:dentry", "mode:", "want_excl:")
	create72 := fn("vfs_create", "idmap:mnt_idmap", "dentry:dentry", "mode:", "di:delegated_inode")
	link510 := fn("vfs_link", "old_dentry:dentry", "dir:inode", "new_dentry:dentry", "delegated_inode:inode")
	link612 := fn("vfs_link", "old_dentry:dentry", "idmap:mnt_idmap", "dir:inode", "new_dentry:dentry", "delegated_inode:inode")
	for _, tt := range []struct {
		name             string
		funcs            []btf.Type
		create, linkProg string // "" with why: no routes
		why              string
	}{
		{"5.10", []btf.Type{mknod, link, create510, link510}, "fexit_vfs_create_4", "fexit_vfs_link_4", ""},
		{"6.12", []btf.Type{mknod, link, create612, link612}, "fexit_vfs_create_5", "fexit_vfs_link_5", ""},
		{"7.2", []btf.Type{mknod, link, create72, link612}, "fexit_vfs_create_4", "fexit_vfs_link_5", ""},
		{"no CONFIG_SECURITY_PATH", []btf.Type{create612, link612}, "", "", "no security_path_mknod"},
		{"an unknown hook prototype", []btf.Type{fn("security_path_mknod", "dentry:dentry", "dir:path", "mode:", "dev:"), link, create612, link612},
			"", "", "security_path_mknod has a prototype"},
		{"an unknown vfs_create", []btf.Type{mknod, link, fn("vfs_create", "idmap:mnt_idmap", "x:inode", "y:inode", "dentry:dentry", "mode:"), link612},
			"", "", "vfs_create or vfs_link has a prototype"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, why := routePrograms(kernelSpec(t, tt.funcs...))
			switch {
			case tt.why != "":
				if r != nil || !strings.Contains(why, tt.why) {
					t.Errorf("routes %+v, reason %q: want none, and %q in the reason", r, why, tt.why)
				}
			case r == nil:
				t.Errorf("no routes (%s), want %s and %s", why, tt.create, tt.linkProg)
			case r.vfsCreate != tt.create || r.vfsLink != tt.linkProg:
				t.Errorf("routes %s and %s, want %s and %s", r.vfsCreate, r.vfsLink, tt.create, tt.linkProg)
			}
		})
	}
}
