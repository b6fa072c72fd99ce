package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// TestPlainHTTPWarning: `hangar server` on a network address without TLS
// warns at start that tokens and the one-line command's key cross the
// network in clear; with TLS, or on loopback, it does not. It runs in a
// network namespace of its own, where the wildcard address reaches no
// network.
func TestPlainHTTPWarning(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare")
	}
	certs := tlstest.New(t, "127.0.0.1")
	for _, c := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--http", "0.0.0.0:0"}, true},
		{[]string{"--http", "0.0.0.0:0", "--tls-cert", certs.CertFile, "--tls-key", certs.KeyFile}, false},
		{[]string{"--http", "0.0.0.0:0", "--public-url", "https://ci.example.com"}, false},
		{[]string{"--http", "127.0.0.1:0"}, false},
	} {
		args := append([]string{"server", "--data", t.TempDir(), "--driver", "host", "--ssh", "off"}, c.args...)
		cmd := exec.Command("unshare", "-n", "sh", "-c", `ip link set lo up && exec "$0" "$@"`, os.Args[0])
		cmd.Args = append(cmd.Args, args...)
		cmd.Env = []string{"HANGAR_TEST_MAIN=1", "PATH=" + os.Getenv("PATH")}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// New logs the warning right after "hangar server started", before
		// the server handles any signal: stop it once it has started and
		// read everything it said.
		var log strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "hangar server started") {
				_ = cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("%v: %v\n%s", c.args, err, log.String())
		}
		warned := strings.Contains(log.String(), "level=WARN msg=\"the API is served over plain HTTP on a network address")
		if warned != c.warn || !strings.Contains(log.String(), "hangar server started") {
			t.Errorf("%v: warned %v, want %v:\n%s", c.args, warned, c.warn, log.String())
		}
	}
}
