package main

import (
	"reflect"
	"testing"
)

func TestAttribute(t *testing.T) {
	steps := []routeStep{
		{name: "create", creation: true, path: "/r/a"},
		{name: "touch again", creation: false, path: "/r/a"},
		{name: "mknod", creation: true, path: "/r/m"},
		{name: "link", creation: false, path: "/r/h"},
	}
	ours := map[string][]string{
		"/r/a": {"open (touch)"},
		"/r/m": {"mknod (fwopen)", "mknod (fwopen)"}, // reported twice: both shown
	}
	fan := map[string][]string{
		"/r/a": {"CREATE", "CREATE"}, // the second touch reported too
		"/r/h": {"CREATE"},
	}
	want := []Route{
		{Name: "create", Creation: true, Path: "/r/a", Ours: "open (touch)", Fanotify: "CREATE"},
		{Name: "touch again", Path: "/r/a", Fanotify: "CREATE"},
		{Name: "mknod", Creation: true, Path: "/r/m", Ours: "mknod (fwopen); mknod (fwopen)"},
		{Name: "link", Path: "/r/h", Fanotify: "CREATE"},
	}
	if got := attribute(steps, ours, fan); !reflect.DeepEqual(got, want) {
		t.Errorf("attribute:\n got %+v\nwant %+v", got, want)
	}
}
