package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// listen opens a real unixgram socket standing in for systemd's and returns
// the $NOTIFY_SOCKET value that names it.
func listen(t *testing.T, abstract bool) (string, *net.UnixConn) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify.sock")
	if abstract {
		name = fmt.Sprintf("@filewatcher-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return name, conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func TestSend(t *testing.T) {
	tests := []struct {
		name     string
		abstract bool
		send     func() error
		want     string
	}{
		{"ready", false, Ready, "READY=1"},
		{"stopping", false, Stopping, "STOPPING=1"},
		{"status", false, func() error { return Status("attached\nREADY=0") }, "STATUS=attached READY=0"},
		{"abstract socket", true, Ready, "READY=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, conn := listen(t, tt.abstract)
			t.Setenv(EnvSocket, addr)
			if err := tt.send(); err != nil {
				t.Fatalf("send: %v", err)
			}
			if got := receive(t, conn); got != tt.want {
				t.Errorf("received %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUnsetIsNoop(t *testing.T) {
	t.Setenv(EnvSocket, "")
	if err := Ready(); err != nil {
		t.Errorf("Ready without %s: %v, want nil", EnvSocket, err)
	}
	if err := Stopping(); err != nil {
		t.Errorf("Stopping without %s: %v, want nil", EnvSocket, err)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct{ name, addr string }{
		{"relative path", "notify.sock"},
		{"bare at", "@"},
		{"nobody listening", filepath.Join(t.TempDir(), "absent.sock")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvSocket, tt.addr)
			if err := Ready(); err == nil {
				t.Errorf("Ready with %s=%q: nil error, want one", EnvSocket, tt.addr)
			}
		})
	}
}
