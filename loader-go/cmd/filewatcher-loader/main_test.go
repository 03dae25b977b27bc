package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/internal/testutil"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// loader runs the loader in-process as main would, with args, until the test
// ends; it returns the address it serves and a function that stops it and
// returns the exit code and the log.
func loader(t testing.TB, args ...string) (addr string, stop func() (int, string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var logs testutil.SyncBuffer
	ready := make(chan net.Addr, 1)
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, args, func(string) string { return "" }, io.Discard, &logs, func(a net.Addr) { ready <- a })
	}()
	select {
	case a := <-ready:
		addr = a.String()
		if a.Network() == "unix" {
			addr = "unix://" + addr
		}
	case code := <-exit:
		cancel()
		t.Fatalf("loader exited with %d before serving:\n%s", code, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("loader did not get ready")
	}
	var once sync.Once
	var code int
	stop = func() (int, string) {
		once.Do(func() {
			cancel()
			code = <-exit
		})
		return code, logs.String()
	}
	t.Cleanup(func() { stop() })
	return addr, stop
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestSyntheticOverUnixSocket runs the whole loader with the synthetic
// source on a unix socket: health, reflection, a stream, status, shutdown.
func TestSyntheticOverUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run", "loader.sock")
	addr, stop := loader(t, "--source=synthetic", "--rate=20000", "--listen=unix://"+sock, "--log-format=json")
	conn := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "filewatcher.v1.EventService"})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", h, err)
	}
	services := listServices(t, ctx, conn)
	for _, want := range []string{"filewatcher.v1.EventService", "grpc.health.v1.Health"} {
		if !strings.Contains(services, want) {
			t.Errorf("reflection lists %s, missing %s", services, want)
		}
	}

	client := pb.NewEventServiceClient(conn)
	stream, err := client.Subscribe(ctx, &pb.SubscribeRequest{MaxBatchDelayMs: 5})
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var next uint64
	for got < 2000 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range resp.Events {
			if next != 0 && ev.Sequence != next {
				t.Fatalf("sequence %d, want %d", ev.Sequence, next)
			}
			next = ev.Sequence + 1
		}
		got += len(resp.Events)
	}
	st, err := client.GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Source != "synthetic" || len(st.RunId) != 32 || st.LastSequence < uint64(got) || len(st.Subscribers) != 1 {
		t.Errorf("status = %v", st)
	}

	// Shutdown drains the queue to a client that keeps reading, then ends
	// the stream with UNAVAILABLE.
	streamEnd := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				streamEnd <- err
				return
			}
		}
	}()
	begin := time.Now()
	code, logs := stop()
	if code != 0 {
		t.Errorf("exit code %d:\n%s", code, logs)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if !strings.Contains(logs, `"msg":"ready"`) {
		t.Errorf("no ready message in:\n%s", logs)
	}
	if err := <-streamEnd; status.Code(err) != codes.Unavailable {
		t.Errorf("stream ended with %v, want UNAVAILABLE", err)
	}
}

// TestShutdownWithStalledClient checks that a client that stopped reading
// delays shutdown by --shutdown-timeout at most.
func TestShutdownWithStalledClient(t *testing.T) {
	addr, stop := loader(t, "--source=synthetic", "--rate=0", "--listen=127.0.0.1:0", "--shutdown-timeout=300ms")
	conn := dial(t, addr)
	stream, err := pb.NewEventServiceClient(conn).Subscribe(context.Background(), &pb.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // subscribed; now stall
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	begin := time.Now()
	code, logs := stop()
	if d := time.Since(begin); code != 0 || d > 2*time.Second {
		t.Errorf("exit code %d after %v", code, d)
	}
	if !strings.Contains(logs, "graceful stop timed out") {
		t.Errorf("no timeout warning in:\n%s", logs)
	}
}

func listServices(t *testing.T, ctx context.Context, conn *grpc.ClientConn) string {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream, which would hold up a graceful stop
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetListServicesResponse().String()
}

func TestExitCodes(t *testing.T) {
	tests := []struct {
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{[]string{"--version"}, 0, "filewatcher-loader dev", ""},
		{[]string{"--help"}, 0, "", "-ringbuf-size"},
		{[]string{"--source=nope"}, 2, "", "--source"},
		{[]string{"--listen=0.0.0.0:0", "--source=synthetic"}, 2, "", "--allow-insecure-tcp"},
		{[]string{"--listen=0.0.0.0:0", "--source=synthetic", "--tls-cert=c.pem", "--tls-key=k.pem"}, 2, "", "refusing TLS without client certificates on a non-loopback address"},
		{[]string{"--listen=127.0.0.1:0", "--module="}, 1, "", "module not loaded: pass --module or run make insmod"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, func(string) string { return "" }, &stdout, &stderr, nil)
			if code != tt.code || !strings.Contains(stdout.String(), tt.inStdout) || !strings.Contains(stderr.String(), tt.inStderr) {
				t.Errorf("code %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
			}
		})
	}
}

// BenchmarkEndToEnd pushes synthetic events as fast as possible through the
// hub, gRPC over loopback TCP and a real client; ns/op is per event
// received, and both sides run in this process.
func BenchmarkEndToEnd(b *testing.B) {
	addr, _ := loader(b, "--source=synthetic", "--rate=0", "--listen=127.0.0.1:0", "--log-level=error", "--subscriber-queue-size=1000000", "--subscriber-queue-bytes=1000000000")
	conn := dial(b, addr)
	stream, err := pb.NewEventServiceClient(conn).Subscribe(context.Background(), &pb.SubscribeRequest{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var events, gapped int
	for events < b.N {
		resp, err := stream.Recv()
		if err != nil {
			b.Fatal(err)
		}
		events += len(resp.Events)
		for _, g := range resp.Gaps {
			gapped += int(g.LastSequence - g.FirstSequence + 1)
		}
	}
	b.ReportMetric(float64(gapped)/float64(events), "gapped/event")
}
