package kernelmodule

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// The module's kretprobe reads the third argument of the open function as a
// struct open_flags pointer and its first int as the open flags, and takes
// the return value for a struct file pointer. Neither type is in the headers
// the module is built against (they are fs/internal.h's), so if the running
// kernel's function differs, the module would read the wrong memory:
// CheckPrototype refuses that before the module is inserted.
//
//	struct file *do_filp_open(int dfd, struct filename *pathname,
//				  const struct open_flags *op);
//	struct open_flags { int open_flag; ... };
//
// Linux 7.0 renamed the function do_file_open, prototype unchanged. The names
// the module may probe come from the module itself (its .modinfo).

// ErrPrototype is wrapped by every mismatch CheckPrototype reports.
var ErrPrototype = errors.New("the open function does not have the prototype the module relies on")

// CheckPrototype checks spec, usually the running kernel's BTF, for
//
//	struct file *name(int, struct filename *, const struct open_flags *)
//
// with a 4-byte int open_flag at offset 0 of struct open_flags. Parameter
// names do not matter; types, their order and the return type do.
func CheckPrototype(spec *btf.Spec, name string) error {
	proto, err := funcProto(spec, name)
	if err != nil {
		return err
	}
	if err := wantPointerTo(proto.Return, "file"); err != nil {
		return fmt.Errorf("%w: %s returns %s: %w", ErrPrototype, name, cType(proto.Return), err)
	}
	if len(proto.Params) != 3 {
		return fmt.Errorf("%w: %s has %d parameters (%s), want 3 (int dfd, struct filename *pathname, const struct open_flags *op)",
			ErrPrototype, name, len(proto.Params), paramList(proto))
	}
	if i, ok := btf.UnderlyingType(proto.Params[0].Type).(*btf.Int); !ok || i.Size != 4 || i.Encoding != btf.Signed {
		return fmt.Errorf("%w: %s's first parameter %s is %s, want int", ErrPrototype, name, proto.Params[0].Name, cType(proto.Params[0].Type))
	}
	if err := wantPointerTo(proto.Params[1].Type, "filename"); err != nil {
		return fmt.Errorf("%w: %s's second parameter %s: %w", ErrPrototype, name, proto.Params[1].Name, err)
	}
	if err := wantPointerTo(proto.Params[2].Type, "open_flags"); err != nil {
		return fmt.Errorf("%w: %s's third parameter %s: %w", ErrPrototype, name, proto.Params[2].Name, err)
	}
	flags := btf.UnderlyingType(btf.UnderlyingType(proto.Params[2].Type).(*btf.Pointer).Target).(*btf.Struct)
	for _, m := range flags.Members {
		if m.Name != "open_flag" {
			continue
		}
		i, ok := btf.UnderlyingType(m.Type).(*btf.Int)
		if m.Offset != 0 || m.BitfieldSize != 0 || !ok || i.Size != 4 {
			return fmt.Errorf("%w: struct open_flags has open_flag as %s at bit offset %d, want a 4-byte int at offset 0", ErrPrototype, cType(m.Type), m.Offset)
		}
		return nil
	}
	return fmt.Errorf("%w: struct open_flags has no member open_flag", ErrPrototype)
}

// funcProto finds the one function called name in spec.
func funcProto(spec *btf.Spec, name string) (*btf.FuncProto, error) {
	types, err := spec.AnyTypesByName(name)
	if err != nil && !errors.Is(err, btf.ErrNotFound) {
		return nil, fmt.Errorf("%w: look up %s in BTF: %w", ErrPrototype, name, err)
	}
	var fns []*btf.Func
	for _, t := range types {
		if fn, ok := t.(*btf.Func); ok {
			fns = append(fns, fn)
		}
	}
	switch len(fns) {
	case 0:
		return nil, fmt.Errorf("%w: the kernel's BTF has no function %s", ErrPrototype, name)
	case 1:
	default:
		return nil, fmt.Errorf("%w: the kernel's BTF has %d functions called %s: which one a kprobe takes is ambiguous", ErrPrototype, len(fns), name)
	}
	proto, ok := fns[0].Type.(*btf.FuncProto)
	if !ok {
		return nil, fmt.Errorf("%w: %s has no prototype in BTF", ErrPrototype, name)
	}
	return proto, nil
}

// wantPointerTo checks that t is a pointer to (a const) struct name.
func wantPointerTo(t btf.Type, name string) error {
	ptr, ok := btf.UnderlyingType(t).(*btf.Pointer)
	if !ok {
		return fmt.Errorf("is %s, want a pointer to struct %s", cType(t), name)
	}
	s, ok := btf.UnderlyingType(ptr.Target).(*btf.Struct)
	if !ok || s.Name != name {
		return fmt.Errorf("is %s, want a pointer to struct %s", cType(t), name)
	}
	return nil
}

// cType spells a BTF type as C would, for messages: "const struct open_how *".
func cType(t btf.Type) string {
	switch t := t.(type) {
	case *btf.Pointer:
		return cType(t.Target) + " *"
	case *btf.Const:
		return "const " + cType(t.Type)
	case *btf.Volatile:
		return "volatile " + cType(t.Type)
	case *btf.Struct:
		return "struct " + t.Name
	case *btf.Union:
		return "union " + t.Name
	case *btf.Enum:
		return "enum " + t.Name
	case *btf.Void:
		return "void"
	case nil:
		return "void"
	default:
		if n := t.TypeName(); n != "" {
			return n
		}
		return fmt.Sprint(t)
	}
}

func paramList(p *btf.FuncProto) string {
	names := make([]string, len(p.Params))
	for i, param := range p.Params {
		names[i] = param.Name
	}
	return strings.Join(names, ", ")
}

// ResolveOpenFunction picks, of the candidates the module may probe (in the
// module's order), the one it will probe on this kernel: the first that
// /proc/kallsyms (read from kallsyms) lists as a function of the kernel
// itself. It must be listed once (a kprobe on a name listed twice may land
// on either) and have the expected prototype in spec.
func ResolveOpenFunction(candidates []string, kallsyms io.Reader, spec *btf.Spec) (string, error) {
	if len(candidates) == 0 {
		return "", fmt.Errorf("%w: the module names no function to probe", ErrPrototype)
	}
	counts, err := countSymbols(kallsyms, candidates)
	if err != nil {
		return "", err
	}
	for _, name := range candidates {
		switch counts[name] {
		case 0:
			continue
		case 1:
			return name, CheckPrototype(spec, name)
		default:
			return "", fmt.Errorf("%w: /proc/kallsyms lists %s %d times: a kprobe on it may land on either", ErrPrototype, name, counts[name])
		}
	}
	return "", fmt.Errorf("%w: the running kernel has none of %s (/proc/kallsyms): it is not a kernel this module knows",
		ErrPrototype, strings.Join(candidates, ", "))
}

// countSymbols counts how often each of names is a text symbol of the kernel
// proper (not of a module) in /proc/kallsyms format: "addr type name [module]".
func countSymbols(r io.Reader, names []string) (map[string]int, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	counts := map[string]int{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || !want[f[2]] || (f[1] != "t" && f[1] != "T") {
			continue
		}
		counts[f[2]]++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /proc/kallsyms: %w", err)
	}
	return counts, nil
}
