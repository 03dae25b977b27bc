// Package listen parses the loader's --listen address and opens it: a unix
// socket (the default, mode 0660, group configurable) or TCP. Whether a TCP
// address may be opened with the TLS settings given is decided before, in
// access.Decide.
package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SocketMode is the permission of a unix socket the loader creates.
const SocketMode = 0o660

const unixScheme = "unix://"

// Address is a parsed listen address.
type Address struct {
	// Network is "unix" or "tcp".
	Network string
	// Addr is the socket's absolute path or a host:port.
	Addr string
}

// String formats a as it is written on the command line.
func (a Address) String() string {
	if a.Network == "unix" {
		return unixScheme + a.Addr
	}
	return a.Addr
}

// Parse accepts "unix:///abs/path" or "host:port" (host may be a name, an
// IPv4 address, a bracketed IPv6 address, or empty for all interfaces).
func Parse(s string) (Address, error) {
	if rest, ok := strings.CutPrefix(s, unixScheme); ok {
		if !filepath.IsAbs(rest) || filepath.Clean(rest) != rest {
			return Address{}, fmt.Errorf("listen address %q: want unix:///absolute/path", s)
		}
		return Address{Network: "unix", Addr: rest}, nil
	}
	if strings.Contains(s, "://") || strings.HasPrefix(s, "unix:") {
		return Address{}, fmt.Errorf("listen address %q: want host:port or unix:///absolute/path", s)
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return Address{}, fmt.Errorf("listen address %q: want host:port or unix:///absolute/path: %w", s, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" {
		return Address{}, fmt.Errorf("listen address %q: bad port %q", s, port)
	} else if n > 65535 {
		return Address{}, fmt.Errorf("listen address %q: bad port %q", s, port)
	}
	return Address{Network: "tcp", Addr: s}, nil
}

// Loopback reports whether a is a unix socket or TCP on a loopback address
// ("localhost" or 127.0.0.0/8 or ::1); an empty host means all interfaces.
func (a Address) Loopback() bool {
	if a.Network == "unix" {
		return true
	}
	host, _, err := net.SplitHostPort(a.Addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Options configures Listen.
type Options struct {
	// SocketGID is the group of a unix socket; -1 keeps the process's.
	SocketGID int
}

// Listen opens a. Call it only for an address access.Decide allowed.
func Listen(a Address, opts Options) (net.Listener, error) {
	if a.Network == "unix" {
		return listenUnix(a.Addr, opts.SocketGID)
	}
	l, err := net.Listen("tcp", a.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return l, nil
}

func listenUnix(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	// bind(2) creates the socket file with the mode of the socket's inode
	// less the umask, so setting the mode before bind leaves no moment in
	// which the file is more open than SocketMode.
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.Fchmod(int(fd), SocketMode) }); cerr != nil {
			return cerr
		}
		return err
	}}
	l, err := lc.Listen(context.Background(), "unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("give the socket to group %d (--socket-group): %w", gid, err)
		}
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}

// SocketGroup returns the group that owns the socket file at path.
func SocketGroup(path string) (uint32, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no owner", path)
	}
	return st.Gid, nil
}

// LookupGroup resolves a group name or number.
func LookupGroup(s string) (int, error) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return int(n), nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %s: gid %q: %w", s, g.Gid, err)
	}
	return n, nil
}

// removeStale removes a socket left behind by a loader that died, but not
// one that a live process serves, nor anything that is not a socket.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket: %w", err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: refusing to replace it", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use: is another filewatcher-loader running?", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
