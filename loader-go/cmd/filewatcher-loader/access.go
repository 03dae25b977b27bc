package main

import (
	"crypto/tls"
	"fmt"
	"log/slog"

	"github.com/filewatcher/filewatcher/loader-go/internal/access"
	"github.com/filewatcher/filewatcher/loader-go/internal/config"
	"github.com/filewatcher/filewatcher/loader-go/internal/listen"
	"google.golang.org/grpc/credentials"
)

// accessConfig is the access-control part of the configuration, resolved:
// names looked up, certificates loaded.
type accessConfig struct {
	verdict   access.Verdict
	socketGID int // -1: the process's group
	uids      []uint32
	gids      []uint32
	tls       *tls.Config
	clients   access.ClientNames
}

func resolveAccess(cfg config.Config) (a accessConfig, err error) {
	a.socketGID = -1
	if a.verdict, err = cfg.Access(); err != nil {
		return a, err
	}
	a.clients = access.ClientNames(cfg.TLSAllowClients)
	if cfg.SocketGroup != "" {
		if a.socketGID, err = listen.LookupGroup(cfg.SocketGroup); err != nil {
			return a, fmt.Errorf("--socket-group %q: %w", cfg.SocketGroup, err)
		}
	}
	if a.uids, err = access.LookupUIDs(cfg.AllowUIDs); err != nil {
		return a, err
	}
	if a.gids, err = access.LookupGIDs(cfg.AllowGIDs); err != nil {
		return a, err
	}
	files := access.TLSFiles{Cert: cfg.TLSCert, Key: cfg.TLSKey, ClientCA: cfg.TLSClientCA}
	if files.Enabled() {
		if a.tls, err = access.ServerTLS(files); err != nil {
			return a, err
		}
	}
	return a, nil
}

// guard returns the access guard and transport credentials for the
// listener at addr, which is open. Without an explicit allowlist, the unix
// socket admits its own group (and root): the allowlist then repeats the
// socket's permissions, and holds even if someone loosens them.
func (a *accessConfig) guard(addr listen.Address, log *slog.Logger) (*access.Guard, credentials.TransportCredentials, error) {
	if addr.Network != "unix" {
		g := access.NewGuard(nil, log)
		if len(a.clients) > 0 {
			g = access.NewTLSGuard(a.clients, log)
		}
		if a.tls == nil {
			return g, nil, nil
		}
		return g, g.WrapTLS(credentials.NewTLS(a.tls)), nil
	}
	if len(a.uids) == 0 && len(a.gids) == 0 {
		gid, err := listen.SocketGroup(addr.Addr)
		if err != nil {
			return nil, nil, fmt.Errorf("socket group: %w", err)
		}
		a.gids = []uint32{gid}
	}
	return access.NewGuard(&access.Policy{UIDs: a.uids, GIDs: a.gids}, log), access.UnixPeerCredentials(), nil
}

// describe says who may connect, for the ready log line.
func (a *accessConfig) describe(addr listen.Address) string {
	switch {
	case addr.Network == "unix":
		return fmt.Sprintf("%s: uid 0 or uids %v or gids %v", a.verdict.Gate, a.uids, a.gids)
	case len(a.clients) > 0:
		return fmt.Sprintf("%s %v", a.verdict.Gate, []string(a.clients))
	}
	return a.verdict.Gate
}
