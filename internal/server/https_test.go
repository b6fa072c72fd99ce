package server

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/api"
	"github.com/hangar-ci/hangar/internal/tlstest"
)

// TestHTTPS: served over HTTPS with a certificate of a CA the client
// trusts, the API works with the CLI's client, says it is TLS, and the
// one-line command is an https URL that serves the script; a client that
// does not trust the CA is told how to.
func TestHTTPS(t *testing.T) {
	certs := tlstest.New(t, "127.0.0.1")
	e := newSSHEnv(t, sshEnvOptions{isolated: true, tls: certs.Server})
	b, key, _ := e.sshBuild("demo")
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool}}}
	c := api.New(e.srv.URL, e.admin, trusting)
	if !strings.HasPrefix(e.srv.URL, "https://127.0.0.1:") {
		t.Fatalf("server URL %s", e.srv.URL)
	}
	info, err := c.Info(t.Context())
	if err != nil || !info.HTTP.TLS || info.HTTP.Warning != "" {
		t.Fatalf("info: %+v %v", info, err)
	}
	got, err := c.Build(t.Context(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	url, ok := strings.CutPrefix(got.SSH.Command, "curl -fsSL '")
	url, _, _ = strings.Cut(url, "'")
	if !ok || !strings.HasPrefix(url, e.srv.URL+"/ssh/") {
		t.Fatalf("command %q, want an https URL of %s", got.SSH.Command, e.srv.URL)
	}
	resp, err := trusting.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	script, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || !strings.Contains(string(script), strings.TrimSpace(key)) {
		t.Fatalf("GET the one-line URL: %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	if ev := e.lastEvent(b.ID, "ssh_script"); ev.Data["via"] != "url" {
		t.Errorf("fetch event: %+v", ev)
	}

	_, err = api.New(e.srv.URL, e.admin, &http.Client{}).Info(t.Context())
	if !errors.Is(err, api.ErrUnreachable) || !strings.Contains(err.Error(), "SSL_CERT_FILE") {
		t.Errorf("a client without the CA: %v", err)
	}
}

func TestTransportWarning(t *testing.T) {
	for _, c := range []struct {
		tls, loopback bool
		publicURL     string
		warn          bool
	}{
		{false, true, "", false},                          // make run
		{true, false, "", false},                          // --tls-cert on :443
		{false, false, "", true},                          // :8080 in clear
		{false, false, "https://ci.example.com", false},   // behind a TLS proxy
		{false, true, "https://ci.example.com", false},    // the same on loopback
		{false, true, "http://ci.example.com:8080", true}, // a proxy in clear
		{false, true, "http://localhost:8080", false},
		{false, false, "http://127.0.0.1:8080", true},
	} {
		w := TransportWarning(c.tls, c.loopback, c.publicURL)
		if (w != "") != c.warn || c.warn && !strings.Contains(w, "--tls-cert") {
			t.Errorf("tls=%v loopback=%v public URL %q: warning %q, want one: %v", c.tls, c.loopback, c.publicURL, w, c.warn)
		}
	}
}
