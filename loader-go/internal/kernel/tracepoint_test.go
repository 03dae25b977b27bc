package kernel

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
	"github.com/filewatcher/filewatcher/loader-go/internal/bpfobj"
)

// format61 is events/filewatcher/file_created/format as Debian's 6.1 shows it
// with the module loaded (5.10 to 7.3 print the same fields).
const format61 = `name: file_created
ID: 1563
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:__data_loc char[] filename;	offset:8;	size:4;	signed:0;
	field:u32 flags;	offset:12;	size:4;	signed:0;

print fmt: "%s%s", __get_str(filename), (REC->flags & 0x1) ? " (unresolved)" : ""
`

// programContext is the context struct of the committed BPF object.
func programContext(t *testing.T) *btf.Struct {
	t.Helper()
	spec, err := bpfobj.LoadFilewatcher()
	if err != nil {
		t.Fatal(err)
	}
	var ctx *btf.Struct
	if err := spec.Types.TypeByName(contextStruct, &ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

func TestParseFormat(t *testing.T) {
	fields, err := parseFormat([]byte(format61))
	if err != nil {
		t.Fatal(err)
	}
	want := []tracepointField{
		{"unsigned short common_type", "common_type", 0, 2},
		{"unsigned char common_flags", "common_flags", 2, 1},
		{"unsigned char common_preempt_count", "common_preempt_count", 3, 1},
		{"int common_pid", "common_pid", 4, 4},
		{"__data_loc char[] filename", "filename", 8, 4},
		{"u32 flags", "flags", 12, 4},
	}
	if len(fields) != len(want) {
		t.Fatalf("fields = %+v", fields)
	}
	for i := range want {
		if fields[i] != want[i] {
			t.Errorf("field %d = %+v, want %+v", i, fields[i], want[i])
		}
	}
	if _, err := parseFormat([]byte("name: file_created\n")); err == nil {
		t.Error("a format without fields parsed")
	}
}

func TestCheckTracepointLayout(t *testing.T) {
	ctx := programContext(t)
	tests := []struct {
		name    string
		format  string
		wantErr string
	}{
		{"the module's own", format61, ""},
		{"flags moved", strings.Replace(format61, "offset:12;", "offset:16;", 1),
			"field flags is at offset 16, size 4; the program reads offset 12, size 4"},
		{"filename a plain string", strings.Replace(format61, "__data_loc char[] filename", "char filename[256]", 1),
			`field filename is "char filename[256]", the program reads it as a __data_loc`},
		{"flags renamed", strings.Replace(format61, "u32 flags;", "u32 kind;", 1),
			`reads a field flags (offset 12, size 4) the tracepoint does not have; the tracepoint has a field "u32 kind" (offset 12)`},
		{"a field more", strings.Replace(format61, "\nprint fmt", "\tfield:u64 dev;\toffset:16;\tsize:8;\tsigned:0;\nprint fmt", 1),
			`has a field "u64 dev" (offset 16) the program does not know`},
		{"a longer common header", strings.Replace(format61, "field:int common_pid;\toffset:4;\tsize:4;", "field:long common_pid;\toffset:4;\tsize:8;", 1),
			"the common fields take 12 bytes, the program skips 8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields, err := parseFormat([]byte(tt.format))
			if err != nil {
				t.Fatal(err)
			}
			err = checkTracepointLayout(ctx, fields)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrTracepointLayout) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v\nwant %q", err, tt.wantErr)
			}
		})
	}
}
