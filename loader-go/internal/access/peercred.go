// Package access decides who may use the loader's gRPC API: the credentials
// of peers on the unix socket (SO_PEERCRED, SO_PEERGROUPS) checked against a
// uid/gid allowlist, TLS and mutual TLS for TCP, and the counters and logs
// of whoever was turned away.
package access

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
)

// PeerCred is what the kernel says about the process at the other end of a
// unix socket, as of its connect(2).
type PeerCred struct {
	credentials.CommonAuthInfo
	PID int32
	UID uint32
	GID uint32
	// Groups are the peer's supplementary groups (SO_PEERGROUPS).
	Groups []uint32
}

// AuthType implements credentials.AuthInfo.
func (PeerCred) AuthType() string { return "peercred" }

// String describes the peer for logs and status reports.
func (p PeerCred) String() string {
	return fmt.Sprintf("uid=%d,gid=%d,pid=%d", p.UID, p.GID, p.PID)
}

// peerCredentials are gRPC transport credentials for unix sockets: no
// encryption (the kernel carries the bytes), but every connection's AuthInfo
// is the peer's PeerCred, for the allowlist to check.
type peerCredentials struct{}

// UnixPeerCredentials returns server transport credentials that read the
// peer credentials of every unix-socket connection. Connections of other
// kinds fail the handshake.
func UnixPeerCredentials() credentials.TransportCredentials { return peerCredentials{} }

func (peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	pc, err := ReadPeerCred(conn)
	if err != nil {
		return nil, nil, err
	}
	return conn, pc, nil
}

func (peerCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peercred: server-side credentials only")
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCredentials) Clone() credentials.TransportCredentials { return p }

func (peerCredentials) OverrideServerName(string) error { return nil }

// ReadPeerCred returns the credentials of the process at the other end of a
// unix-socket connection.
func ReadPeerCred(conn net.Conn) (PeerCred, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return PeerCred{}, fmt.Errorf("peercred: %T is not a socket", conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return PeerCred{}, fmt.Errorf("peercred: %w", err)
	}
	var pc PeerCred
	var opErr error
	err = raw.Control(func(fd uintptr) {
		var uc *unix.Ucred
		uc, opErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if opErr != nil {
			opErr = fmt.Errorf("SO_PEERCRED: %w", opErr)
			return
		}
		pc.PID, pc.UID, pc.GID = uc.Pid, uc.Uid, uc.Gid
		pc.Groups, opErr = peerGroups(int(fd))
	})
	if err = errors.Join(err, opErr); err != nil {
		return PeerCred{}, fmt.Errorf("peercred: %w", err)
	}
	// The kernel carries the bytes between two processes of this host:
	// nothing on a network can read or change them.
	pc.SecurityLevel = credentials.PrivacyAndIntegrity
	return pc, nil
}

// peerGroups reads SO_PEERGROUPS (Linux 4.13): the peer's supplementary
// groups at connect(2). x/sys has no wrapper for a variable-length list.
func peerGroups(fd int) ([]uint32, error) {
	groups := make([]uint32, 32)
	for {
		size := uint32(len(groups) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&groups[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == 0:
			return groups[:size/4], nil
		case errno == unix.ERANGE && int(size/4) > len(groups):
			groups = make([]uint32, size/4)
		case errno == unix.ENOPROTOOPT || errno == unix.ENODATA:
			return nil, nil // older kernel: the primary gid only
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
}
