package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

var loaderReady = regexp.MustCompile(`msg=ready listen=(\S+)`)

// Loader is a filewatcher-loader on this host (synthetic source).
type Loader struct {
	*Process
	Addr   string
	conn   *grpc.ClientConn
	client pb.EventServiceClient
}

// startSyntheticLoader starts the loader with the synthetic source at rate
// events/s and the path mix dirs x names, on a free loopback port.
func (b *Bench) startSyntheticLoader(tag string, rate, dirs, names int, extra ...string) (*Loader, error) {
	argv := []string{b.loaderBin, "--source", "synthetic", "--rate", strconv.Itoa(rate),
		"--synthetic-dirs", strconv.Itoa(dirs), "--synthetic-names", strconv.Itoa(names),
		"--listen", "127.0.0.1:0", "--log-level", "info"}
	argv = append(argv, extra...)
	p, err := startProcess("loader", filepath.Join(b.work, tag+"-loader.log"), nil, argv...)
	if err != nil {
		return nil, err
	}
	addr, err := p.waitLog(loaderReady, 20*time.Second)
	if err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	l := &Loader{Process: p, Addr: addr}
	if err := l.dial(); err != nil {
		p.Stop(time.Second)
		return nil, err
	}
	return l, nil
}

func (l *Loader) dial() error {
	conn, err := grpc.NewClient(l.Addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		return fmt.Errorf("dial loader %s: %w", l.Addr, err)
	}
	l.conn = conn
	l.client = pb.NewEventServiceClient(conn)
	return nil
}

// Close stops the loader and closes the connection.
func (l *Loader) Close() {
	if l.conn != nil {
		l.conn.Close()
	}
	if l.Process != nil {
		l.Stop(5 * time.Second)
	}
}

// Status asks the loader for its status.
func (l *Loader) Status(ctx context.Context) (*pb.GetStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return l.client.GetStatus(ctx, &pb.GetStatusRequest{})
}

// waitSubscribers waits until the loader has n subscribers.
func (l *Loader) waitSubscribers(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := l.Status(ctx)
		if err == nil && len(st.Subscribers) >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("loader %s: fewer than %d subscribers after %v (last error: %v)", l.Addr, n, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Counter is a subscriber that counts what it receives: events (those under
// prefix separately), gaps by reason, and the highest sequence accounted for.
type Counter struct {
	prefix []byte

	mu         sync.Mutex
	events     uint64
	matching   uint64
	gaps       map[pb.GapReason]uint64
	next       uint64 // next sequence expected; 0 before the first
	unexplain  uint64 // sequence numbers skipped without a gap
	start      uint64 // first sequence this stream accounts for (response header)
	err        error
	samplePath []byte
	// With record(): each event under prefix, by path (kind and comm).
	recording bool
	reports   map[string][]string

	cancel context.CancelFunc
	done   chan struct{}
}

// CounterSnapshot is a Counter's totals at one moment.
type CounterSnapshot struct {
	Events, Matching, Unexplained uint64
	Gaps                          map[pb.GapReason]uint64
	Next                          uint64
}

// Lost is the sum of gap sizes.
func (s CounterSnapshot) Lost() uint64 {
	var n uint64
	for _, v := range s.Gaps {
		n += v
	}
	return n
}

// subscribe opens a stream and counts it in the background.
func (l *Loader) subscribe(ctx context.Context, prefix string) (*Counter, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := l.client.Subscribe(ctx, &pb.SubscribeRequest{MaxBatchSize: 4096, MaxBatchDelayMs: 10})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to %s: %w", l.Addr, err)
	}
	hdr, err := stream.Header()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to %s: headers: %w", l.Addr, err)
	}
	c := &Counter{prefix: []byte(prefix), gaps: map[pb.GapReason]uint64{}, cancel: cancel, done: make(chan struct{})}
	c.start = headerUint(hdr, "filewatcher-start-sequence")
	if c.start > 0 {
		c.next = c.start
	}
	go c.run(stream)
	return c, nil
}

func headerUint(md metadata.MD, key string) uint64 {
	v := md.Get(key)
	if len(v) == 0 {
		return 0
	}
	n, _ := strconv.ParseUint(v[0], 10, 64)
	return n
}

func (c *Counter) run(stream pb.EventService_SubscribeClient) {
	defer close(c.done)
	for {
		resp, err := stream.Recv()
		if err != nil {
			if !errors.Is(err, io.EOF) && stream.Context().Err() == nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
			return
		}
		c.mu.Lock()
		gi := 0
		for _, ev := range resp.Events {
			for gi < len(resp.Gaps) && resp.Gaps[gi].FirstSequence < ev.Sequence {
				c.gap(resp.Gaps[gi])
				gi++
			}
			c.observe(ev.Sequence, ev.Sequence)
			c.events++
			if bytes.HasPrefix(ev.Path, c.prefix) {
				c.matching++
				if c.recording {
					c.reports[string(ev.Path)] = append(c.reports[string(ev.Path)],
						fmt.Sprintf("%s (%s, uid %d)", pb.KindName(ev.Kind), ev.Comm, ev.Uid))
				}
			} else if c.samplePath == nil {
				c.samplePath = append([]byte(nil), ev.Path...)
			}
		}
		for ; gi < len(resp.Gaps); gi++ {
			c.gap(resp.Gaps[gi])
		}
		c.mu.Unlock()
	}
}

func (c *Counter) gap(g *pb.Gap) {
	c.observe(g.FirstSequence, g.LastSequence)
	c.gaps[g.Reason] += g.LastSequence - g.FirstSequence + 1
}

func (c *Counter) observe(first, last uint64) {
	if c.next != 0 && first > c.next {
		c.unexplain += first - c.next
	}
	if last+1 > c.next {
		c.next = last + 1
	}
}

// record makes the counter keep what it receives under its prefix, from
// now on (for a handful of events: the routes table).
func (c *Counter) record() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recording, c.reports = true, map[string][]string{}
}

// recorded returns what record kept: path → each event's kind, comm and uid.
func (c *Counter) recorded() map[string][]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]string{}
	for k, v := range c.reports {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// Snapshot returns the totals so far.
func (c *Counter) Snapshot() CounterSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := map[pb.GapReason]uint64{}
	for k, v := range c.gaps {
		g[k] = v
	}
	return CounterSnapshot{Events: c.events, Matching: c.matching, Unexplained: c.unexplain, Gaps: g, Next: c.next}
}

// Err is the stream's error, if it ended abnormally.
func (c *Counter) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the stream.
func (c *Counter) Close() {
	c.cancel()
	<-c.done
}

// waitDrained waits until the counter has accounted for every sequence the
// loader assigned and nothing changed for quiet (the loader polls its loss
// counters every 100 ms, so gaps can trail the events).
func (c *Counter) waitDrained(ctx context.Context, l *Loader, quiet, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastSeq uint64
	var lastNext uint64
	stableSince := time.Now()
	for {
		st, err := l.Status(ctx)
		if err != nil {
			return err
		}
		snap := c.Snapshot()
		if st.LastSequence != lastSeq || snap.Next != lastNext {
			lastSeq, lastNext = st.LastSequence, snap.Next
			stableSince = time.Now()
		}
		if (lastSeq == 0 || snap.Next == lastSeq+1) && time.Since(stableSince) >= quiet {
			return nil
		}
		if err := c.Err(); err != nil {
			return fmt.Errorf("stream ended: %w", err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not drained after %v: loader at sequence %d, stream at %d", timeout, st.LastSequence, snap.Next-1)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
