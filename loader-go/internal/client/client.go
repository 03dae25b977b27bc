// Package client is a small Go client of filewatcher.v1.EventService: it
// dials the loader (unix socket, TCP, TLS, mutual TLS) and follows the event
// stream across reconnects, resuming after the last sequence it accounted
// for. filewatcher-tail is built on it; it is also a worked example of what
// docs/api.md asks of any client.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/access"
	"github.com/filewatcher/filewatcher/loader-go/internal/listen"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Response header keys the loader sends when a subscription starts.
const (
	HeaderRunID         = "filewatcher-run-id"
	HeaderStartSequence = "filewatcher-start-sequence"
)

// TLS configures TLS towards a TCP address.
type TLS struct {
	// Enable uses TLS with the system's roots unless CA is set. Setting any
	// other field enables it too.
	Enable bool
	// CA verifies the server's certificate (PEM file).
	CA string
	// Cert and Key are the client's certificate, for mutual TLS.
	Cert, Key string
	// ServerName overrides the name checked in the server's certificate.
	ServerName string
}

func (t TLS) enabled() bool {
	return t.Enable || t.CA != "" || t.Cert != "" || t.Key != "" || t.ServerName != ""
}

func (t TLS) config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CA != "" {
		pool, err := access.LoadCertPool(t.CA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = pool
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, errors.New("a client certificate needs both --tls-cert and --tls-key")
	}
	if t.Cert != "" {
		cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("load --tls-cert and --tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Dial returns a connection to the loader at addr, "unix:///abs/path" or
// "host:port" as the loader's --listen takes them.
func Dial(addr string, t TLS, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	a, err := listen.Parse(addr)
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if t.enabled() {
		if a.Network == "unix" {
			return nil, errors.New("TLS applies to TCP addresses: the unix socket needs none")
		}
		cfg, err := t.config()
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	target := a.String()
	if a.Network == "tcp" {
		target = "passthrough:///" + a.Addr
	}
	return grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, opts...)...)
}

// Position is how far a client has accounted for a run: every sequence up
// to Last was delivered, filtered out or reported in a gap.
type Position struct {
	RunID string
	Last  uint64
}

// ParsePosition reads "RUN_ID:SEQUENCE".
func ParsePosition(s string) (Position, error) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ':' {
			n, err := strconv.ParseUint(s[i+1:], 10, 64)
			if err != nil || i == 0 {
				break
			}
			return Position{RunID: s[:i], Last: n}, nil
		}
	}
	return Position{}, fmt.Errorf("resume position %q: want RUN_ID:SEQUENCE", s)
}

// String formats p as ParsePosition reads it.
func (p Position) String() string { return p.RunID + ":" + strconv.FormatUint(p.Last, 10) }

// Handler receives what a Follower reads.
type Handler interface {
	// Subscribed is called when a stream starts: the run, the first
	// sequence it accounts for, and whether it resumed from the position.
	Subscribed(runID string, start uint64, resumed bool) error
	// Message is called for every message. An error ends Follow.
	Message(*pb.SubscribeResponse) error
}

// Follower follows the event stream.
type Follower struct {
	// Client is the loader's EventService.
	Client pb.EventServiceClient
	// Request is the template of every Subscribe: filter, overflow policy,
	// batching. Its resume fields are set from Position.
	Request *pb.SubscribeRequest
	// Position is where to resume; it advances as messages arrive.
	Position Position
	// Reconnect makes Follow subscribe again, resuming from Position, after
	// a stream ends with an error that may pass (the loader restarting, a
	// connection lost, too many subscribers, the CLOSE overflow policy).
	Reconnect bool
	// MinBackoff and MaxBackoff bound the delay between attempts; the delay
	// doubles per failed attempt and resets once a message arrives.
	MinBackoff, MaxBackoff time.Duration
	// Handler receives the stream.
	Handler Handler
}

// Follow reads the stream until ctx ends, the handler fails, or the stream
// ends with an error that reconnecting cannot fix (or any error without
// Reconnect).
func (f *Follower) Follow(ctx context.Context) error {
	delay := max(f.MinBackoff, 100*time.Millisecond)
	maxDelay := max(f.MaxBackoff, delay)
	for {
		progressed, err := f.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var herr handlerError
		if !f.Reconnect || errors.As(err, &herr) || !Retryable(err) {
			return err
		}
		if progressed {
			delay = max(f.MinBackoff, 100*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, maxDelay)
	}
}

// Retryable reports whether a stream that ended with err is worth
// subscribing to again.
func Retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted, codes.DeadlineExceeded, codes.Internal, codes.Unknown:
		return true
	}
	return false
}

type handlerError struct{ error }

func (e handlerError) Unwrap() error { return e.error }

// stream runs one Subscribe call; progressed says whether a message came.
func (f *Follower) stream(ctx context.Context) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &pb.SubscribeRequest{}
	if f.Request != nil {
		req = proto.Clone(f.Request).(*pb.SubscribeRequest)
	}
	req.ResumeRunId, req.ResumeAfterSequence = f.Position.RunID, f.Position.Last
	stream, err := f.Client.Subscribe(ctx, req)
	if err != nil {
		return false, err
	}
	md, err := stream.Header()
	if err != nil {
		return false, err
	}
	runID := first(md.Get(HeaderRunID))
	start, perr := strconv.ParseUint(first(md.Get(HeaderStartSequence)), 10, 64)
	if runID == "" || perr != nil {
		// The call failed before subscribing: Recv returns the status.
		_, err := stream.Recv()
		if err == nil {
			err = errors.New("loader sent no subscription headers")
		}
		return false, err
	}
	resumed := runID == f.Position.RunID && f.Position.RunID != ""
	f.Position = Position{RunID: runID, Last: start - 1}
	if err := f.Handler.Subscribed(runID, start, resumed); err != nil {
		return false, handlerError{err}
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return progressed, err
		}
		progressed = true
		if err := f.advance(resp); err != nil {
			return progressed, err
		}
		if err := f.Handler.Message(resp); err != nil {
			return progressed, handlerError{err}
		}
	}
}

// advance moves the position past a message, checking that sequences only
// grow: a loader bug, not a loss, if they do not.
func (f *Follower) advance(resp *pb.SubscribeResponse) error {
	last := f.Position.Last
	for _, ev := range resp.Events {
		if ev.Sequence <= last {
			return fmt.Errorf("event sequence %d after %d: out of order", ev.Sequence, last)
		}
		last = ev.Sequence
	}
	for _, g := range resp.Gaps {
		if g.FirstSequence > g.LastSequence {
			return fmt.Errorf("malformed gap %d-%d", g.FirstSequence, g.LastSequence)
		}
		last = max(last, g.LastSequence)
	}
	f.Position.Last = last
	return nil
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}
