// Command filewatcher-tail subscribes to filewatcher-loader and prints every
// file-creation event, and every gap, as one JSON object per line. It is the
// smallest useful client of filewatcher.v1 and a worked example of the API:
// filters, overflow policy, batching, TLS, and resuming after a reconnect.
//
// Paths and comms are bytes, not necessarily UTF-8. Each is printed as a
// JSON string ("path", with U+FFFD for bytes that are not UTF-8) and, only
// when that string is not the exact bytes, also base64-encoded ("path_b64"),
// so the output is lossless: bytes = path_b64 if present, else path.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/filewatcher/filewatcher/loader-go/internal/client"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const defaultLoader = "unix:///run/filewatcher/loader.sock"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command line, parsed.
type options struct {
	loader    string
	tls       client.TLS
	req       *pb.SubscribeRequest
	resume    string
	reconnect bool
	count     uint64
	status    bool
	version   bool
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{req: &pb.SubscribeRequest{Filter: &pb.Filter{}}}
	f := o.req.Filter
	fs := flag.NewFlagSet("filewatcher-tail", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: filewatcher-tail [flags]\n\nPrints file-creation events from filewatcher-loader as JSON lines.\nRepeatable flags also take comma-separated lists; all given filters must match.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.loader, "loader", defaultLoader, "the loader's address: unix:///abs/path or host:port")
	fs.Func("prefix", "only paths starting with these bytes (repeatable)", func(s string) error {
		f.PathPrefixes = append(f.PathPrefixes, []byte(s))
		return nil
	})
	fs.Func("glob", "only paths matching this glob, Go path.Match syntax: '*' stops at '/' (repeatable)", func(s string) error {
		f.PathGlobs = append(f.PathGlobs, s)
		return nil
	})
	fs.Func("uid", "only files created by these uids (repeatable, comma-separated)", func(s string) error {
		return eachNumber(s, 32, func(n uint64) { f.Uids = append(f.Uids, uint32(n)) })
	})
	fs.Func("comm", "only files created by tasks with this comm, exactly (repeatable)", func(s string) error {
		f.Comms = append(f.Comms, []byte(s))
		return nil
	})
	fs.Func("cgroup-id", "only files created in these cgroup v2 ids (repeatable, comma-separated)", func(s string) error {
		return eachNumber(s, 64, func(n uint64) { f.CgroupIds = append(f.CgroupIds, n) })
	})
	fs.Func("kind", "only files created this way: "+strings.Join(knownKinds(), ", ")+" (repeatable, comma-separated)", func(s string) error {
		for _, name := range strings.Split(s, ",") {
			k, ok := pb.EventKind_value[pb.KindPrefix+strings.ToUpper(strings.TrimSpace(name))]
			if !ok || k == 0 {
				return fmt.Errorf("unknown kind %q (known: %s)", name, strings.Join(knownKinds(), ", "))
			}
			f.Kinds = append(f.Kinds, pb.EventKind(k))
		}
		return nil
	})
	policy := fs.String("overflow-policy", "drop-newest", "when this client falls behind: drop-newest, drop-oldest or close")
	batchSize := fs.Uint("batch-size", 0, "events per message at most (0: the loader's default, 256)")
	batchDelay := fs.Duration("batch-delay", 0, "how long the loader may hold a partial batch (0: its default, 20ms)")
	fs.StringVar(&o.resume, "resume", "", "RUN_ID:SEQUENCE: continue after this sequence of this run (as printed in every line)")
	fs.BoolVar(&o.reconnect, "reconnect", false, "when the stream ends (loader restart, connection lost), subscribe again and resume")
	fs.Uint64Var(&o.count, "count", 0, "exit after this many events (0: never)")
	fs.BoolVar(&o.status, "status", false, "print the loader's status (GetStatus) as JSON and exit")
	fs.BoolVar(&o.tls.Enable, "tls", false, "use TLS (implied by the other --tls-* flags)")
	fs.StringVar(&o.tls.CA, "tls-ca", "", "PEM CA certificates that verify the loader (default: the system's)")
	fs.StringVar(&o.tls.Cert, "tls-cert", "", "PEM client certificate, for mutual TLS")
	fs.StringVar(&o.tls.Key, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&o.tls.ServerName, "tls-server-name", "", "name to verify in the loader's certificate (default: the host of --loader)")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	p, ok := pb.OverflowPolicy_value["OVERFLOW_POLICY_"+strings.ToUpper(strings.ReplaceAll(*policy, "-", "_"))]
	if !ok || p == 0 {
		return nil, fmt.Errorf("--overflow-policy %q: want drop-newest, drop-oldest or close", *policy)
	}
	o.req.OverflowPolicy = pb.OverflowPolicy(p)
	if *batchSize > 4096 || *batchDelay < 0 || *batchDelay > time.Minute {
		return nil, errors.New("--batch-size is at most 4096 and --batch-delay between 0 and 1m")
	}
	o.req.MaxBatchSize = uint32(*batchSize)
	o.req.MaxBatchDelayMs = uint32(batchDelay.Milliseconds())
	return o, nil
}

func eachNumber(s string, bits int, add func(uint64)) error {
	for _, v := range strings.Split(s, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, bits)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		add(n)
	}
	return nil
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "filewatcher-tail:", err)
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, "filewatcher-tail", version)
		return 0
	}
	if err := tail(ctx, o, stdout); err != nil && !errors.Is(err, errDone) && ctx.Err() == nil {
		fmt.Fprintln(stderr, "filewatcher-tail:", err)
		return 1
	}
	return 0
}

// errDone ends the stream once --count events are printed.
var errDone = errors.New("done")

func tail(ctx context.Context, o *options, stdout io.Writer) error {
	conn, err := client.Dial(o.loader, o.tls)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := pb.NewEventServiceClient(conn)
	if o.status {
		st, err := c.GetStatus(ctx, &pb.GetStatusRequest{})
		if err != nil {
			return err
		}
		b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true, UseProtoNames: true}.Marshal(st)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", b)
		return err
	}
	fl := &client.Follower{
		Client:     c,
		Request:    o.req,
		Reconnect:  o.reconnect,
		MinBackoff: 200 * time.Millisecond,
		MaxBackoff: 10 * time.Second,
	}
	if o.resume != "" {
		if fl.Position, err = client.ParsePosition(o.resume); err != nil {
			return err
		}
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	p := &printer{w: w, enc: json.NewEncoder(w), limit: o.count}
	p.enc.SetEscapeHTML(false)
	fl.Handler = p
	return fl.Follow(ctx)
}

// printer writes the stream as JSON lines, one message at a time.
type printer struct {
	w       *bufio.Writer
	enc     *json.Encoder
	runID   string
	limit   uint64
	printed uint64
}

type subscribedLine struct {
	Type          string `json:"type"`
	RunID         string `json:"run_id"`
	StartSequence uint64 `json:"start_sequence"`
	Resumed       bool   `json:"resumed"`
}

type eventLine struct {
	Type     string   `json:"type"`
	RunID    string   `json:"run_id"`
	Sequence uint64   `json:"sequence"`
	Time     string   `json:"time"`
	KtimeNs  uint64   `json:"ktime_ns"`
	PID      uint32   `json:"pid"`
	TGID     uint32   `json:"tgid"`
	UID      uint32   `json:"uid"`
	GID      uint32   `json:"gid"`
	FSUID    uint32   `json:"fsuid"`
	FSGID    uint32   `json:"fsgid"`
	CgroupID uint64   `json:"cgroup_id"`
	Comm     string   `json:"comm"`
	CommB64  string   `json:"comm_b64,omitempty"`
	Path     string   `json:"path"`
	PathB64  string   `json:"path_b64,omitempty"`
	Kind     string   `json:"kind"`
	Flags    []string `json:"flags,omitempty"`
}

type gapLine struct {
	Type          string `json:"type"`
	RunID         string `json:"run_id"`
	FirstSequence uint64 `json:"first_sequence"`
	LastSequence  uint64 `json:"last_sequence"`
	Count         uint64 `json:"count"`
	Reason        string `json:"reason"`
}

func (p *printer) Subscribed(runID string, start uint64, resumed bool) error {
	p.runID = runID
	if err := p.enc.Encode(subscribedLine{"subscribed", runID, start, resumed}); err != nil {
		return err
	}
	return p.w.Flush()
}

// Message prints events and gaps in sequence order.
func (p *printer) Message(m *pb.SubscribeResponse) error {
	evs, gaps := m.Events, m.Gaps
	for len(evs) > 0 || len(gaps) > 0 {
		var err error
		if len(gaps) > 0 && (len(evs) == 0 || gaps[0].FirstSequence < evs[0].Sequence) {
			g := gaps[0]
			gaps = gaps[1:]
			err = p.enc.Encode(gapLine{"gap", p.runID, g.FirstSequence, g.LastSequence,
				g.LastSequence - g.FirstSequence + 1, g.Reason.String()})
		} else {
			err = p.enc.Encode(p.event(evs[0]))
			evs = evs[1:]
			p.printed++
		}
		if err != nil {
			return err
		}
		if p.limit > 0 && p.printed >= p.limit {
			p.w.Flush()
			return errDone
		}
	}
	return p.w.Flush()
}

func (p *printer) event(ev *pb.FileCreatedEvent) eventLine {
	l := eventLine{
		Type: "event", RunID: p.runID, Sequence: ev.Sequence,
		Time:    time.Unix(0, ev.TimeUnixNano).UTC().Format(time.RFC3339Nano),
		KtimeNs: ev.KtimeNs, PID: ev.Pid, TGID: ev.Tgid, UID: ev.Uid, GID: ev.Gid,
		FSUID: ev.Fsuid, FSGID: ev.Fsgid, CgroupID: ev.CgroupId,
	}
	l.Path, l.PathB64 = text(ev.Path)
	l.Comm, l.CommB64 = text(ev.Comm)
	l.Kind = pb.KindName(ev.Kind)
	if ev.Flags&uint32(pb.EventFlag_EVENT_FLAG_PATH_UNRESOLVED) != 0 {
		l.Flags = append(l.Flags, pb.EventFlag_EVENT_FLAG_PATH_UNRESOLVED.String())
	}
	return l
}

// knownKinds are the kinds --kind takes, by number: every EventKind but
// EVENT_KIND_UNSPECIFIED, as pb.KindName names them.
func knownKinds() []string {
	var names []string
	for _, n := range slices.Sorted(maps.Keys(pb.EventKind_name)) {
		if n != 0 {
			names = append(names, pb.KindName(pb.EventKind(n)))
		}
	}
	return names
}

// text returns b as a string for people and, when that string is not b
// exactly (b is not UTF-8), b in base64.
func text(b []byte) (s, b64 string) {
	if utf8.Valid(b) {
		return string(b), ""
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), base64.StdEncoding.EncodeToString(b)
}
