// Package sdnotify tells systemd about a service's state through the
// sd_notify protocol: one datagram of "KEY=VALUE" lines sent to the unix
// socket named by $NOTIFY_SOCKET. It has no dependencies and does nothing
// when the variable is unset, so callers use it unconditionally.
//
// A unit with Type=notify stays "activating" until Ready is sent, which is
// how `systemctl start` and units ordered After= it learn that the loader has
// really loaded the module and attached its program.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// EnvSocket is the environment variable systemd sets for Type=notify units.
const EnvSocket = "NOTIFY_SOCKET"

// Ready reports that start-up is finished (READY=1): call it once the module
// is loaded, the program attached and the gRPC listener open.
func Ready() error {
	return Notify("READY=1")
}

// Stopping reports that the service is shutting down (STOPPING=1), so
// systemd does not mistake the clean-up for a hang or a crash.
func Stopping() error {
	return Notify("STOPPING=1")
}

// Status sets the free-form status line shown by `systemctl status`.
func Status(status string) error {
	return Notify("STATUS=" + oneLine(status))
}

// Notify sends state, one or more newline-separated KEY=VALUE assignments,
// to $NOTIFY_SOCKET. It returns nil without sending when the variable is
// unset (not running under systemd, or not Type=notify).
func Notify(state string) error {
	addr := os.Getenv(EnvSocket)
	if addr == "" {
		return nil
	}
	return send(addr, state)
}

func send(addr, state string) error {
	name, err := socketName(addr)
	if err != nil {
		return err
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: dial %s: %w", addr, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: send to %s: %w", addr, err)
	}
	return nil
}

// socketName maps $NOTIFY_SOCKET to a unix socket name: an absolute path, or
// an abstract socket written with a leading '@' (Go's net package spells the
// abstract namespace with a leading '@' too, and turns it into the NUL byte).
func socketName(addr string) (string, error) {
	switch {
	case strings.HasPrefix(addr, "/"), strings.HasPrefix(addr, "@") && len(addr) > 1:
		return addr, nil
	default:
		return "", errors.New("sd_notify: unsupported " + EnvSocket + " " + fmt.Sprintf("%q", addr) +
			" (want an absolute path or @abstract)")
	}
}

// oneLine keeps a status from injecting further assignments.
func oneLine(s string) string {
	return strings.ReplaceAll(s, "\n", " ")
}
