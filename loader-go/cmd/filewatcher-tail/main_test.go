package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/internal/testutil"
	"github.com/filewatcher/filewatcher/loader-go/internal/access"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"github.com/filewatcher/filewatcher/loader-go/internal/server"
	"github.com/filewatcher/filewatcher/loader-go/internal/testcerts"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// loaderServer serves a hub on a listener, as filewatcher-loader does, and
// can be stopped and started again on the same address with the same hub:
// a restart that keeps the run.
type loaderServer struct {
	t    *testing.T
	hub  *hub.Hub
	addr string // as --loader takes it
	path string // unix socket, or empty
	opts []grpc.ServerOption
	gs   *grpc.Server
}

func newLoaderServer(t *testing.T, h *hub.Hub, opts ...grpc.ServerOption) *loaderServer {
	s := &loaderServer{t: t, hub: h, opts: opts}
	if len(opts) == 0 {
		s.path = filepath.Join(t.TempDir(), "loader.sock")
		s.addr = "unix://" + s.path
	}
	s.start()
	t.Cleanup(func() { s.gs.Stop() })
	return s
}

func (s *loaderServer) start() {
	var lis net.Listener
	var err error
	if s.path != "" {
		lis, err = net.Listen("unix", s.path)
	} else if s.addr == "" {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
	} else {
		lis, err = net.Listen("tcp", s.addr)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	if s.addr == "" {
		s.addr = lis.Addr().String()
	}
	s.gs = grpc.NewServer(append(s.opts, server.ServerOption())...)
	server.New(s.hub, server.Options{Version: "test", Status: []server.StatusFiller{source{}}}).Register(s.gs)
	go s.gs.Serve(lis)
}

type source struct{}

func (source) FillStatus(r *pb.GetStatusResponse) { r.Source = "test" }

// line is any output line.
type line struct {
	Type          string   `json:"type"`
	RunID         string   `json:"run_id"`
	Sequence      uint64   `json:"sequence"`
	StartSequence uint64   `json:"start_sequence"`
	Resumed       bool     `json:"resumed"`
	Path          string   `json:"path"`
	PathB64       *string  `json:"path_b64"`
	Comm          string   `json:"comm"`
	CommB64       *string  `json:"comm_b64"`
	UID           uint32   `json:"uid"`
	Time          string   `json:"time"`
	Flags         []string `json:"flags"`
	Kind          string   `json:"kind"`
	FirstSequence uint64   `json:"first_sequence"`
	LastSequence  uint64   `json:"last_sequence"`
	Count         uint64   `json:"count"`
	Reason        string   `json:"reason"`
}

// bytesOf returns the exact bytes a line says: base64 if present, else
// the string.
func bytesOf(t *testing.T, s string, b64 *string) []byte {
	t.Helper()
	if b64 == nil {
		return []byte(s)
	}
	b, err := base64.StdEncoding.DecodeString(*b64)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseLines(t *testing.T, out string) []line {
	t.Helper()
	var lines []line
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

func runTail(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut testutil.SyncBuffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestLines prints odd paths, a filter's choice and a gap, and checks that
// the lines give back the exact bytes.
func TestLines(t *testing.T) {
	h := hub.New("run-t", hub.Options{})
	srv := newLoaderServer(t, h)
	paths := [][]byte{
		[]byte("/tmp/\xff\xfenot-utf8"),
		[]byte("/tmp/new\nline \"quoted\" <tag> & back\\slash"),
		[]byte("/tmp/ünïcödé"),
		[]byte("/home/skipped"),
		[]byte("/tmp/last"),
	}
	go func() {
		// Publish once tail has subscribed (it prints a line first).
		for len(h.Subscribers()) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		evs := make([]*pb.FileCreatedEvent, len(paths))
		for i, p := range paths {
			evs[i] = &pb.FileCreatedEvent{Path: p, Comm: []byte("c\xffm"), Uid: 1000, TimeUnixNano: 1_700_000_000_123_456_789}
		}
		evs[4].Flags = uint32(pb.EventFlag_EVENT_FLAG_PATH_UNRESOLVED)
		for i := range evs {
			evs[i].Kind = pb.EventKind_EVENT_KIND_OPEN
		}
		evs[2].Kind, evs[4].Kind = 0, 42 // an older loader's event; one this tail does not know
		h.Publish(evs[:3])
		h.PublishGap(pb.GapReason_GAP_REASON_RINGBUF_FULL, 2)
		h.Publish(evs[3:])
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, out, errOut := runTail(t, ctx, "--loader", srv.addr, "--prefix", "/tmp/", "--count", "4", "--batch-delay", "1ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := parseLines(t, out)
	if len(lines) != 6 {
		t.Fatalf("%d lines, want subscribed, 3 events, a gap, an event:\n%s", len(lines), out)
	}
	if l := lines[0]; l.Type != "subscribed" || l.RunID != "run-t" || l.StartSequence != 1 || l.Resumed {
		t.Errorf("first line %+v", l)
	}
	want := []int{0, 1, 2, -1, 4} // event lines by path index; -1 the gap
	for i, l := range lines[1:] {
		if want[i] < 0 {
			if l.Type != "gap" || l.FirstSequence != 4 || l.LastSequence != 5 || l.Count != 2 || l.Reason != "GAP_REASON_RINGBUF_FULL" {
				t.Errorf("gap line %+v", l)
			}
			continue
		}
		p := paths[want[i]]
		if l.Type != "event" || l.RunID != "run-t" || !bytes.Equal(bytesOf(t, l.Path, l.PathB64), p) ||
			!bytes.Equal(bytesOf(t, l.Comm, l.CommB64), []byte("c\xffm")) || l.UID != 1000 ||
			l.Time != "2023-11-14T22:13:20.123456789Z" {
			t.Errorf("line %d: %+v, want path %q", i+1, l, p)
		}
		if wantKind := []string{"open", "open", "unspecified", "", "42"}[want[i]]; l.Kind != wantKind {
			t.Errorf("line %d: kind %q, want %q", i+1, l.Kind, wantKind)
		}
		if (l.PathB64 != nil) == bytes.Equal([]byte(l.Path), p) {
			t.Errorf("line %d: path_b64 present %v for %q", i+1, l.PathB64 != nil, p)
		}
	}
	if l := lines[5]; l.Sequence != 7 || len(l.Flags) != 1 || l.Flags[0] != "EVENT_FLAG_PATH_UNRESOLVED" {
		t.Errorf("last line %+v", l)
	}
	if !strings.Contains(out, `<tag> & back\\slash`) {
		t.Errorf("HTML escaping in %s", out)
	}
}

// TestReconnectResumes restarts the server under a --reconnect tail: it
// must resume after the last sequence it printed, with nothing lost or
// repeated; --resume starts from a given position.
func TestReconnectResumes(t *testing.T) {
	h := hub.New("run-r", hub.Options{ReplaySize: 1000})
	srv := newLoaderServer(t, h)
	events := func(n int) []*pb.FileCreatedEvent {
		evs := make([]*pb.FileCreatedEvent, n)
		for i := range evs {
			evs[i] = &pb.FileCreatedEvent{Path: []byte("/r")}
		}
		return evs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut testutil.SyncBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"--loader", srv.addr, "--reconnect", "--count", "30", "--batch-delay", "1ms"}, &out, &errOut)
	}()
	waitFor(t, func() bool { return len(h.Subscribers()) == 1 })
	h.Publish(events(10))
	waitFor(t, func() bool { return strings.Count(out.String(), `"type":"event"`) == 10 })
	srv.gs.Stop() // the loader goes away...
	h.Publish(events(10))
	srv.start() // ...and comes back with the same run
	h.Publish(events(10))
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var seqs []uint64
	subscribed := 0
	for _, l := range parseLines(t, out.String()) {
		switch l.Type {
		case "event":
			seqs = append(seqs, l.Sequence)
		case "subscribed":
			subscribed++
			if subscribed == 2 && (!l.Resumed || l.StartSequence != 11) {
				t.Errorf("second subscription %+v, want resumed at 11", l)
			}
		default:
			t.Errorf("unexpected line %+v", l)
		}
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("sequences %v, want 1-30 once each", seqs)
		}
	}
	if len(seqs) != 30 || subscribed != 2 {
		t.Errorf("%d events, %d subscriptions", len(seqs), subscribed)
	}

	code, o, e := runTail(t, ctx, "--loader", srv.addr, "--resume", "run-r:25", "--count", "3")
	lines := parseLines(t, o)
	if code != 0 || len(lines) != 4 || !lines[0].Resumed || lines[1].Sequence != 26 || lines[3].Sequence != 28 {
		t.Errorf("--resume run-r:25: exit %d, %s %s", code, o, e)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTLSAndStatus asks for the status over mutual TLS.
func TestTLSAndStatus(t *testing.T) {
	dir := t.TempDir()
	ca, err := testcerts.NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	srvPair, err := ca.Server("server")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Client("tail")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := access.ServerTLS(access.TLSFiles{Cert: srvPair.CertFile, Key: srvPair.KeyFile, ClientCA: ca.CertFile})
	if err != nil {
		t.Fatal(err)
	}
	srv := newLoaderServer(t, hub.New("run-tls", hub.Options{}), grpc.Creds(credentials.NewTLS(cfg)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, out, errOut := runTail(t, ctx, "--loader", srv.addr, "--status",
		"--tls-ca", ca.CertFile, "--tls-cert", cli.CertFile, "--tls-key", cli.KeyFile)
	var st struct {
		RunID string `json:"run_id"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || st.RunID != "run-tls" {
		t.Fatalf("exit %d, stdout %s, stderr %s", code, out, errOut)
	}
	if code, _, _ := runTail(t, ctx, "--loader", srv.addr, "--status", "--tls-ca", ca.CertFile); code != 1 {
		t.Errorf("without a client certificate: exit %d, want 1", code)
	}
}

// TestKindFlag: --kind takes the names tail prints, into Filter.kinds.
func TestKindFlag(t *testing.T) {
	o, err := parse([]string{"--kind", "open, Open", "--kind", "OPEN"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := []pb.EventKind{pb.EventKind_EVENT_KIND_OPEN, pb.EventKind_EVENT_KIND_OPEN, pb.EventKind_EVENT_KIND_OPEN}
	if got := o.req.Filter.Kinds; !slices.Equal(got, want) {
		t.Errorf("kinds %v, want %v", got, want)
	}
}

func TestUsage(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"--overflow-policy", "sometimes"},
		{"--uid", "alice"},
		{"--cgroup-id", "1,x"},
		{"--kind", "open,rename"},
		{"--kind", "unspecified"},
		{"--batch-size", "5000"},
		{"stray"},
	} {
		if code, _, errOut := runTail(t, ctx, args...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
	if code, _, errOut := runTail(t, ctx, "--resume", "nonsense", "--loader", "unix:///nonexistent.sock"); code != 1 || !strings.Contains(errOut, "RUN_ID:SEQUENCE") {
		t.Errorf("bad --resume: exit %d, %q", code, errOut)
	}
	if code, out, _ := runTail(t, ctx, "--version"); code != 0 || !strings.Contains(out, "filewatcher-tail") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}
