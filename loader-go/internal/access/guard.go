package access

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/filewatcher/filewatcher/proto/filewatcher/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Policy is the allowlist of peers on the unix socket. Root (uid 0) is
// always allowed: it can read the tracepoint, the ring buffer and this
// process's memory anyway, so refusing it would protect nothing.
type Policy struct {
	// UIDs are allowed users.
	UIDs []uint32
	// GIDs are allowed groups, matched against the peer's primary group and
	// its supplementary groups.
	GIDs []uint32
}

// Allows reports whether the peer pc may call the API.
func (p *Policy) Allows(pc PeerCred) bool {
	if pc.UID == 0 || slices.Contains(p.UIDs, pc.UID) || slices.Contains(p.GIDs, pc.GID) {
		return true
	}
	return slices.ContainsFunc(pc.Groups, func(g uint32) bool { return slices.Contains(p.GIDs, g) })
}

// logInterval is the least time between two log lines about refused peers,
// so that a client retrying in a loop cannot flood the log.
const logInterval = time.Second

// Guard enforces the policy on every call (Subscribe, GetStatus, health,
// reflection) and counts and logs what it refuses.
type Guard struct {
	policy  *Policy     // nil: TCP, where TLS (or loopback) is the gate
	clients ClientNames // TCP with mutual TLS: the identities admitted; nil admits any verified certificate
	log     *slog.Logger

	denied           atomic.Uint64
	handshakesFailed atomic.Uint64
	deniedLog        limiter
	handshakeLog     limiter
}

// NewGuard returns a guard for the unix socket. A nil policy checks
// nothing: the listener is TCP, and TLS decides who connects.
func NewGuard(policy *Policy, log *slog.Logger) *Guard {
	return &Guard{policy: policy, log: log}
}

// NewTLSGuard returns a guard for mutual TLS that admits only client
// certificates naming one of clients (see ClientNames.Allows).
func NewTLSGuard(clients ClientNames, log *slog.Logger) *Guard {
	return &Guard{clients: clients, log: log}
}

// ServerOptions returns the interceptors that check every call.
func (g *Guard) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := g.Authorize(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := g.Authorize(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}

// Authorize returns nil if the caller in ctx may call method, and a
// PERMISSION_DENIED status otherwise.
func (g *Guard) Authorize(ctx context.Context, method string) error {
	if g.policy == nil && g.clients == nil {
		return nil
	}
	p, _ := peer.FromContext(ctx)
	var err error
	if g.policy != nil {
		err = g.authorizeUnix(p)
	} else {
		err = g.authorizeTLS(p)
	}
	if err == nil {
		return nil
	}
	total := g.denied.Add(1)
	if log, suppressed := g.deniedLog.allow(time.Now()); log {
		g.log.Warn("refused a call from a peer not in the allowlist",
			"peer", Describe(p), "method", method, "reason", status.Convert(err).Message(),
			"refused_total", total, "not_logged", suppressed)
	}
	return err
}

func (g *Guard) authorizeUnix(p *peer.Peer) error {
	var pc PeerCred
	ok := false
	if p != nil {
		pc, ok = p.AuthInfo.(PeerCred)
	}
	if !ok {
		return status.Error(codes.PermissionDenied, "peer credentials unavailable: connect through the loader's unix socket")
	}
	if g.policy.Allows(pc) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied,
		"uid %d (gid %d) is not allowed to use filewatcher: ask for it to be added to the loader's --allow-uids or --allow-gids", pc.UID, pc.GID)
}

func (g *Guard) authorizeTLS(p *peer.Peer) error {
	var info credentials.TLSInfo
	ok := false
	if p != nil {
		info, ok = p.AuthInfo.(credentials.TLSInfo)
	}
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return status.Error(codes.PermissionDenied, "no verified client certificate: the loader requires mutual TLS")
	}
	leaf := info.State.VerifiedChains[0][0]
	if g.clients.Allows(leaf) {
		return nil
	}
	return status.Errorf(codes.PermissionDenied,
		"client certificate %s is not allowed to use filewatcher: ask for one of its names to be added to the loader's --tls-allow-clients",
		strings.Join(Identities(leaf), ", "))
}

// WrapTLS returns creds that count and log failed handshakes.
func (g *Guard) WrapTLS(creds credentials.TransportCredentials) credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: creds, g: g}
}

// FillStatus adds the guard's counters to a status report.
func (g *Guard) FillStatus(r *pb.GetStatusResponse) {
	r.RequestsDenied = g.denied.Load()
	r.HandshakesFailed = g.handshakesFailed.Load()
}

// Denied returns how many calls were refused.
func (g *Guard) Denied() uint64 { return g.denied.Load() }

// HandshakesFailed returns how many TLS handshakes failed.
func (g *Guard) HandshakesFailed() uint64 { return g.handshakesFailed.Load() }

// Describe says who p is, for people: "unix:uid=U,gid=G,pid=P" for a unix
// socket peer, "tcp:HOST:PORT" for TCP, with " cn=NAME" for a verified
// client certificate.
func Describe(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return "unknown"
	}
	switch a := p.AuthInfo.(type) {
	case PeerCred:
		return "unix:" + a.String()
	case credentials.TLSInfo:
		s := p.Addr.Network() + ":" + p.Addr.String()
		if chains := a.State.VerifiedChains; len(chains) > 0 && len(chains[0]) > 0 {
			s += " cn=" + chains[0][0].Subject.CommonName
		}
		return s
	}
	return p.Addr.Network() + ":" + p.Addr.String()
}

// Identity is who p is for per-peer limits: "uid=U" for a unix socket peer
// (every process of a user is one peer), the first identity of a verified
// client certificate (see Identities) under mutual TLS, else the client's IP
// address without its port.
func Identity(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return "unknown"
	}
	switch a := p.AuthInfo.(type) {
	case PeerCred:
		return fmt.Sprintf("uid=%d", a.UID)
	case credentials.TLSInfo:
		if chains := a.State.VerifiedChains; len(chains) > 0 && len(chains[0]) > 0 {
			if ids := Identities(chains[0][0]); len(ids) > 0 {
				return "cert=" + ids[0]
			}
		}
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return "ip=" + host
	}
	return p.Addr.Network() + "=" + p.Addr.String()
}

// limiter lets one log line through per logInterval and counts the rest.
type limiter struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether to log now, and how many lines were held back since
// the last one logged.
func (l *limiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed = 0
	l.next = now.Add(logInterval)
	return true, n
}
