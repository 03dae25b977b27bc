// Package filter compiles a subscriber's filewatcher.v1.Filter into a match
// function for the hub.
package filter

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unsafe"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// Limits on a filter, so that a request cannot make matching expensive:
// matching runs on the subscriber's goroutine, and with these limits even a
// filter built to be slow costs a few milliseconds per event at worst
// (BenchmarkWorstFilter), while ordinary ones cost tens of nanoseconds.
const (
	MaxEntries       = 1024      // in all repeated fields together
	MaxEntryLength   = 4096      // bytes of one path prefix (PATH_MAX)
	MaxGlobLength    = 1024      // bytes of one glob
	MaxGlobBytes     = 16 * 1024 // bytes of all globs together
	MaxGlobWildcards = 32        // '?' and '[...]' in all globs together
	MaxCommLength    = 64        // bytes of one comm (the kernel's are at most 15)
)

// Match reports whether an event is selected.
type Match func(*pb.FileCreatedEvent) bool

// Compile validates f and returns its match function, or nil when f selects
// everything. Set fields must all match; a repeated field matches when any
// of its elements does.
func Compile(f *pb.Filter) (Match, error) {
	if f == nil {
		return nil, nil
	}
	if err := validate(f); err != nil {
		return nil, err
	}
	var tests []Match
	if len(f.PathPrefixes) > 0 {
		tests = append(tests, func(ev *pb.FileCreatedEvent) bool {
			return slices.ContainsFunc(f.PathPrefixes, func(p []byte) bool { return bytes.HasPrefix(ev.Path, p) })
		})
	}
	if len(f.PathGlobs) > 0 {
		globs := make([]glob, len(f.PathGlobs))
		for i, p := range f.PathGlobs {
			globs[i], _ = compileGlob(p) // validated
		}
		tests = append(tests, func(ev *pb.FileCreatedEvent) bool {
			p := unsafe.String(unsafe.SliceData(ev.Path), len(ev.Path)) // read-only, not kept
			return slices.ContainsFunc(globs, func(g glob) bool { return g.match(p) })
		})
	}
	if len(f.Uids) > 0 {
		tests = append(tests, func(ev *pb.FileCreatedEvent) bool { return slices.Contains(f.Uids, ev.Uid) })
	}
	if len(f.Comms) > 0 {
		tests = append(tests, func(ev *pb.FileCreatedEvent) bool {
			return slices.ContainsFunc(f.Comms, func(c []byte) bool { return bytes.Equal(c, ev.Comm) })
		})
	}
	if len(f.CgroupIds) > 0 {
		tests = append(tests, func(ev *pb.FileCreatedEvent) bool { return slices.Contains(f.CgroupIds, ev.CgroupId) })
	}
	if len(f.Kinds) > 0 {
		tests = append(tests, func(ev *pb.FileCreatedEvent) bool { return slices.Contains(f.Kinds, ev.Kind) })
	}
	if len(tests) == 0 {
		return nil, nil
	}
	return func(ev *pb.FileCreatedEvent) bool {
		for _, t := range tests {
			if !t(ev) {
				return false
			}
		}
		return true
	}, nil
}

func validate(f *pb.Filter) error {
	n := len(f.PathPrefixes) + len(f.PathGlobs) + len(f.Uids) + len(f.Comms) + len(f.CgroupIds) + len(f.Kinds)
	if n > MaxEntries {
		return fmt.Errorf("filter has %d entries, at most %d allowed", n, MaxEntries)
	}
	for _, p := range f.PathPrefixes {
		if len(p) > MaxEntryLength {
			return fmt.Errorf("path prefix of %d bytes, at most %d allowed", len(p), MaxEntryLength)
		}
	}
	for _, k := range f.Kinds {
		if k == pb.EventKind_EVENT_KIND_UNSPECIFIED {
			return fmt.Errorf("kind %v matches no event: name the kinds wanted (%s)", k, kindNames())
		}
	}
	for _, c := range f.Comms {
		if len(c) > MaxCommLength {
			return fmt.Errorf("comm of %d bytes, at most %d allowed", len(c), MaxCommLength)
		}
	}
	total, wildcards := 0, 0
	for _, g := range f.PathGlobs {
		if len(g) > MaxGlobLength {
			return fmt.Errorf("path glob of %d bytes, at most %d allowed", len(g), MaxGlobLength)
		}
		if total += len(g); total > MaxGlobBytes {
			return fmt.Errorf("path globs of more than %d bytes together", MaxGlobBytes)
		}
		c, err := compileGlob(g)
		if err != nil {
			return fmt.Errorf("path glob %q: %w", g, err)
		}
		if wildcards += c.wildcards(); wildcards > MaxGlobWildcards {
			return fmt.Errorf("path globs with more than %d '?' and '[...]' together", MaxGlobWildcards)
		}
	}
	return nil
}

// kindNames lists the event kinds this loader knows, by number, for error
// messages.
func kindNames() string {
	var names []string
	for _, n := range slices.Sorted(maps.Keys(pb.EventKind_name)) {
		if n != 0 {
			names = append(names, pb.EventKind_name[n])
		}
	}
	return strings.Join(names, ", ")
}
