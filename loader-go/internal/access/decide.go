package access

import "errors"

// Listener is what decides who may connect: the kind of address the loader
// listens on and every access flag given. Decide is the one place that
// turns it into a verdict; the flags are parsed in internal/config, the
// certificates loaded by ServerTLS, and the verdict enforced by Guard.
type Listener struct {
	// Unix is the unix socket; otherwise TCP.
	Unix bool
	// Loopback is TCP on 127.0.0.0/8, ::1 or localhost.
	Loopback bool

	// TLS: --tls-cert and --tls-key. ClientCA: --tls-client-ca (mutual TLS).
	TLS, ClientCA bool
	// ClientNames: --tls-allow-clients (identities admitted under mutual TLS).
	ClientNames bool
	// UnixAllowlist: --socket-group, --allow-uids or --allow-gids.
	UnixAllowlist bool

	// AllowInsecureTCP: --allow-insecure-tcp (plaintext off loopback).
	AllowInsecureTCP bool
	// AllowTLSWithoutClientCert: --allow-tls-without-client-cert (TLS off
	// loopback that does not ask who the client is).
	AllowTLSWithoutClientCert bool
}

// Verdict is what Decide allows.
type Verdict struct {
	// Gate says who may connect, for the ready log line and the docs.
	Gate string
	// Warning, if set, is logged (as a warning) when the loader starts: the
	// listener is open to more than its flags may suggest.
	Warning string
}

// The rules, in the order Decide applies them. Every path created on the
// host can be read by whoever gets in, so a listener is refused unless
// something checks who connects, or the flag that waives that check is
// given explicitly; then it is logged as INSECURE.
//
//	listener            TLS    client CA  →  verdict
//	unix socket         -      -             peer credentials (root, --allow-uids, --allow-gids, else the socket's group)
//	TCP loopback        no     -             allowed, warned: every local user can subscribe
//	TCP loopback        yes    no            allowed, warned: every local user can subscribe
//	TCP loopback        yes    yes           mutual TLS
//	TCP elsewhere       no     -             refused; --allow-insecure-tcp: allowed, INSECURE
//	TCP elsewhere       yes    no            refused; --allow-tls-without-client-cert: allowed, INSECURE
//	TCP elsewhere       yes    yes           mutual TLS
//
// Mutual TLS admits every certificate the client CA signed, or with
// --tls-allow-clients only those naming one of the listed identities.
// Flags that do not apply to the listener are refused, since each would
// suggest a protection that is not there.
func Decide(l Listener) (Verdict, error) {
	if l.Unix {
		switch {
		case l.TLS || l.ClientCA || l.ClientNames || l.AllowTLSWithoutClientCert:
			return Verdict{}, errors.New("--tls-cert, --tls-key, --tls-client-ca, --tls-allow-clients and --allow-tls-without-client-cert apply to TCP listeners: the unix socket is guarded by its mode and peer credentials")
		case l.AllowInsecureTCP:
			return Verdict{}, errors.New("--allow-insecure-tcp applies to TCP listeners: the unix socket is guarded by its mode and peer credentials")
		}
		return Verdict{Gate: "unix socket mode 0660, peer credentials"}, nil
	}
	if l.UnixAllowlist {
		return Verdict{}, errors.New("--socket-group, --allow-uids and --allow-gids apply to the unix socket: on TCP use --tls-client-ca (mutual TLS) and --tls-allow-clients")
	}
	if l.ClientCA && !l.TLS {
		return Verdict{}, errors.New("--tls-client-ca needs --tls-cert and --tls-key")
	}
	if l.ClientNames && !l.ClientCA {
		return Verdict{}, errors.New("--tls-allow-clients needs --tls-client-ca: without client certificates there is no identity to check")
	}
	if l.AllowInsecureTCP && l.TLS {
		return Verdict{}, errors.New("--allow-insecure-tcp is for plaintext TCP: with --tls-cert it does nothing (did you mean --allow-tls-without-client-cert?)")
	}
	if l.AllowTLSWithoutClientCert && (!l.TLS || l.ClientCA) {
		return Verdict{}, errors.New("--allow-tls-without-client-cert is for TLS without --tls-client-ca: here it does nothing")
	}
	const local = "every local user can subscribe and read every path created on this host"
	const anyone = "anyone who can reach it can read every file path created on this host"
	switch {
	case l.ClientCA && l.ClientNames:
		return Verdict{Gate: "mutual TLS, clients named in --tls-allow-clients"}, nil
	case l.ClientCA:
		return Verdict{Gate: "mutual TLS, any client certificate signed by --tls-client-ca"}, nil
	case l.Loopback && l.TLS:
		return Verdict{Gate: "TLS without client certificates, loopback",
			Warning: "serving TLS on loopback without client certificates: " + local + "; the unix socket (the default) checks who connects"}, nil
	case l.Loopback:
		return Verdict{Gate: "plaintext TCP, loopback",
			Warning: "serving plaintext gRPC on loopback: " + local + "; the unix socket (the default) checks who connects"}, nil
	case l.TLS && l.AllowTLSWithoutClientCert:
		return Verdict{Gate: "TLS without client certificates",
			Warning: "INSECURE: serving TLS without client certificates on a non-loopback address (--allow-tls-without-client-cert): " + anyone}, nil
	case l.TLS:
		return Verdict{}, errors.New("refusing TLS without client certificates on a non-loopback address: " + anyone +
			"; pass --tls-client-ca (mutual TLS, with --tls-allow-clients to name who), listen on loopback or the unix socket, or pass --allow-tls-without-client-cert")
	case l.AllowInsecureTCP:
		return Verdict{Gate: "plaintext TCP",
			Warning: "INSECURE: serving plaintext gRPC on a non-loopback address (--allow-insecure-tcp): " + anyone}, nil
	}
	return Verdict{}, errors.New("refusing plaintext gRPC on a non-loopback address: " + anyone +
		"; pass --tls-cert, --tls-key and --tls-client-ca (mutual TLS), listen on loopback or the unix socket, or pass --allow-insecure-tcp")
}
