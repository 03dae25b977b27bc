//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// testRefusals makes the loader meet, on a real kernel, each thing that does
// not fit it, and checks that it refuses with a message saying what differs,
// before the module is inserted or the program attached: the module's checks
// under --probe kmod (under auto each would fall back: testProbes), the
// eBPF-only probe's under --probe bpf, and auto where neither can run. The kernel's own
// files are shadowed with mounts where the kernel cannot be made to differ:
// its BTF (/sys/kernel/btf) and the tracepoint's format file.
func testRefusals(t *testing.T, g *guest) {
	fn := openFunction(t, g.release)
	otherKO, otherRelease := otherKernelModule(t, g.kernel)
	g.writeFile(t, "/tmp/other-kernel.ko", otherKO)
	g.writeFile(t, "/tmp/other-prototype.btf", otherPrototypeBTF(t))
	const format = tracing + "/events/filewatcher/file_created/format"
	shadowBTF := "mount -t tmpfs none /sys/kernel/btf && cp /tmp/other-prototype.btf /sys/kernel/btf/vmlinux"
	const noBTF = "it has no kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF); nothing was loaded"
	cases := []struct {
		name        string
		loaded      bool // insmod by hand first: the loader finds it loaded
		setup, undo string
		args        []string
		want        string
	}{
		{name: "module built for another kernel",
			args: []string{"--probe", "kmod", "--module", "/tmp/other-kernel.ko"},
			want: "module built for another kernel: module is for " + otherRelease + ", running " + g.release},
		{name: "no kernel BTF",
			setup: "mount -t tmpfs none /sys/kernel/btf", undo: "umount /sys/kernel/btf",
			args: []string{"--probe", "kmod", "--module", "/filewatcher/filewatcher.ko"},
			want: "this kernel cannot run filewatcher: " + noBTF},
		{name: "eBPF-only probe without kernel BTF",
			setup: "mount -t tmpfs none /sys/kernel/btf", undo: "umount /sys/kernel/btf",
			args: []string{"--probe", "bpf"},
			want: "this kernel cannot run filewatcher: " + noBTF},
		{name: "auto without kernel BTF: neither probe",
			setup: "mount -t tmpfs none /sys/kernel/btf", undo: "umount /sys/kernel/btf",
			args: []string{"--module", "/filewatcher/filewatcher.ko"},
			want: "no probe can run: the kernel module: this kernel cannot run filewatcher: " + noBTF +
				"; the eBPF-only probe: this kernel cannot run filewatcher: " + noBTF},
		{name: "open function of another prototype",
			setup: shadowBTF, undo: "umount /sys/kernel/btf",
			args: []string{"--probe", "kmod", "--module", "/filewatcher/filewatcher.ko"},
			want: "does not have the prototype the module relies on: " + fn + "'s third parameter op: is const struct open_how *, want a pointer to struct open_flags; nothing was loaded"},
		{name: "loaded module probes a function of another prototype", loaded: true,
			setup: shadowBTF, undo: "umount /sys/kernel/btf", args: []string{"--probe", "kmod"},
			want: "the loaded module probes " + fn + ": the open function does not have the prototype"},
		{name: "tracepoint laid out otherwise", loaded: true, args: []string{"--probe", "kmod"},
			setup: "sed 's/offset:12;/offset:16;/' " + format + " >/tmp/format && mount -o bind /tmp/format " + format,
			undo:  "umount " + format,
			want:  "not laid out as the BPF program reads it: field flags is at offset 16, size 4; the program reads offset 12, size 4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.loaded {
				g.run(t, 0, argv("insmod", "/filewatcher/filewatcher.ko"))
				defer g.run(t, 0, argv("rmmod", "filewatcher"))
			}
			if c.setup != "" {
				g.sh(t, c.setup)
				defer g.sh(t, c.undo)
			}
			args := append([]string{"filewatcher-loader", "--listen", "127.0.0.1:50099"}, c.args...)
			resp := g.run(t, 1, vmagent.Request{Argv: vmagent.Args(args...), TimeoutMS: 60_000})
			t.Logf("the loader: %s", strings.TrimSpace(string(resp.Stderr)))
			if !strings.Contains(string(resp.Stderr), c.want) {
				t.Errorf("the loader said:\n%s\nwant it to say %q", resp.Stderr, c.want)
			}
			if strings.Contains(string(resp.Stderr), "msg=ready") {
				t.Errorf("the loader got ready before refusing")
			}
			if c.loaded {
				// Nothing attached: nothing holds the module.
				if rc := strings.TrimSpace(string(g.sh(t, "cat /sys/module/filewatcher/refcnt"))); rc != "0" {
					t.Errorf("module refcnt %s after the refusal, want 0", rc)
				}
			} else if out := g.sh(t, "grep -c '^filewatcher ' /proc/modules || true"); strings.TrimSpace(string(out)) != "0" {
				t.Errorf("the module was inserted despite the refusal")
			}
		})
	}
	assertKernelLogClean(t, g)
}

// writeFile puts data into the guest at path.
func (g *guest) writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	g.run(t, 0, vmagent.Request{Argv: vmagent.Args("sh", "-c", `cat >"$1"`, "sh", path), Stdin: data})
}

// otherModules caches modules built for a kernel other than the guest's:
// guest arch and kernel → module bytes and release.
var otherModules sync.Map

type builtModule struct {
	ko      []byte
	release string
}

// otherKernelModule returns filewatcher.ko built for another kernel of the
// guests' architecture than kernel (preferably one the run boots anyway, so
// it is fetched already), and that kernel's release.
func otherKernelModule(t *testing.T, kernel string) ([]byte, string) {
	t.Helper()
	other := ""
	for _, k := range append(kernels(), "6.1", "6.12") {
		if k != kernel {
			other = k
			break
		}
	}
	key := guestArch() + "/" + other
	if m, ok := otherModules.Load(key); ok {
		return m.(builtModule).ko, m.(builtModule).release
	}
	kdir := command(t, filepath.Join(repoRoot, "test/vm/kernels.sh"), "fetch", "--kernel", other, "--arch", guestArch())
	ko := command(t, filepath.Join(repoRoot, "test/vm/build-module.sh"), "--kernel-dir", kdir,
		"--out", filepath.Join(workDir, "other-"+strings.ReplaceAll(key, "/", "-")))
	data, err := os.ReadFile(ko)
	if err != nil {
		t.Fatal(err)
	}
	release, err := os.ReadFile(filepath.Join(kdir, "release"))
	if err != nil {
		t.Fatal(err)
	}
	m := builtModule{data, strings.TrimSpace(string(release))}
	otherModules.Store(key, m)
	return m.ko, m.release
}

// command runs a host command and returns its trimmed stdout.
func command(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = repoRoot
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// otherPrototypeBTF is a kernel BTF blob in which both names of the open
// function take a struct open_how (what openat2 passes) where the module
// reads a struct open_flags: the kernel as it would be if the prototype
// changed.
func otherPrototypeBTF(t *testing.T) []byte {
	t.Helper()
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	u64 := &btf.Int{Name: "unsigned long long", Size: 8}
	how := &btf.Struct{Name: "open_how", Size: 24, Members: []btf.Member{
		{Name: "flags", Type: u64, Offset: 0}, {Name: "mode", Type: u64, Offset: 64}, {Name: "resolve", Type: u64, Offset: 128},
	}}
	proto := &btf.FuncProto{
		Return: &btf.Pointer{Target: &btf.Struct{Name: "file"}},
		Params: []btf.FuncParam{
			{Name: "dfd", Type: i32},
			{Name: "pathname", Type: &btf.Pointer{Target: &btf.Struct{Name: "filename"}}},
			{Name: "op", Type: &btf.Pointer{Target: &btf.Const{Type: how}}},
		},
	}
	b, err := btf.NewBuilder([]btf.Type{
		&btf.Func{Name: "do_filp_open", Linkage: btf.GlobalFunc, Type: proto},
		&btf.Func{Name: "do_file_open", Linkage: btf.GlobalFunc, Type: proto},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
