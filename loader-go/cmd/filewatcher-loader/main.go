// Command filewatcher-loader loads the filewatcher kernel module and its BPF
// program, numbers every file-creation event, and streams the events to any
// number of gRPC subscribers (filewatcher.v1.EventService), with the standard
// health service and server reflection.
//
// Every flag --name can also be set in the environment as FILEWATCHER_NAME
// (dashes become underscores); flags win. Run with --help for the list.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/config"
	"github.com/filewatcher/filewatcher/loader-go/internal/hub"
	"github.com/filewatcher/filewatcher/loader-go/internal/kernel"
	"github.com/filewatcher/filewatcher/loader-go/internal/listen"
	"github.com/filewatcher/filewatcher/loader-go/internal/sdnotify"
	"github.com/filewatcher/filewatcher/loader-go/internal/server"
	"github.com/filewatcher/filewatcher/loader-go/internal/synthetic"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// errHandover is the cause of the context's end on SIGUSR2: stop, but leave
// what --pin-dir pinned for the next loader (SIGTERM and SIGINT unpin).
var errHandover = errors.New("handing over to the next loader (SIGUSR2)")

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGUSR2)
	go func() {
		sig := <-sigs
		signal.Stop(sigs) // a second signal kills, as by default
		if sig == syscall.SIGUSR2 {
			cancel(errHandover)
		}
		cancel(fmt.Errorf("signal %v", sig))
	}()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil))
}

// run is main without the process: it returns the exit code. ready, if not
// nil, is called with the listening address once serving.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(net.Addr)) int {
	cfg, err := config.Parse(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "filewatcher-loader:", err)
		return 2
	}
	if cfg.Version {
		fmt.Fprintln(stdout, "filewatcher-loader", version)
		return 0
	}
	log := cfg.NewLogger(stderr)
	if err := serve(ctx, cfg, log, ready); err != nil {
		log.Error("exiting", "error", err)
		return 1
	}
	return 0
}

// source is an event source as the loader drives it.
type source struct {
	name   string
	run    func(context.Context, *hub.Hub) error
	status []server.StatusFiller // the server fills a status report with each
	// close ends the source; handover leaves what it pinned for the next
	// loader (--pin-dir).
	close func(handover bool) error
	// resumed is the run taken over from an earlier loader; nil: a new run.
	resumed *kernel.Resumed
}

func openSource(cfg config.Config, runID string, log *slog.Logger) (*source, error) {
	if cfg.Source == config.SourceSynthetic {
		s := synthetic.New(synthetic.Options{Rate: cfg.Rate, Dirs: cfg.SyntheticDirs, Names: cfg.SyntheticNames})
		return &source{
			name:   s.Name(),
			run:    func(ctx context.Context, h *hub.Hub) error { return s.Run(ctx, h) },
			status: []server.StatusFiller{s},
			close:  func(bool) error { return nil },
		}, nil
	}
	return openKernel(cfg, runID, log)
}

func serve(ctx context.Context, cfg config.Config, log *slog.Logger, ready func(net.Addr)) (err error) {
	addr, err := listen.Parse(cfg.Listen)
	if err != nil {
		return err
	}
	// Settle access before loading anything: a typo in a flag should not
	// cost a module load.
	acc, err := resolveAccess(cfg)
	if err != nil {
		return err
	}
	runID, err := newRunID()
	if err != nil {
		return err
	}
	src, err := openSource(cfg, runID, log)
	if err != nil {
		return err
	}
	if src.resumed != nil {
		runID = src.resumed.RunID
	}
	h := hub.New(runID, hub.Options{QueueSize: cfg.QueueSize, QueueBytes: cfg.QueueBytes,
		ReplaySize: cfg.ReplaySize, ReplayBytes: cfg.ReplayBytes})
	if r := src.resumed; r != nil {
		h.Resume(r.Next, r.Loss)
	}
	defer func() {
		handover := errors.Is(context.Cause(ctx), errHandover)
		if cerr := src.close(handover); cerr != nil {
			log.Error("cleanup", "error", cerr)
			err = errors.Join(err, cerr)
		}
	}()
	if acc.verdict.Warning != "" {
		log.Warn(acc.verdict.Warning, "listen", addr.String())
	}
	lis, err := listen.Listen(addr, listen.Options{SocketGID: acc.socketGID})
	if err != nil {
		return err
	}
	defer lis.Close()
	guard, creds, err := acc.guard(addr, log)
	if err != nil {
		return err
	}

	opts := append([]grpc.ServerOption{
		server.ServerOption(),
		// A peer that connects and says nothing is dropped soon.
		grpc.ConnectionTimeout(10 * time.Second),
		// Pings find clients that vanished without closing (a host that
		// went away) so that they do not hold a subscriber slot forever.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		// Clients may ping too, to notice a dead loader (grpc-go's default
		// would answer pings more often than every 5 minutes with GOAWAY).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}, guard.ServerOptions()...)
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(opts...)
	server.New(h, server.Options{
		Version:               version,
		MaxSubscribers:        cfg.MaxSubscribers,
		MaxSubscribersPerPeer: cfg.MaxSubscribersPerPeer,
		StallTimeout:          cfg.StallTimeout,
		Status:                append(src.status, guard),
	}).Register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	setHealth(hs, healthpb.HealthCheckResponse_NOT_SERVING)

	srcCtx, stopSource := context.WithCancel(ctx)
	defer stopSource()
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.run(srcCtx, h) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- gs.Serve(lis) }()
	setHealth(hs, healthpb.HealthCheckResponse_SERVING)
	log.Info("ready", "listen", listenString(addr, lis.Addr()), "access", acc.describe(addr),
		"source", src.name, "run_id", runID, "resumed", src.resumed != nil, "version", version)
	if err := sdnotify.Ready(); err != nil {
		log.Warn("cannot notify systemd", "error", err)
	}
	if ready != nil {
		ready(lis.Addr())
	}

	select {
	case <-ctx.Done():
		log.Info("shutting down", "cause", context.Cause(ctx))
	case err = <-srcDone:
		err = fmt.Errorf("event source stopped: %w", errOrUnexpected(err))
		srcDone <- nil
	case err = <-serveDone:
		err = fmt.Errorf("serve: %w", errOrUnexpected(err))
	}
	if err := sdnotify.Stopping(); err != nil {
		log.Warn("cannot notify systemd", "error", err)
	}
	hs.Shutdown()
	stopSource()
	<-srcDone
	h.Close() // subscribers drain their queues and end with UNAVAILABLE
	gracefulStop(gs, cfg.ShutdownTimeout, log)
	return err
}

func setHealth(hs *health.Server, st healthpb.HealthCheckResponse_ServingStatus) {
	hs.SetServingStatus("", st)
	hs.SetServingStatus(pb.EventService_ServiceDesc.ServiceName, st)
}

// gracefulStop lets streams finish, then cuts whatever is still running
// after timeout (a client that stopped reading).
func gracefulStop(gs *grpc.Server, timeout time.Duration, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		log.Warn("graceful stop timed out; closing remaining streams", "timeout", timeout)
		gs.Stop()
		<-done
	}
}

func errOrUnexpected(err error) error {
	if err == nil {
		return errors.New("ended unexpectedly")
	}
	return err
}

func listenString(a listen.Address, actual net.Addr) string {
	if a.Network == "unix" {
		return a.String()
	}
	return actual.String()
}

// newRunID returns a random identifier for this run of the loader.
func newRunID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("make run id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
