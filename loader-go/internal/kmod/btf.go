package kmod

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// The module's kretprobe reads the third argument of do_filp_open as a
// struct open_flags pointer and its first int as the open flags. If the
// running kernel's prototype differs, the module would read garbage from
// kernel memory: CheckSignature refuses that before the module is loaded.
//
//	struct file *do_filp_open(int dfd, struct filename *pathname,
//				  const struct open_flags *op);
//	struct open_flags { int open_flag; ... };

// ErrSignature is wrapped by every mismatch CheckSignature reports.
var ErrSignature = errors.New("do_filp_open does not have the signature the module relies on")

// CheckSignature checks spec, usually the running kernel's BTF, for
// do_filp_open(int dfd, struct filename *pathname, const struct open_flags *op)
// with int open_flag at offset 0 of struct open_flags.
func CheckSignature(spec *btf.Spec) error {
	var fn *btf.Func
	if err := spec.TypeByName("do_filp_open", &fn); err != nil {
		return fmt.Errorf("%w: find do_filp_open in BTF: %w", ErrSignature, err)
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return fmt.Errorf("%w: do_filp_open has no prototype", ErrSignature)
	}
	names := make([]string, len(proto.Params))
	for i, p := range proto.Params {
		names[i] = p.Name
	}
	if fmt.Sprint(names) != "[dfd pathname op]" {
		return fmt.Errorf("%w: parameters are %v, want [dfd pathname op]", ErrSignature, names)
	}
	ptr, ok := btf.UnderlyingType(proto.Params[2].Type).(*btf.Pointer)
	if !ok {
		return fmt.Errorf("%w: op is a %v, want a pointer to struct open_flags", ErrSignature, proto.Params[2].Type)
	}
	flags, ok := btf.UnderlyingType(ptr.Target).(*btf.Struct)
	if !ok || flags.Name != "open_flags" {
		return fmt.Errorf("%w: op points to %v, want struct open_flags", ErrSignature, ptr.Target)
	}
	for _, m := range flags.Members {
		if m.Name != "open_flag" {
			continue
		}
		i, ok := btf.UnderlyingType(m.Type).(*btf.Int)
		if m.Offset != 0 || !ok || i.Size != 4 {
			return fmt.Errorf("%w: open_flag is a %v at bit offset %d, want a 4-byte int at offset 0", ErrSignature, m.Type, m.Offset)
		}
		return nil
	}
	return fmt.Errorf("%w: struct open_flags has no member open_flag", ErrSignature)
}
