package access

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
)

// TestDecide is the table of the rules, one row per listener a user
// writes: what is allowed, what is refused and what is warned about.
func TestDecide(t *testing.T) {
	type L = Listener
	tests := []struct {
		name string
		l    L
		// want: "refused: <part of the error>", "warned: <part of the
		// warning>" or "allowed: <part of the gate>" (no warning).
		want string
	}{
		{"unix socket", L{Unix: true}, "allowed: peer credentials"},
		{"unix socket, allowlists", L{Unix: true, UnixAllowlist: true}, "allowed: peer credentials"},
		{"unix socket, TLS", L{Unix: true, TLS: true}, "refused: apply to TCP listeners"},
		{"unix socket, client CA", L{Unix: true, ClientCA: true}, "refused: apply to TCP listeners"},
		{"unix socket, client names", L{Unix: true, ClientNames: true}, "refused: apply to TCP listeners"},
		{"unix socket, --allow-insecure-tcp", L{Unix: true, AllowInsecureTCP: true}, "refused: applies to TCP listeners"},
		{"unix socket, --allow-tls-without-client-cert", L{Unix: true, AllowTLSWithoutClientCert: true}, "refused: apply to TCP listeners"},

		{"loopback plaintext", L{Loopback: true}, "warned: every local user"},
		{"loopback TLS", L{Loopback: true, TLS: true}, "warned: every local user"},
		{"loopback mutual TLS", L{Loopback: true, TLS: true, ClientCA: true}, "allowed: any client certificate"},
		{"loopback mutual TLS, names", L{Loopback: true, TLS: true, ClientCA: true, ClientNames: true}, "allowed: clients named"},
		{"loopback, unix allowlists", L{Loopback: true, UnixAllowlist: true}, "refused: apply to the unix socket"},

		{"remote plaintext", L{}, "refused: --allow-insecure-tcp"},
		{"remote plaintext, --allow-insecure-tcp", L{AllowInsecureTCP: true}, "warned: INSECURE"},
		{"remote TLS", L{TLS: true}, "refused: --tls-client-ca"},
		{"remote TLS, --allow-tls-without-client-cert", L{TLS: true, AllowTLSWithoutClientCert: true}, "warned: INSECURE"},
		{"remote TLS, --allow-insecure-tcp", L{TLS: true, AllowInsecureTCP: true}, "refused: did you mean --allow-tls-without-client-cert"},
		{"remote mutual TLS", L{TLS: true, ClientCA: true}, "allowed: mutual TLS"},
		{"remote mutual TLS, names", L{TLS: true, ClientCA: true, ClientNames: true}, "allowed: clients named"},
		{"remote mutual TLS, --allow-tls-without-client-cert", L{TLS: true, ClientCA: true, AllowTLSWithoutClientCert: true}, "refused: does nothing"},
		{"remote client CA without TLS", L{ClientCA: true}, "refused: needs --tls-cert"},
		{"remote TLS, names without client CA", L{TLS: true, ClientNames: true}, "refused: --tls-allow-clients needs --tls-client-ca"},
		{"remote TLS, names, waiver", L{TLS: true, ClientNames: true, AllowTLSWithoutClientCert: true}, "refused: --tls-allow-clients needs --tls-client-ca"},
		{"remote, unix allowlists", L{TLS: true, ClientCA: true, UnixAllowlist: true}, "refused: apply to the unix socket"},
		{"--allow-tls-without-client-cert on plaintext", L{AllowTLSWithoutClientCert: true}, "refused: does nothing"},
	}
	for _, tt := range tests {
		if got := outcome(Decide(tt.l)); !strings.HasPrefix(got, strings.SplitN(tt.want, ": ", 2)[0]+": ") ||
			!strings.Contains(got, strings.SplitN(tt.want, ": ", 2)[1]) {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func outcome(v Verdict, err error) string {
	switch {
	case err != nil:
		return "refused: " + err.Error()
	case v.Warning != "":
		return "warned: " + v.Warning
	}
	return "allowed: " + v.Gate
}

// TestDecideEveryCombination checks what must hold for every one of the
// 256 combinations of flags, not only those in the table: nothing off
// loopback is served without client certificates unless its waiver was
// given, and then loudly; whatever does not check who connects is warned
// about; every verdict says what guards it.
func TestDecideEveryCombination(t *testing.T) {
	for bits := range 1 << 8 {
		b := func(i int) bool { return bits&(1<<i) != 0 }
		l := Listener{Unix: b(0), Loopback: b(1), TLS: b(2), ClientCA: b(3), ClientNames: b(4),
			UnixAllowlist: b(5), AllowInsecureTCP: b(6), AllowTLSWithoutClientCert: b(7)}
		if l.Unix && l.Loopback {
			continue // an address is one or the other
		}
		v, err := Decide(l)
		name := fmt.Sprintf("%+v", l)
		if err != nil {
			if v != (Verdict{}) {
				t.Errorf("%s: refused, yet a verdict %+v", name, v)
			}
			continue
		}
		if v.Gate == "" {
			t.Errorf("%s: allowed with no gate described", name)
		}
		authenticated := l.Unix || l.ClientCA
		switch {
		case !authenticated && !l.Loopback && !l.AllowInsecureTCP && !l.AllowTLSWithoutClientCert:
			t.Errorf("%s: served off loopback to anyone, without a waiver", name)
		case !authenticated && !l.Loopback && !strings.HasPrefix(v.Warning, "INSECURE"):
			t.Errorf("%s: served off loopback to anyone, warning %q", name, v.Warning)
		case !authenticated && v.Warning == "":
			t.Errorf("%s: served to every local user without a warning", name)
		case authenticated && v.Warning != "":
			t.Errorf("%s: authenticated, yet warned %q", name, v.Warning)
		}
		if l.Unix && (l.TLS || l.ClientCA || l.ClientNames) || !l.Unix && l.UnixAllowlist || l.ClientNames && !l.ClientCA {
			t.Errorf("%s: a flag that does not apply was accepted", name)
		}
	}
}

func TestClientNames(t *testing.T) {
	u, _ := url.Parse("spiffe://example.org/a")
	cert := &x509.Certificate{
		Subject:        pkix.Name{CommonName: "cn-name"},
		DNSNames:       []string{"host.example.org"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.7")},
		EmailAddresses: []string{"ops@example.org"},
		URIs:           []*url.URL{u},
	}
	for name, want := range map[string]bool{
		"cn-name": true, "CN-NAME": false, "host.example.org": true, "HOST.example.ORG": true,
		"10.0.0.7": true, "ops@example.org": true, "OPS@example.org": false, "spiffe://example.org/a": true,
		"spiffe://example.org": false, "example.org": false, "*.example.org": false, "": false,
	} {
		if got := (ClientNames{name}).Allows(cert); got != want {
			t.Errorf("--tls-allow-clients %q: allows = %v, want %v", name, got, want)
		}
	}
	if (ClientNames(nil)).Allows(cert) {
		t.Error("an empty allowlist admits a certificate")
	}
}
