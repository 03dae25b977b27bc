// Package filter compiles a subscriber's filewatcher.v1.Filter into a match
// function for the hub.
package filter

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
)

// Limits on a filter, so that a request cannot make matching expensive.
const (
	MaxEntries     = 1024 // in all repeated fields together
	MaxEntryLength = 4096 // bytes of one prefix, glob or comm
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
		tests = append(tests, func(ev *pb.FileCreatedEvent) bool {
			p := string(ev.Path)
			return slices.ContainsFunc(f.PathGlobs, func(g string) bool { ok, _ := path.Match(g, p); return ok })
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
	n := len(f.PathPrefixes) + len(f.PathGlobs) + len(f.Uids) + len(f.Comms) + len(f.CgroupIds)
	if n > MaxEntries {
		return fmt.Errorf("filter has %d entries, at most %d allowed", n, MaxEntries)
	}
	for _, p := range f.PathPrefixes {
		if len(p) > MaxEntryLength {
			return fmt.Errorf("path prefix of %d bytes, at most %d allowed", len(p), MaxEntryLength)
		}
	}
	for _, c := range f.Comms {
		if len(c) > MaxEntryLength {
			return fmt.Errorf("comm of %d bytes, at most %d allowed", len(c), MaxEntryLength)
		}
	}
	for _, g := range f.PathGlobs {
		if len(g) > MaxEntryLength {
			return fmt.Errorf("path glob of %d bytes, at most %d allowed", len(g), MaxEntryLength)
		}
		if _, err := path.Match(g, ""); errors.Is(err, path.ErrBadPattern) {
			return fmt.Errorf("path glob %q: %w", g, err)
		}
	}
	return nil
}
