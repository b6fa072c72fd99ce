package app

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/acme/autocert"
)

// httpsConfig is the HTTP API's TLS configuration from cfg, or nil for
// plain HTTP: a certificate and key from files (--tls-cert, --tls-key), or
// certificates obtained and renewed automatically from Let's Encrypt for
// the host names of --tls-autocert, cached in <data>/autocert.
func httpsConfig(cfg Config, data string) (*tls.Config, error) {
	files := cfg.TLSCert != "" || cfg.TLSKey != ""
	switch {
	case files && len(cfg.TLSAutocert) > 0:
		return nil, errors.New("--tls-cert/--tls-key and --tls-autocert exclude each other: give a certificate, or a host name to get one for")
	case files && (cfg.TLSCert == "" || cfg.TLSKey == ""):
		return nil, errors.New("--tls-cert and --tls-key go together: give the certificate (PEM, with its chain) and its private key (PEM)")
	case cfg.TLSAutocertEmail != "" && len(cfg.TLSAutocert) == 0:
		return nil, errors.New("--tls-autocert-email needs --tls-autocert HOST")
	case files:
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
		}
		return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
	case len(cfg.TLSAutocert) > 0:
		m, err := newAutocert(cfg, data)
		if err != nil {
			return nil, err
		}
		// Its GetCertificate answers ACME's tls-alpn-01 challenge on the
		// API's own port, which must be the host names' port 443.
		tc := m.TLSConfig()
		tc.MinVersion = tls.VersionTLS12
		return tc, nil
	}
	return nil, nil
}

// newAutocert is the certificate manager of --tls-autocert: Let's Encrypt
// (its terms accepted), only for the given host names, its account key and
// certificates cached in <data>/autocert.
func newAutocert(cfg Config, data string) (*autocert.Manager, error) {
	hosts := make([]string, 0, len(cfg.TLSAutocert))
	for _, h := range cfg.TLSAutocert {
		h = strings.ToLower(strings.TrimSpace(h))
		if err := publicHostName(h); err != nil {
			return nil, fmt.Errorf("--tls-autocert %q: %w", h, err)
		}
		hosts = append(hosts, h)
	}
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(hosts...),
		Cache:      autocert.DirCache(filepath.Join(data, "autocert")),
		Email:      cfg.TLSAutocertEmail,
	}, nil
}

// publicHostName checks that h is a DNS name a public CA can certify.
func publicHostName(h string) error {
	switch {
	case h == "":
		return errors.New("empty host name")
	case net.ParseIP(h) != nil:
		return errors.New("an IP address: automatic certificates are for DNS names; use --tls-cert/--tls-key for an address")
	case strings.Contains(h, "*"):
		return errors.New("a wildcard: automatic certificates are for exact host names (tls-alpn-01 cannot prove a wildcard)")
	case !strings.Contains(h, "."), strings.HasSuffix(h, ".localhost"), h == "localhost":
		return errors.New("not a public DNS name (a CA must reach it on port 443)")
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("character %q is not allowed in a host name", c)
		}
	}
	return nil
}
