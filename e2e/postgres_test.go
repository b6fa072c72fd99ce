package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hangar-ci/hangar/e2e/harness"
	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestBuildPostgres: a server on PostgreSQL (--database) runs a build,
// with its log, a server started again on the same database finds it, and
// a second server on the database (a replica) serves it too.
func TestBuildPostgres(t *testing.T) {
	url := pgtest.DB(t)
	f := newFixture(t, "host", "--database", url)
	b, logs := f.wait(f.start("--workflow pass").ID, 2*time.Minute)
	if b.Status != build.Finished || !strings.Contains(logs, "marker-"+f.run) {
		t.Fatalf("status %s (%s), log:\n%s", b.Status, b.Message, logs)
	}
	if _, err := os.Stat(filepath.Join(f.s.Data, "hangar.db")); !os.IsNotExist(err) {
		t.Errorf("the server made a SQLite database beside PostgreSQL: %v", err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var status string
	var chunks int
	if err := conn.QueryRow(ctx, `SELECT status, (SELECT count(*) FROM log_chunks WHERE build_id = $1) FROM builds WHERE id = $1`, b.ID).Scan(&status, &chunks); err != nil {
		t.Fatal(err)
	}
	if status != string(build.Finished) || chunks == 0 {
		t.Errorf("in PostgreSQL: build %s with %d log chunks", status, chunks)
	}

	f.s.Stop()
	f.s = harness.StartServer(t, harness.Options{Driver: "host", Data: f.s.Data, Args: []string{"--database", url}})
	if again, logsAgain := f.show(b.ID), f.hangar(fmt.Sprintf("build logs %d", b.ID)).Stdout; again.Status != build.Finished || logsAgain != logs {
		t.Errorf("after a restart: %s, log of %d bytes (was %d)", again.Status, len(logsAgain), len(logs))
	}
	// Another server, with its own data dir, shares the database: it sees
	// the build, and each server's admin token stays valid.
	other := harness.StartServer(t, harness.Options{Driver: "host", Args: []string{"--database", url}})
	for _, tok := range []string{f.s.Token, other.Token} {
		if got, err := other.ClientWith(tok).Build(ctx, b.ID); err != nil || got.Status != build.Finished {
			t.Errorf("the second server: build %v, %v", got, err)
		}
		if _, err := f.s.ClientWith(tok).Apps(ctx); err != nil {
			t.Errorf("the first server with an admin token: %v", err)
		}
	}
}
