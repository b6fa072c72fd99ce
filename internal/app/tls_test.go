package app

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/acme/autocert"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/syncbuf"
	"github.com/hangar-ci/hangar/internal/tlstest"
)

func TestHTTPSConfig(t *testing.T) {
	certs := tlstest.New(t, "127.0.0.1")
	data := t.TempDir()
	for _, c := range []struct {
		name string
		cfg  Config
		want string // error substring; "" for none
	}{
		{"plain", Config{}, ""},
		{"files", Config{TLSCert: certs.CertFile, TLSKey: certs.KeyFile}, ""},
		{"cert alone", Config{TLSCert: certs.CertFile}, "--tls-cert and --tls-key go together"},
		{"key alone", Config{TLSKey: certs.KeyFile}, "--tls-cert and --tls-key go together"},
		{"swapped", Config{TLSCert: certs.KeyFile, TLSKey: certs.CertFile}, "--tls-cert " + certs.KeyFile},
		{"missing", Config{TLSCert: "/nonexistent/cert.pem", TLSKey: certs.KeyFile}, "no such file"},
		{"both kinds", Config{TLSCert: certs.CertFile, TLSKey: certs.KeyFile, TLSAutocert: []string{"ci.example.com"}}, "exclude each other"},
		{"email alone", Config{TLSAutocertEmail: "ops@example.com"}, "needs --tls-autocert"},
		{"autocert", Config{TLSAutocert: []string{"ci.example.com", " CI2.example.com "}, TLSAutocertEmail: "ops@example.com"}, ""},
		{"autocert IP", Config{TLSAutocert: []string{"203.0.113.7"}}, "an IP address"},
		{"autocert wildcard", Config{TLSAutocert: []string{"*.example.com"}}, "a wildcard"},
		{"autocert localhost", Config{TLSAutocert: []string{"localhost"}}, "not a public DNS name"},
		{"autocert bare name", Config{TLSAutocert: []string{"hangar"}}, "not a public DNS name"},
		{"autocert junk", Config{TLSAutocert: []string{"ci_1.example.com"}}, `character '_'`},
	} {
		tc, err := httpsConfig(c.cfg, data)
		switch {
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want == "" && (tc == nil) != (c.name == "plain"):
			t.Errorf("%s: TLS config %v", c.name, tc)
		case tc != nil && tc.MinVersion != tls.VersionTLS12:
			t.Errorf("%s: MinVersion %x", c.name, tc.MinVersion)
		}
		if c.name == "files" && len(tc.Certificates) != 1 {
			t.Errorf("files: %d certificates", len(tc.Certificates))
		}
		if c.name == "autocert" && (tc.GetCertificate == nil || !slices.Contains(tc.NextProtos, "acme-tls/1")) {
			t.Errorf("autocert: GetCertificate %v, NextProtos %v: cannot answer tls-alpn-01", tc.GetCertificate != nil, tc.NextProtos)
		}
	}

	// The manager: the host names given, the cache in the data dir.
	m, err := newAutocert(Config{TLSAutocert: []string{"CI.example.com"}, TLSAutocertEmail: "ops@example.com"}, data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Cache != autocert.DirCache(filepath.Join(data, "autocert")) || m.Email != "ops@example.com" || m.Prompt == nil {
		t.Errorf("manager: cache %v, email %q", m.Cache, m.Email)
	}
	ctx := context.Background()
	if err := m.HostPolicy(ctx, "ci.example.com"); err != nil {
		t.Errorf("policy refuses its host: %v", err)
	}
	if err := m.HostPolicy(ctx, "other.example.com"); err == nil {
		t.Error("policy allows another host")
	}
}

// TestServeHTTPS: with --tls-cert/--tls-key, `hangar server` serves its API
// over HTTPS only, and says so; on loopback without TLS it warns of
// nothing.
func TestServeHTTPS(t *testing.T) {
	certs := tlstest.New(t, "127.0.0.1")
	var logs syncbuf.Buffer
	cfg := Config{Data: t.TempDir(), Driver: "host", HTTP: "127.0.0.1:0", SSH: "off", MaxBuilds: 1,
		TLSCert: certs.CertFile, TLSKey: certs.KeyFile, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := a.httpLn.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx, nil) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}}}
	token, err := os.ReadFile(filepath.Join(cfg.Data, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := api.New("https://"+addr, strings.TrimSpace(string(token)), trusting).Info(ctx)
	if err != nil || !info.HTTP.TLS || !info.HTTP.Loopback || info.HTTP.Warning != "" {
		t.Fatalf("info over https: %+v %v", info, err)
	}
	// Plain HTTP on the same port is no API.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) == "ok" {
			t.Error("the API answers plain HTTP")
		}
	}
	if l := logs.String(); !strings.Contains(l, "http=https://"+addr) || strings.Contains(l, "plain HTTP") {
		t.Errorf("log:\n%s", l)
	}
}
