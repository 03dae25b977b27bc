package filter

import (
	"path"
	"strings"
	"testing"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzGlob checks that the compiled glob matches exactly what path.Match
// matches, and accepts exactly the patterns path.Match accepts.
func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{
		{"/home/*/.ssh/*", "/home/a/.ssh/id"},
		{"*.txt", "a.txt"},
		{"/tmp/[a-c]?[^x]*", "/tmp/b\xffz/"},
		{"[\\]*]x", "*x"},
		{"*[é-ü]", "abü"},
		{"\\*?", "*/"},
		{"*a*a*b", "aaaaaaab"},
		{"*", ""},
		{"[", "["},
		{"a\\", "a"},
		{"[^/]*/", "x/"},
		{"*\xff", "a\xff"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		want, wantErr := path.Match(pattern, name)
		if _, err := path.Match(pattern, ""); err != nil {
			wantErr = err // path.Match may stop before a late syntax error
		}
		g, err := compileGlob(pattern)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("compileGlob(%q) error %v, path.Match error %v", pattern, err, wantErr)
		}
		if err != nil {
			return
		}
		if got := g.match(name); got != want {
			t.Fatalf("match(%q, %q) = %v, path.Match says %v", pattern, name, got, want)
		}
	})
}

// FuzzFilter compiles arbitrary filters (as protobuf bytes) and runs them on
// an event: no filter may panic, and every error must be a clear one.
func FuzzFilter(f *testing.F) {
	for _, flt := range []*pb.Filter{
		{},
		{PathPrefixes: [][]byte{[]byte("/home/")}, Uids: []uint32{0, 1000}},
		{PathGlobs: []string{"/tmp/*.[ch]", "["}, Comms: [][]byte{[]byte("touch")}},
		{CgroupIds: []uint64{1, 2}, PathGlobs: []string{strings.Repeat("?", 40)}},
		{Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_OPEN, 0}},
	} {
		b, err := proto.Marshal(flt)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte("/tmp/x.c"), uint32(1000), []byte("touch"))
	}
	f.Fuzz(func(t *testing.T, raw, path []byte, uid uint32, comm []byte) {
		var flt pb.Filter
		if proto.Unmarshal(raw, &flt) != nil {
			return
		}
		m, err := Compile(&flt)
		if err != nil {
			if msg := err.Error(); !strings.Contains(msg, "allowed") && !strings.Contains(msg, "syntax error in pattern") &&
				!strings.Contains(msg, "together") && !strings.Contains(msg, "matches no event") {
				t.Fatalf("unclear error %q", msg)
			}
			return
		}
		if m != nil {
			m(&pb.FileCreatedEvent{Path: path, Uid: uid, Comm: comm})
		}
	})
}
