package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	fwv1 "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"github.com/filewatcher/filewatcher/test/vm/agent/vmagent"
)

// Console lines that end a boot early: init reports a dead loader, or the
// kernel gave up.
var fatalConsole = [][]byte{
	[]byte("filewatcher-vm: loader exited"),
	[]byte("filewatcher-vm: FATAL"),
	[]byte("Kernel panic"),
}

// cmdWait waits until the guest agent answers and, with --grpc, until the
// loader answers a real GetStatus call. A TCP connect alone proves nothing:
// qemu's user-mode forwarding accepts connections even when nothing listens
// in the guest.
func cmdWait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ExitOnError)
	agentAddr := fs.String("agent", "", "agent address (host side)")
	grpcAddr := fs.String("grpc", "", "loader gRPC address (host side); empty: do not wait for the loader")
	pid := fs.Int("pid", 0, "qemu's pid: fail as soon as it exits")
	console := fs.String("console", "", "console log: fail as soon as it reports a fatal error")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	fs.Parse(args)
	if *agentAddr == "" {
		return errors.New("need --agent")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	w := waiter{pid: *pid, console: *console}

	var release string
	if err := w.until(ctx, "guest agent", func(ctx context.Context) (err error) {
		release, err = vmagent.Client{Addr: *agentAddr}.Ping(ctx)
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "vm: guest agent answers (kernel %s) after %.1fs\n", release, time.Since(start).Seconds())
	if *grpcAddr == "" {
		return nil
	}
	var status *fwv1.GetStatusResponse
	if err := w.until(ctx, "loader gRPC", func(ctx context.Context) (err error) {
		status, err = getStatus(ctx, *grpcAddr)
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "vm: loader serves gRPC (run %s, source %s, module %s) after %.1fs\n",
		status.GetRunId(), status.GetSource(), status.GetModuleVersion(), time.Since(start).Seconds())
	return nil
}

// waiter retries a probe while watching qemu and its console.
type waiter struct {
	pid     int
	console string
}

// until calls probe every 250 ms (each try bounded to 3 s) until it succeeds,
// ctx ends, qemu exits or the console reports a fatal error.
func (w waiter) until(ctx context.Context, what string, probe func(context.Context) error) error {
	var last error
	for {
		if err := w.fatal(); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		try, cancel := context.WithTimeout(ctx, 3*time.Second)
		last = probe(try)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s (last error: %v)", what, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// fatal reports why waiting longer is pointless, if it is.
func (w waiter) fatal() error {
	if w.pid > 0 {
		if err := syscall.Kill(w.pid, 0); errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("qemu (pid %d) exited", w.pid)
		}
	}
	if w.console != "" {
		log, _ := os.ReadFile(w.console)
		for _, marker := range fatalConsole {
			if i := bytes.Index(log, marker); i >= 0 {
				line := log[i:]
				if j := bytes.IndexByte(line, '\n'); j >= 0 {
					line = line[:j]
				}
				return fmt.Errorf("console: %s", bytes.TrimSpace(line))
			}
		}
	}
	return nil
}

// getStatus makes one GetStatus call on a fresh connection, so that a
// reconnect backoff from an earlier failure cannot delay it.
func getStatus(ctx context.Context, addr string) (*fwv1.GetStatusResponse, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", addr, err)
	}
	defer conn.Close()
	return fwv1.NewEventServiceClient(conn).GetStatus(ctx, &fwv1.GetStatusRequest{})
}
