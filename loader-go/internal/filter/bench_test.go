package filter

import (
	"strings"
	"testing"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// BenchmarkWorstFilter matches filters built to be slow, at the limits,
// against a 4095-byte path whose last component has no '/' (real file
// systems stop components at 255 bytes, which makes it cheaper still).
func BenchmarkWorstFilter(b *testing.B) {
	ev := &pb.FileCreatedEvent{Path: []byte("/" + strings.Repeat("a", 4094))}
	long := make([]string, MaxGlobBytes/MaxGlobLength)
	for i := range long {
		long[i] = "/*" + strings.Repeat("a", MaxGlobLength-5) + "*b"
	}
	for _, tc := range []struct {
		name string
		f    *pb.Filter
	}{
		{"typical", &pb.Filter{PathGlobs: []string{"/home/*/.ssh/*", "*.tmp"}, PathPrefixes: [][]byte{[]byte("/etc/")}}},
		{"wildcards", &pb.Filter{PathGlobs: []string{"/*" + strings.Repeat("?", MaxGlobWildcards) + "b"}}},
		{"classes", &pb.Filter{PathGlobs: []string{"/*" + strings.Repeat("[a]", MaxGlobWildcards) + "b"}}},
		{"long globs", &pb.Filter{PathGlobs: long}},
		{"prefixes", &pb.Filter{PathPrefixes: repeat([]byte(strings.Repeat("/", 4000)), MaxEntries)}},
	} {
		m, err := Compile(tc.f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				m(ev)
			}
		})
	}
}

func repeat(p []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = p
	}
	return out
}
