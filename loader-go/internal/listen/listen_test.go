package listen

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in       string
		want     Address
		loopback bool
		wantErr  string
	}{
		{in: "unix:///run/filewatcher/loader.sock", want: Address{"unix", "/run/filewatcher/loader.sock"}, loopback: true},
		{in: "127.0.0.1:50051", want: Address{"tcp", "127.0.0.1:50051"}, loopback: true},
		{in: "127.0.0.2:0", want: Address{"tcp", "127.0.0.2:0"}, loopback: true},
		{in: "localhost:50051", want: Address{"tcp", "localhost:50051"}, loopback: true},
		{in: "[::1]:50051", want: Address{"tcp", "[::1]:50051"}, loopback: true},
		{in: "0.0.0.0:50051", want: Address{"tcp", "0.0.0.0:50051"}},
		{in: ":50051", want: Address{"tcp", ":50051"}},
		{in: "[::]:50051", want: Address{"tcp", "[::]:50051"}},
		{in: "example.com:50051", want: Address{"tcp", "example.com:50051"}},
		{in: "unix://relative.sock", wantErr: "absolute"},
		{in: "unix:///run/../x.sock", wantErr: "absolute"},
		{in: "unix:/run/x.sock", wantErr: "host:port"},
		{in: "http://127.0.0.1:80", wantErr: "host:port"},
		{in: "127.0.0.1", wantErr: "missing port"},
		{in: "127.0.0.1:http", wantErr: "bad port"},
		{in: "127.0.0.1:65536", wantErr: "bad port"},
		{in: "127.0.0.1:", wantErr: "bad port"},
		{in: "", wantErr: "missing port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || got.Loopback() != tt.loopback || got.String() != tt.in {
				t.Errorf("Parse = %+v (loopback %v, %q), want %+v (loopback %v)", got, got.Loopback(), got.String(), tt.want, tt.loopback)
			}
		})
	}
}

func TestListenTCP(t *testing.T) {
	l, err := Listen(Address{"tcp", "127.0.0.1:0"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Listen(Address{"tcp", l.Addr().String()}, Options{}); err == nil {
		t.Fatal("listened twice on one port")
	}
}

// TestListenUnixModeAndGroup checks the socket's mode under a permissive
// umask and its group: only root may give it to another group.
func TestListenUnixModeAndGroup(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	gid := os.Getgid()
	if os.Geteuid() == 0 {
		gid = 4242 // any group: root may chown to it
	}
	path := filepath.Join(t.TempDir(), "loader.sock")
	l, err := Listen(Address{"unix", path}, Options{SocketGID: gid})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != SocketMode {
		t.Errorf("mode %v, want %o", fi.Mode().Perm(), SocketMode)
	}
	if got, err := SocketGroup(path); err != nil || got != uint32(gid) {
		t.Errorf("group %d (%v), want %d", got, err, gid)
	}
}

func TestLookupGroup(t *testing.T) {
	if n, err := LookupGroup("4242"); err != nil || n != 4242 {
		t.Errorf("LookupGroup(4242) = %d, %v", n, err)
	}
	if n, err := LookupGroup("root"); err != nil || n != 0 {
		t.Errorf("LookupGroup(root) = %d, %v", n, err)
	}
	if _, err := LookupGroup("no-such-group-filewatcher"); err == nil {
		t.Error("unknown group accepted")
	}
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "loader.sock")
	l, err := Listen(Address{"unix", path}, Options{SocketGID: -1})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != SocketMode {
		t.Errorf("socket mode = %v, want socket %o", fi.Mode(), SocketMode)
	}
	// A live socket is not taken over.
	if _, err := Listen(Address{"unix", path}, Options{SocketGID: -1}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener: %v", err)
	}
	l.Close()

	// A stale socket (no listener behind it) is replaced.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	l, err = Listen(Address{"unix", path}, Options{SocketGID: -1})
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	l.Close()

	// A regular file is never removed.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(Address{"unix", file}, Options{SocketGID: -1}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("over a regular file: %v", err)
	}
}
