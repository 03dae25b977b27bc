package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/filewatcher/filewatcher/loader-go/internal/client"
	"github.com/filewatcher/filewatcher/loader-go/internal/testcerts"
	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// childAddrEnv, when set, makes the test binary a one-shot client (see
// TestMain): it subscribes to the address and prints the status code.
const childAddrEnv = "FILEWATCHER_TEST_CHILD_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(childAddrEnv); addr != "" {
		fmt.Print(childSubscribe(addr))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childSubscribe subscribes to addr and returns "OK" once subscribed, or
// the code of the error.
func childSubscribe(addr string) string {
	conn, err := client.Dial(addr, client.TLS{})
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := pb.NewEventServiceClient(conn).Subscribe(ctx, &pb.SubscribeRequest{})
	if err == nil {
		if md, herr := stream.Header(); herr == nil && len(md.Get(client.HeaderRunID)) > 0 {
			return "OK"
		}
		_, err = stream.Recv()
	}
	return status.Code(err).String()
}

// TestPeerCredentials runs clients as other users (child processes with
// SysProcAttr.Credential) against a loader on a unix socket: the socket's
// mode and group decide who can connect, the allowlist who may call.
func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root to run clients as other users, and CI must run it")
		}
		t.Skip("needs root to run clients as other users (internal/access checks the allowlist without root)")
	}
	// t.TempDir's parent is private to root: the other users need a
	// directory they can enter.
	dir, err := os.MkdirTemp("", "filewatcher-peercred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary's own directory is private to root: copy it where
	// the other users can run it.
	bin := filepath.Join(dir, "client")
	copyFile(t, os.Args[0], bin)

	const group, allowedGroup, allowedUID, nobody = 4242, 4243, 4244, 65534
	sock := filepath.Join(dir, "loader.sock")
	addr, _ := loader(t, "--source=synthetic", "--listen=unix://"+sock, "--socket-group=4242",
		"--allow-gids=4243", fmt.Sprintf("--allow-uids=%d", allowedUID))

	tests := []struct {
		name        string
		uid, gid    uint32
		groups      []uint32
		want        string
		wantDenials uint64
	}{
		{"not in the socket's group: cannot connect", nobody, nobody, nil, "Unavailable", 0},
		{"in the socket's group, not allowlisted", nobody, nobody, []uint32{group}, "PermissionDenied", 1},
		{"allowlisted uid", allowedUID, nobody, []uint32{group}, "OK", 1},
		{"allowlisted supplementary group", nobody, nobody, []uint32{group, allowedGroup}, "OK", 1},
		{"allowlisted primary group", nobody, allowedGroup, []uint32{group}, "OK", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runAs(t, bin, addr, tt.uid, tt.gid, tt.groups)
			if got != tt.want {
				t.Errorf("uid %d gid %d groups %v: %s, want %s", tt.uid, tt.gid, tt.groups, got, tt.want)
			}
			if st := getStatus(t, addr, client.TLS{}); st.RequestsDenied != tt.wantDenials {
				t.Errorf("requests_denied = %d, want %d", st.RequestsDenied, tt.wantDenials)
			}
		})
	}

	// Without --allow-uids and --allow-gids, the socket's group is allowed.
	sock2 := filepath.Join(dir, "loader2.sock")
	addr2, _ := loader(t, "--source=synthetic", "--listen=unix://"+sock2, "--socket-group=4242")
	if got := runAs(t, bin, addr2, nobody, nobody, []uint32{group}); got != "OK" {
		t.Errorf("member of the socket's group: %s, want OK", got)
	}
}

func runAs(t *testing.T, bin, addr string, uid, gid uint32, groups []uint32) string {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{childAddrEnv + "=" + addr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client as uid %d: %v: %s", uid, err, out)
	}
	return string(out)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func getStatus(t *testing.T, addr string, tl client.TLS) *pb.GetStatusResponse {
	t.Helper()
	conn, err := client.Dial(addr, tl)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := pb.NewEventServiceClient(conn).GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// tryStatus calls GetStatus with a short deadline and returns the error.
func tryStatus(addr string, tl client.TLS) error {
	conn, err := client.Dial(addr, tl)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = pb.NewEventServiceClient(conn).GetStatus(ctx, &pb.GetStatusRequest{})
	return err
}

// TestTLS serves TLS and then mutual TLS on loopback with certificates made
// for the test, and tries clients that must and must not get in.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca := must(testcerts.NewCA(dir, "test"))
	srv := must(ca.Server("server"))
	cli := must(ca.Client("client-1"))
	rogueCA := must(testcerts.NewCA(dir, "rogue"))
	rogue := must(rogueCA.Client("rogue"))

	addr, stop := loader(t, "--source=synthetic", "--listen=127.0.0.1:0", "--tls-cert="+srv.CertFile, "--tls-key="+srv.KeyFile)
	if err := tryStatus(addr, client.TLS{CA: ca.CertFile}); err != nil {
		t.Errorf("TLS client: %v", err)
	}
	for name, tl := range map[string]client.TLS{
		"plaintext":            {},
		"untrusted server":     {Enable: true},
		"wrong CA":             {CA: rogueCA.CertFile},
		"wrong server name":    {CA: ca.CertFile, ServerName: "elsewhere.example"},
		"client cert accepted": {CA: ca.CertFile, Cert: cli.CertFile, Key: cli.KeyFile},
	} {
		err := tryStatus(addr, tl)
		if want := name == "client cert accepted"; (err == nil) != want {
			t.Errorf("TLS only, %s: %v", name, err)
		}
	}
	if _, logs := stop(); strings.Contains(logs, "plaintext") ||
		!strings.Contains(logs, `access="TLS without client certificates, loopback"`) ||
		!strings.Contains(logs, "serving TLS on loopback without client certificates: every local user can subscribe") {
		t.Errorf("logs:\n%s", logs)
	}

	addr, stop = loader(t, "--source=synthetic", "--listen=127.0.0.1:0", "--tls-cert="+srv.CertFile, "--tls-key="+srv.KeyFile,
		"--tls-client-ca="+ca.CertFile)
	good := client.TLS{CA: ca.CertFile, Cert: cli.CertFile, Key: cli.KeyFile}
	for name, tl := range map[string]client.TLS{
		"no client cert":    {CA: ca.CertFile},
		"rogue client cert": {CA: ca.CertFile, Cert: rogue.CertFile, Key: rogue.KeyFile},
		"plaintext":         {},
	} {
		if err := tryStatus(addr, tl); err == nil {
			t.Errorf("mutual TLS, %s: got in", name)
		}
	}
	conn, err := client.Dial(addr, good)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := pb.NewEventServiceClient(conn).Subscribe(ctx, &pb.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		t.Fatal(err)
	}
	st := getStatus(t, addr, good)
	if len(st.Subscribers) != 1 || !strings.Contains(st.Subscribers[0].Peer, "cn=client-1") {
		t.Errorf("subscribers %v, want one with cn=client-1", st.Subscribers)
	}
	if st.HandshakesFailed < 3 {
		t.Errorf("handshakes_failed = %d, want at least 3", st.HandshakesFailed)
	}
	cancel()
	if _, logs := stop(); !strings.Contains(logs, "TLS handshake failed") ||
		!strings.Contains(logs, `access="mutual TLS, any client certificate signed by --tls-client-ca"`) {
		t.Errorf("logs:\n%s", logs)
	}
}

// TestTLSAllowClients serves mutual TLS admitting only named clients, and
// calls it from two real clients: grpc-go (filewatcher's client package)
// and Python's grpcio (C core), with the right identity, another
// certificate of the same CA, a certificate of another CA, and none.
func TestTLSAllowClients(t *testing.T) {
	dir := t.TempDir()
	ca := must(testcerts.NewCA(dir, "test"))
	srv := must(ca.Server("server"))
	byCN := must(ca.Client("fw-exporter"))
	byURI := must(ca.Client("any-name", "spiffe://example.org/filewatcher/tail"))
	byDNS := must(ca.Client("other", "Scraper.Example.org"))
	stranger := must(ca.Client("stranger", "stranger.example.org"))
	rogueCA := must(testcerts.NewCA(t.TempDir(), "rogue"))
	rogue := must(rogueCA.Client("fw-exporter")) // the right name, from the wrong CA

	addr, stop := loader(t, "--source=synthetic", "--listen=127.0.0.1:0", "--tls-cert="+srv.CertFile, "--tls-key="+srv.KeyFile,
		"--tls-client-ca="+ca.CertFile, "--tls-allow-clients=fw-exporter,spiffe://example.org/filewatcher/tail,scraper.example.org")
	tls := func(p testcerts.Pair) client.TLS {
		return client.TLS{CA: ca.CertFile, Cert: p.CertFile, Key: p.KeyFile}
	}
	tests := []struct {
		name string
		tl   client.TLS
		want string // "" allowed, else part of the error
	}{
		{"common name", tls(byCN), ""},
		{"URI SAN", tls(byURI), ""},
		{"DNS SAN, other case", tls(byDNS), ""},
		{"same CA, not listed", tls(stranger), "PermissionDenied"},
		{"another CA", client.TLS{CA: ca.CertFile, Cert: rogue.CertFile, Key: rogue.KeyFile}, "Unavailable"},
		{"no certificate", client.TLS{CA: ca.CertFile}, "Unavailable"},
	}
	python := filepath.Join(repoRoot(t), "test", "clients", "status.py")
	for _, tt := range tests {
		err := tryStatus(addr, tt.tl)
		if got := fmt.Sprint(err); (tt.want == "") != (err == nil) || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("grpc-go, %s: %v, want %q", tt.name, err, tt.want)
		}
		args := []string{python, addr, "--ca", ca.CertFile}
		if tt.tl.Cert != "" {
			args = append(args, "--cert", tt.tl.Cert, "--key", tt.tl.Key)
		}
		out, err := exec.Command("/usr/bin/python3", args...).Output() // stderr: grpcio's own log
		got := string(out)
		if _, ok := err.(*exec.ExitError); err != nil && !ok {
			t.Fatalf("python client: %v (make setup installs python3-grpcio)", err)
		}
		wantPy := "ok "
		if tt.want == "PermissionDenied" {
			wantPy = "error PERMISSION_DENIED client certificate stranger.example.org, stranger is not allowed"
		} else if tt.want != "" {
			wantPy = "error UNAVAILABLE"
		}
		if !strings.HasPrefix(got, wantPy) {
			t.Errorf("python, %s: %q, want %q", tt.name, got, wantPy)
		}
	}
	st := getStatus(t, addr, tls(byCN))
	if st.RequestsDenied != 2 {
		t.Errorf("requests_denied = %d, want 2 (one per client refused by name)", st.RequestsDenied)
	}
	if _, logs := stop(); !strings.Contains(logs, "refused a call from a peer not in the allowlist") ||
		!strings.Contains(logs, `access="mutual TLS, clients named in --tls-allow-clients [fw-exporter spiffe://example.org/filewatcher/tail scraper.example.org]"`) {
		t.Errorf("logs:\n%s", logs)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestMaxSubscribers opens streams up to the cap: the next is refused with
// RESOURCE_EXHAUSTED and counted, and a slot frees when a stream ends.
func TestMaxSubscribers(t *testing.T) {
	addr, _ := loader(t, "--source=synthetic", "--listen=127.0.0.1:0", "--max-subscribers=2")
	conn := dial(t, addr)
	c := pb.NewEventServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func() (context.CancelFunc, error) {
		sctx, scancel := context.WithCancel(ctx)
		stream, err := c.Subscribe(sctx, &pb.SubscribeRequest{})
		if err == nil {
			var md interface{ Get(string) []string }
			md, err = stream.Header()
			if err == nil && len(md.Get(client.HeaderRunID)) == 0 {
				_, err = stream.Recv()
			}
		}
		return scancel, err
	}
	first, err := open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(); err != nil {
		t.Fatal(err)
	}
	_, err = open()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-subscribers") {
		t.Fatalf("third stream: %v, want RESOURCE_EXHAUSTED", err)
	}
	st := getStatus(t, addr, client.TLS{})
	if st.MaxSubscribers != 2 || st.SubscribersRefused != 1 || len(st.Subscribers) != 2 {
		t.Errorf("status: max %d, refused %d, %d subscribers", st.MaxSubscribers, st.SubscribersRefused, len(st.Subscribers))
	}
	first()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := open()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after a stream ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// repoRoot is the checkout's top directory (where go.mod is).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for ; dir != "/"; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
	}
	t.Fatal("no go.mod above the test's directory")
	return ""
}
