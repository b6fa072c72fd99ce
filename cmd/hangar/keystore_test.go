package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/secrets"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/store"
)

// TestKeystoreAddPasswordsFromEnv: `hangar app keystore add` takes the
// passwords from HANGAR_KEYSTORE_PASSWORD and HANGAR_KEY_PASSWORD when
// the flags are not given (kept out of the process list), and says what
// is missing when neither is.
func TestKeystoreAddPasswordsFromEnv(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.CreateApp(ctx, &store.App{Name: "demo", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddToken(ctx, server.HashToken("secret"), store.Token{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	sealer, _, err := secrets.LoadSealer("", dir)
	if err != nil {
		t.Fatal(err)
	}
	vault := &secrets.Vault{Store: st, Sealer: sealer}
	srv := httptest.NewServer(server.New(server.Config{Store: st, Secrets: vault, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	defer srv.Close()
	ks := filepath.Join(dir, "upload.jks")
	if err := os.WriteFile(ks, []byte("not really a keystore"), 0o600); err != nil {
		t.Fatal(err)
	}
	add := func(args ...string) error {
		cf := &clientFlags{server: srv.URL, token: "secret"}
		cmd := keystoreCmd(cf)
		cmd.SetArgs(append([]string{"add", "demo", "upload", "--file", ks, "--alias", "up"}, args...))
		cmd.SetOut(io.Discard)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		return cmd.Execute()
	}
	t.Setenv("HANGAR_KEYSTORE_PASSWORD", "")
	t.Setenv("HANGAR_KEY_PASSWORD", "")
	if err := add(); err == nil || !strings.Contains(err.Error(), "--password: give the password, or set HANGAR_KEYSTORE_PASSWORD") {
		t.Errorf("without passwords: %v", err)
	}
	if err := add("--password", "from-flag"); err == nil || !strings.Contains(err.Error(), "HANGAR_KEY_PASSWORD") {
		t.Errorf("without a key password: %v", err)
	}
	t.Setenv("HANGAR_KEYSTORE_PASSWORD", "store-from-env")
	t.Setenv("HANGAR_KEY_PASSWORD", "key-from-env")
	if err := add(); err != nil {
		t.Fatal(err)
	}
	res, err := vault.Resolve(ctx, "demo", nil, []string{"upload"})
	if err != nil || len(res.Keystores) != 1 || res.Keystores[0].Password != "store-from-env" || res.Keystores[0].KeyPassword != "key-from-env" {
		t.Fatalf("stored keystore: %+v, %v", res, err)
	}
	if err := add("--password", "store-flag"); err != nil {
		t.Fatal(err)
	}
	if res, err := vault.Resolve(ctx, "demo", nil, []string{"upload"}); err != nil || res.Keystores[0].Password != "store-flag" || res.Keystores[0].KeyPassword != "key-from-env" {
		t.Fatalf("a flag wins over the environment: %+v, %v", res, err)
	}
}
