package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/store"
	"github.com/hangar-ci/hangar/internal/tlstest"
)

// TestMain lets a test run this package's main as the hangar CLI: the
// test binary with HANGAR_TEST_MAIN=1 is hangar.
func TestMain(m *testing.M) {
	if os.Getenv("HANGAR_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCLITrustsSSLCertFile: the CLI reaches an HTTPS server whose
// certificate is from a private CA when SSL_CERT_FILE names the CA's
// certificate, and without it says what to set.
func TestCLITrustsSSLCertFile(t *testing.T) {
	certs := tlstest.New(t, "127.0.0.1")
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.AddToken(ctx, server.HashToken("hgr_cli"), store.Token{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateApp(ctx, &store.App{Name: "tls-demo", Repo: "/nonexistent/repo.git"}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(server.New(server.Config{Store: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	srv.TLS = certs.Server
	srv.StartTLS()
	defer srv.Close()

	hangar := func(env ...string) (string, int) {
		cmd := exec.Command(os.Args[0], "app", "list")
		cmd.Env = append([]string{"HANGAR_TEST_MAIN=1", "HANGAR_SERVER=" + srv.URL, "HANGAR_TOKEN=hgr_cli",
			"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "SSL_CERT_DIR=/nonexistent"}, env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), 0
	}
	if out, code := hangar("SSL_CERT_FILE=" + certs.CAFile); code != 0 || !strings.Contains(out, "tls-demo") {
		t.Errorf("hangar app list with SSL_CERT_FILE: exit %d\n%s", code, out)
	}
	if out, code := hangar("SSL_CERT_FILE=/nonexistent/ca.pem"); code == 0 || !strings.Contains(out, "set SSL_CERT_FILE") || strings.Contains(out, "is `hangar server` running") {
		t.Errorf("hangar app list without the CA: exit %d\n%s", code, out)
	}
}
