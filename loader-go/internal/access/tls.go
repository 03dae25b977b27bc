package access

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// TLSFiles names the PEM files of a TLS listener.
type TLSFiles struct {
	// Cert and Key are the server's certificate (chain) and private key.
	Cert, Key string
	// ClientCA, if set, holds the CA certificates that must have signed
	// every client's certificate (mutual TLS); clients without one fail the
	// handshake.
	ClientCA string
}

// Enabled reports whether TLS is asked for at all.
func (f TLSFiles) Enabled() bool { return f.Cert != "" || f.Key != "" || f.ClientCA != "" }

// ServerTLS loads the files into a server configuration: TLS 1.2 or newer,
// and client certificates required and verified when ClientCA is set.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load --tls-cert %s and --tls-key %s: %w", f.Cert, f.Key, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.ClientCA != "" {
		pool, err := LoadCertPool(f.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// LoadCertPool reads the PEM certificates in file.
func LoadCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}

// countingCreds are TLS credentials that count and log failed handshakes:
// plaintext clients, clients without a trusted certificate, scanners.
type countingCreds struct {
	credentials.TransportCredentials
	g *Guard
}

func (c *countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	remote := conn.RemoteAddr()
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		total := c.g.handshakesFailed.Add(1)
		if log, suppressed := c.g.handshakeLog.allow(time.Now()); log {
			c.g.log.Warn("TLS handshake failed", "peer", remote.String(), "error", err,
				"failed_total", total, "not_logged", suppressed)
		}
	}
	return out, info, err
}

func (c *countingCreds) Clone() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: c.TransportCredentials.Clone(), g: c.g}
}

// ClientNames are the identities admitted under mutual TLS
// (--tls-allow-clients).
type ClientNames []string

// Allows reports whether the verified client certificate cert names one of
// n: a DNS name (case-insensitive), an IP address, an email address or URI
// of its subject alternative names, or its subject common name, equal to an
// entry of n. There are no wildcards: a name admits exactly itself.
func (n ClientNames) Allows(cert *x509.Certificate) bool {
	for _, id := range Identities(cert) {
		for _, want := range n {
			if id == want || strings.EqualFold(id, want) && slices.Contains(cert.DNSNames, id) {
				return true
			}
		}
	}
	return false
}

// Identities are the names a client certificate can be admitted by, in the
// order Allows tries them, each as it is written in --tls-allow-clients.
func Identities(cert *x509.Certificate) []string {
	ids := slices.Clone(cert.DNSNames)
	for _, ip := range cert.IPAddresses {
		ids = append(ids, ip.String())
	}
	ids = append(ids, cert.EmailAddresses...)
	for _, u := range cert.URIs {
		ids = append(ids, u.String())
	}
	if cn := cert.Subject.CommonName; cn != "" {
		ids = append(ids, cn)
	}
	return ids
}
