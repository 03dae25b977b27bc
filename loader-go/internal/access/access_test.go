package access

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestPolicyAllows(t *testing.T) {
	p := &Policy{UIDs: []uint32{1000}, GIDs: []uint32{50}}
	tests := []struct {
		pc   PeerCred
		want bool
	}{
		{PeerCred{UID: 0, GID: 0}, true}, // root, always
		{PeerCred{UID: 1000, GID: 1000}, true},
		{PeerCred{UID: 1001, GID: 50}, true},
		{PeerCred{UID: 1001, GID: 1001, Groups: []uint32{7, 50}}, true},
		{PeerCred{UID: 1001, GID: 1001, Groups: []uint32{7}}, false},
		{PeerCred{UID: 65534, GID: 65534}, false},
	}
	for _, tt := range tests {
		if got := p.Allows(tt.pc); got != tt.want {
			t.Errorf("Allows(%+v) = %v, want %v", tt.pc, got, tt.want)
		}
	}
	if (&Policy{}).Allows(PeerCred{UID: 1, GID: 1}) {
		t.Error("an empty policy allows uid 1")
	}
}

// serveUnix serves the health service on a unix socket behind a guard with
// policy, and returns a client connection.
func serveUnix(t *testing.T, policy *Policy, logs io.Writer) (*grpc.ClientConn, *Guard) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGuard(policy, slog.New(slog.NewTextHandler(logs, nil)))
	gs := grpc.NewServer(append(g.ServerOptions(), grpc.Creds(UnixPeerCredentials()))...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, g
}

// TestGuardOnUnixSocket checks the allowlist with this process's real peer
// credentials. As root it is always allowed; otherwise a policy without its
// uid and groups refuses it. (cmd/filewatcher-loader's tests refuse another
// uid as root, with a child process.)
func TestGuardOnUnixSocket(t *testing.T) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := &healthpb.HealthCheckRequest{}

	var logs strings.Builder
	other := &Policy{UIDs: []uint32{uid + 1}, GIDs: []uint32{gid + 1}}
	conn, g := serveUnix(t, other, &logs)
	_, err := healthpb.NewHealthClient(conn).Check(ctx, req)
	if uid == 0 {
		if err != nil {
			t.Fatalf("root refused: %v", err)
		}
	} else {
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "--allow-uids") {
			t.Fatalf("error = %v, want PERMISSION_DENIED naming --allow-uids", err)
		}
		// A burst of refused calls is counted in full but logged once.
		for range 5 {
			healthpb.NewHealthClient(conn).Check(ctx, req)
		}
		if g.Denied() != 6 || strings.Count(logs.String(), "refused a call") != 1 {
			t.Errorf("denied %d, logs:\n%s", g.Denied(), logs.String())
		}
		if !strings.Contains(logs.String(), "unix:uid=") {
			t.Errorf("log does not name the peer:\n%s", logs.String())
		}
	}

	for _, p := range []*Policy{{UIDs: []uint32{uid}}, {GIDs: []uint32{gid}}} {
		conn, g := serveUnix(t, p, io.Discard)
		if _, err := healthpb.NewHealthClient(conn).Check(ctx, req); err != nil || g.Denied() != 0 {
			t.Errorf("policy %+v: %v", p, err)
		}
	}
}

func TestReadPeerCred(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := ReadPeerCred(a); err == nil {
		t.Error("a pipe has peer credentials")
	}
	path := filepath.Join(t.TempDir(), "s.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pc, err := ReadPeerCred(s)
	if err != nil {
		t.Fatal(err)
	}
	if pc.UID != uint32(os.Getuid()) || pc.GID != uint32(os.Getgid()) || pc.PID != int32(os.Getpid()) {
		t.Errorf("peer %+v, want this process", pc)
	}
	groups, _ := os.Getgroups()
	if len(pc.Groups) != len(groups) {
		t.Errorf("peer groups %v, want %v", pc.Groups, groups)
	}
}

func TestLookupIDs(t *testing.T) {
	uids, err := LookupUIDs([]string{"root", "1000"})
	if err != nil || len(uids) != 2 || uids[0] != 0 || uids[1] != 1000 {
		t.Errorf("LookupUIDs = %v, %v", uids, err)
	}
	gids, err := LookupGIDs([]string{"4242", "root"})
	if err != nil || len(gids) != 2 || gids[0] != 4242 || gids[1] != 0 {
		t.Errorf("LookupGIDs = %v, %v", gids, err)
	}
	if _, err := LookupUIDs([]string{"no-such-user-filewatcher"}); err == nil || !strings.Contains(err.Error(), "--allow-uids") {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := LookupGIDs([]string{"99999999999"}); err == nil {
		t.Error("a gid beyond 32 bits was accepted")
	}
}
