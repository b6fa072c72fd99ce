package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-ci/hangar/internal/gitrepo"
	"github.com/hangar-ci/hangar/internal/server"
	"github.com/hangar-ci/hangar/internal/store"
)

// TestAppRefuseUnsupportedFlags: `hangar app add --refuse-unsupported`
// and `hangar app set APP --refuse-unsupported=BOOL` reach the store, and
// `app set` without a setting says what to give.
func TestAppRefuseUnsupportedFlags(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenSQLite(filepath.Join(dir, "hangar.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.AddToken(ctx, server.HashToken("secret"), store.Token{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(dir, "repo")
	for _, args := range [][]string{{"init", "--quiet", "--initial-branch", "main", repo},
		{"-C", repo, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "--quiet", "--allow-empty", "-m", "first"}} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v: %s", args, err, out)
		}
	}
	srv := httptest.NewServer(server.New(server.Config{Store: st, Mirrors: &gitrepo.Mirrors{Dir: filepath.Join(dir, "mirrors")},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	defer srv.Close()
	run := func(args ...string) error {
		t.Helper()
		cmd := appCmd(&clientFlags{server: srv.URL, token: "secret"})
		cmd.SetArgs(args)
		cmd.SetOut(io.Discard)
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		return cmd.Execute()
	}
	refuses := func(name string) bool {
		t.Helper()
		a, err := st.App(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return a.RefuseUnsupported
	}
	if err := run("add", "strict", "--repo", repo, "--refuse-unsupported"); err != nil {
		t.Fatal(err)
	}
	if err := run("add", "lax", "--repo", repo); err != nil {
		t.Fatal(err)
	}
	if !refuses("strict") || refuses("lax") {
		t.Fatalf("after add: strict %v, lax %v", refuses("strict"), refuses("lax"))
	}
	if err := run("set", "lax"); err == nil || !strings.Contains(err.Error(), "--refuse-unsupported=true or --refuse-unsupported=false") {
		t.Errorf("set without a setting: %v", err)
	}
	if err := run("set", "strict", "--refuse-unsupported=false"); err != nil {
		t.Fatal(err)
	}
	if err := run("set", "lax", "--refuse-unsupported"); err != nil {
		t.Fatal(err)
	}
	if refuses("strict") || !refuses("lax") {
		t.Errorf("after set: strict %v, lax %v", refuses("strict"), refuses("lax"))
	}
	if err := run("set", "nosuch", "--refuse-unsupported=true"); err == nil || !strings.Contains(err.Error(), "hangar app list") {
		t.Errorf("set on a missing app: %v", err)
	}
}
