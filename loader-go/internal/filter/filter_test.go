package filter

import (
	"strings"
	"testing"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

func TestCompile(t *testing.T) {
	ev := &pb.FileCreatedEvent{Path: []byte("/home/a/\xffx.txt"), Uid: 1000, Comm: []byte("touch"), CgroupId: 7, Kind: pb.EventKind_EVENT_KIND_OPEN}
	tests := []struct {
		name   string
		filter *pb.Filter
		want   bool
	}{
		{"nil", nil, true},
		{"empty", &pb.Filter{}, true},
		{"prefix", &pb.Filter{PathPrefixes: [][]byte{[]byte("/tmp/"), []byte("/home/a/\xff")}}, true},
		{"prefix miss", &pb.Filter{PathPrefixes: [][]byte{[]byte("/tmp/")}}, false},
		{"glob", &pb.Filter{PathGlobs: []string{"/home/*/*.txt"}}, true},
		{"glob does not cross slash", &pb.Filter{PathGlobs: []string{"/home/*.txt"}}, false},
		{"uid", &pb.Filter{Uids: []uint32{0, 1000}}, true},
		{"uid miss", &pb.Filter{Uids: []uint32{0}}, false},
		{"comm", &pb.Filter{Comms: [][]byte{[]byte("touch")}}, true},
		{"comm is exact", &pb.Filter{Comms: [][]byte{[]byte("touc")}}, false},
		{"cgroup", &pb.Filter{CgroupIds: []uint64{7}}, true},
		{"kind", &pb.Filter{Kinds: []pb.EventKind{99, pb.EventKind_EVENT_KIND_OPEN}}, true},
		{"kind miss", &pb.Filter{Kinds: []pb.EventKind{99}}, false}, // a kind of a later loader
		{"all fields AND", &pb.Filter{Uids: []uint32{1000}, Comms: [][]byte{[]byte("cp")}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(tt.filter)
			if err != nil {
				t.Fatal(err)
			}
			if got := m == nil || m(ev); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCompileRejects(t *testing.T) {
	tests := []struct {
		name    string
		filter  *pb.Filter
		wantErr string
	}{
		{"bad glob", &pb.Filter{PathGlobs: []string{"/tmp/["}}, "syntax error in pattern"},
		{"too many", &pb.Filter{Uids: make([]uint32, MaxEntries+1)}, "at most 1024"},
		{"too many with kinds", &pb.Filter{Uids: make([]uint32, MaxEntries), Kinds: []pb.EventKind{1}}, "at most 1024"},
		{"unspecified kind", &pb.Filter{Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_OPEN, 0}},
			"kind EVENT_KIND_UNSPECIFIED matches no event: name the kinds wanted (EVENT_KIND_OPEN, EVENT_KIND_MKNOD, EVENT_KIND_TMPFILE_LINK)"},
		{"long prefix", &pb.Filter{PathPrefixes: [][]byte{make([]byte, MaxEntryLength+1)}}, "path prefix of 4097 bytes"},
		{"long glob", &pb.Filter{PathGlobs: []string{strings.Repeat("a", MaxEntryLength+1)}}, "path glob of 4097 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.filter)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
