package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// The tracepoint the program attaches to, and the struct (in the program's
// BTF) through which it reads a record of it.
const (
	tracepointGroup = "filewatcher"
	tracepointName  = "file_created"
	contextStruct   = "file_created_ctx"
)

// ErrTracepointLayout is wrapped when the running kernel's tracepoint is not
// laid out as the BPF program reads it.
var ErrTracepointLayout = errors.New("the tracepoint filewatcher/file_created is not laid out as the BPF program reads it")

// tracepointField is one "field:" line of a tracepoint's format file.
type tracepointField struct {
	decl         string // "__data_loc char[] filename"
	name         string // "filename"
	offset, size uint32
}

var formatField = regexp.MustCompile(`^\s*field:([^;]*);\s*offset:(\d+);\s*size:(\d+);`)

// parseFormat reads the fields of a tracepoint's format file
// (events/GROUP/NAME/format in tracefs).
func parseFormat(format []byte) ([]tracepointField, error) {
	var fields []tracepointField
	for _, line := range strings.Split(string(format), "\n") {
		m := formatField.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		decl := strings.TrimSpace(m[1])
		name := decl[strings.LastIndexAny(decl, " *")+1:]
		if i := strings.IndexByte(name, '['); i >= 0 {
			name = name[:i]
		}
		off, err1 := strconv.ParseUint(m[2], 10, 32)
		size, err2 := strconv.ParseUint(m[3], 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("tracepoint format %q: %w", line, err)
		}
		fields = append(fields, tracepointField{decl: decl, name: name, offset: uint32(off), size: uint32(size)})
	}
	if len(fields) == 0 {
		return nil, errors.New("tracepoint format has no fields")
	}
	return fields, nil
}

// checkTracepointLayout compares the program's context struct with the
// tracepoint's format. The struct's first member stands for the common
// fields (common_type, common_pid, ...) and must be exactly as long; every
// other member must be a field of the same name, offset and size, a member
// __data_loc_NAME standing for the __data_loc field NAME; and every field
// must be read by a member. It names every difference.
func checkTracepointLayout(ctx *btf.Struct, fields []tracepointField) error {
	var diffs []string
	var commonEnd uint32
	byName := map[string]tracepointField{}
	for _, f := range fields {
		if strings.HasPrefix(f.name, "common_") {
			commonEnd = max(commonEnd, f.offset+f.size)
			continue
		}
		byName[f.name] = f
	}
	if len(ctx.Members) == 0 {
		return fmt.Errorf("%w: the program's %s has no members", ErrTracepointLayout, ctx.Name)
	}
	for i, m := range ctx.Members {
		size, err := btf.Sizeof(m.Type)
		if err != nil {
			return fmt.Errorf("size of %s.%s: %w", ctx.Name, m.Name, err)
		}
		off := m.Offset.Bytes()
		if i == 0 {
			if off != 0 || uint32(size) != commonEnd {
				diffs = append(diffs, fmt.Sprintf("the common fields take %d bytes, the program skips %d", commonEnd, size))
			}
			continue
		}
		name, dataLoc := strings.CutPrefix(m.Name, "__data_loc_")
		f, ok := byName[name]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("the program reads a field %s (offset %d, size %d) the tracepoint does not have", name, off, size))
			continue
		case dataLoc != strings.HasPrefix(f.decl, "__data_loc "):
			diffs = append(diffs, fmt.Sprintf("field %s is %q, the program reads it as %s", name, f.decl, map[bool]string{true: "a __data_loc", false: "a plain value"}[dataLoc]))
		case f.offset != off || f.size != uint32(size):
			diffs = append(diffs, fmt.Sprintf("field %s is at offset %d, size %d; the program reads offset %d, size %d", name, f.offset, f.size, off, size))
		}
		delete(byName, name)
	}
	for _, f := range fields {
		if _, left := byName[f.name]; left {
			diffs = append(diffs, fmt.Sprintf("the tracepoint has a field %q (offset %d) the program does not know", f.decl, f.offset))
		}
	}
	if len(diffs) > 0 {
		return fmt.Errorf("%w: %s. The loaded module and this loader are of different builds: load the module built with this loader (rmmod filewatcher, then start the loader with --module)",
			ErrTracepointLayout, strings.Join(diffs, "; "))
	}
	return nil
}

// tracepointFormat reads the running kernel's format of the tracepoint, from
// tracefs or, on older setups, debugfs.
func tracepointFormat() ([]tracepointField, error) {
	var errs []error
	for _, dir := range []string{tracefsDir, "/sys/kernel/debug/tracing"} {
		b, err := os.ReadFile(filepath.Join(dir, "events", tracepointGroup, tracepointName, "format"))
		if err == nil {
			return parseFormat(b)
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("read the format of tracepoint %s/%s (is the module loaded?): %w", tracepointGroup, tracepointName, errors.Join(errs...))
}

// checkTracepoint compares the program's view of the tracepoint, from its
// BTF, with the running kernel's.
func checkTracepoint(spec *btf.Spec) error {
	var ctx *btf.Struct
	if err := spec.TypeByName(contextStruct, &ctx); err != nil {
		return fmt.Errorf("find %s in the BPF program's BTF: %w", contextStruct, err)
	}
	fields, err := tracepointFormat()
	if err != nil {
		return err
	}
	return checkTracepointLayout(ctx, fields)
}
