package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// eachBackend runs f as a subtest on a new SQLite database and on a new
// PostgreSQL database.
func eachBackend(t *testing.T, f func(t *testing.T, db testDB)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "hangar.db")
		f(t, testDB{tryOpen: func() (*Store, error) { return OpenSQLite(path) }})
	})
	t.Run("postgres", func(t *testing.T) {
		f(t, eachBackendPostgres(t))
	})
}

// eachBackendB is eachBackend for benchmarks, with one store.
func eachBackendB(b *testing.B, f func(b *testing.B, s *Store)) {
	b.Run("sqlite", func(b *testing.B) {
		s, err := OpenSQLite(filepath.Join(b.TempDir(), "hangar.db"))
		f(b, opened(b, s, err))
	})
	b.Run("postgres", func(b *testing.B) {
		f(b, eachBackendPostgres(b).open(b))
	})
}

// eachBackendPostgres is a new PostgreSQL database.
func eachBackendPostgres(t testing.TB) testDB {
	url := pgtest.DB(t)
	return testDB{postgres: true, tryOpen: func() (*Store, error) { return OpenPostgres(context.Background(), url) }}
}

// testDB is a test's database.
type testDB struct {
	postgres bool
	// tryOpen opens a Store on the database (another one at each call, as
	// another process would).
	tryOpen func() (*Store, error)
}

// open opens a Store on the database, closed at cleanup.
func (db testDB) open(t testing.TB) *Store {
	t.Helper()
	s, err := db.tryOpen()
	return opened(t, s, err)
}

func opened(t testing.TB, s *Store, err error) *Store {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return s
}

func TestAppsAndBuilds(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		testAppsAndBuilds(t, db.open(t))
	})
}

func testAppsAndBuilds(t *testing.T, s *Store) {
	ctx := context.Background()
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate app: %v", err)
	}
	if _, err := s.App(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown app: %v", err)
	}
	// Numbers are per app and unique under concurrency.
	var wg sync.WaitGroup
	ids := make(chan int64, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := &build.Build{App: "a", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "c", Status: build.Queued, Trigger: build.Manual, MaxDuration: 60, Steps: build.NewSteps(nil)}
			if err := s.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
				t.Errorf("create build: %v", err)
				return
			}
			ids <- b.Number
		}()
	}
	wg.Wait()
	close(ids)
	seen := map[int64]bool{}
	for n := range ids {
		if seen[n] || n < 1 || n > 20 {
			t.Errorf("build number %d repeated or out of range", n)
		}
		seen[n] = true
	}

	wake, unsub := s.Subscribe(0)
	defer unsub()
	b, spec, err := s.ClaimBuild(ctx)
	if err != nil || b.Status != build.Preparing || b.StartedAt == nil || string(spec) != "{}" {
		t.Fatalf("claim: %+v %s %v", b, spec, err)
	}
	select {
	case <-wake:
	case <-time.After(time.Second):
		t.Fatal("no notification after claim")
	}
	now := time.Now().UTC()
	b.Status, b.FinishedAt = build.Finished, &now
	if ok, err := s.UpdateBuild(ctx, b); !ok || err != nil {
		t.Fatalf("update: %v %v", ok, err)
	}
	// An ended build never changes again.
	b.Status = build.Building
	if ok, _ := s.UpdateBuild(ctx, b); ok {
		t.Fatal("an ended build was changed")
	}
	got, err := s.Build(ctx, b.ID)
	if err != nil || got.Status != build.Finished || len(got.Steps) != 2 {
		t.Fatalf("read back: %+v %v", got, err)
	}
	if err := s.DeleteApp(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Build(ctx, b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("build of a deleted app: %v", err)
	}
}

func TestLogs(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		testLogs(t, db.open(t))
	})
}

func testLogs(t *testing.T, s *Store) {
	ctx := context.Background()
	b := newBuild(t, s, build.Queued)
	// 2500 lines in chunks of 1 to 7 lines, steps changing between chunks.
	var chunks []build.LogChunk
	for seq := 1; seq <= 2500; {
		n := min(1+seq%7, 2501-seq)
		var data []byte
		for i := 0; i < n; i++ {
			data = fmt.Appendf(data, "line %d\n", seq+i)
		}
		chunks = append(chunks, build.LogChunk{Seq: int64(seq), Lines: n, Step: seq % 3, Time: time.Now(), Data: data})
		seq += n
	}
	if err := s.AppendLog(ctx, b.ID, chunks); err != nil {
		t.Fatal(err)
	}
	for _, page := range []struct {
		after int64
		limit int
		first int64
		n     int
	}{
		{0, 10000, 1, 2500},
		{1000, 1000, 1001, 1000},
		{1001, 3, 1002, 3},
		{2499, 10, 2500, 1},
		{2500, 10, 0, 0},
	} {
		got, err := s.Logs(ctx, b.ID, page.after, page.limit)
		if err != nil || len(got) != page.n {
			t.Fatalf("after %d limit %d: %d lines, %v", page.after, page.limit, len(got), err)
		}
		for i, l := range got {
			seq := page.first + int64(i)
			if l.Seq != seq || l.Text != fmt.Sprintf("line %d", seq) {
				t.Fatalf("after %d: line %d = %+v", page.after, i, l)
			}
		}
	}
	// Writing a chunk again (a retry) changes nothing.
	again := chunks[0]
	again.Data = []byte("other\n")
	if err := s.AppendLog(ctx, b.ID, []build.LogChunk{again}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Logs(ctx, b.ID, 0, 1); err != nil || got[0].Text != "line 1" {
		t.Fatalf("after a repeated chunk: %+v %v", got, err)
	}
}

func TestCancelBuild(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		testCancelBuild(t, db.open(t))
	})
}

func testCancelBuild(t *testing.T, s *Store) {
	ctx := context.Background()
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	newBuild := func(withSSH bool) *build.Build {
		b := &build.Build{App: "a", Workflow: "w", WorkflowName: "W", Branch: "main", Commit: "c", Status: build.Queued,
			Trigger: build.Manual, MaxDuration: 60, Steps: build.NewSteps(nil), SSH: build.SSH{Enabled: withSSH, State: build.SSHPending}}
		if err := s.CreateBuild(ctx, b, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		return b
	}
	claimed := newBuild(false)
	if b, _, err := s.ClaimBuild(ctx); err != nil || b.ID != claimed.ID {
		t.Fatalf("claim: %v %v", b, err)
	}
	queued := newBuild(true)
	wake, unsub := s.Subscribe(0)
	defer unsub()

	// A queued build ends at once, in the one statement.
	if ok, err := s.CancelBuild(ctx, queued.ID, "canceled before it started"); !ok || err != nil {
		t.Fatalf("cancel queued: %v %v", ok, err)
	}
	select {
	case <-wake:
	default:
		t.Error("no notification for a canceled build")
	}
	b, _ := s.Build(ctx, queued.ID)
	if b.Status != build.Canceled || b.Message != "canceled before it started" || b.FinishedAt == nil || b.SSH.State != build.SSHClosed {
		t.Errorf("queued build after cancel: %s %q %v %s", b.Status, b.Message, b.FinishedAt, b.SSH.State)
	}
	if ids, err := s.CancelRequests(ctx); err != nil || len(ids) != 0 {
		t.Errorf("cancel requests before any: %v %v", ids, err)
	}
	// A claimed build is marked for its runner and left as it is.
	if ok, err := s.CancelBuild(ctx, claimed.ID, "canceled before it started"); !ok || err != nil {
		t.Fatalf("cancel claimed: %v %v", ok, err)
	}
	if b, _ := s.Build(ctx, claimed.ID); b.Status != build.Preparing || b.Message != "" || b.FinishedAt != nil {
		t.Errorf("the store wrote a running build: %s %q %v", b.Status, b.Message, b.FinishedAt)
	}
	if ids, err := s.CancelRequests(ctx); err != nil || len(ids) != 1 || ids[0] != claimed.ID {
		t.Errorf("cancel requests: %v %v, want [%d]", ids, err, claimed.ID)
	}
	// The runner ends it; the request is then gone, and a cancel of an
	// ended build does nothing.
	b, _ = s.Build(ctx, claimed.ID)
	now := time.Now()
	b.Status, b.Message, b.FinishedAt = build.Canceled, "canceled", &now
	if ok, err := s.UpdateBuild(ctx, b); !ok || err != nil {
		t.Fatalf("update: %v %v", ok, err)
	}
	if ids, _ := s.CancelRequests(ctx); len(ids) != 0 {
		t.Errorf("cancel requests of ended builds: %v", ids)
	}
	for _, id := range []int64{claimed.ID, queued.ID} {
		if ok, err := s.CancelBuild(ctx, id, "x"); ok || err != nil {
			t.Errorf("cancel ended build %d: %v %v", id, ok, err)
		}
	}
	if b, _ := s.Build(ctx, queued.ID); b.Message != "canceled before it started" {
		t.Errorf("a second cancel rewrote the build: %q", b.Message)
	}
	if _, err := s.CancelBuild(ctx, 999, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("cancel unknown build: %v", err)
	}
}

// TestMigrateCancelRequested opens a database made before builds had
// cancel_requested.
func TestMigrateCancelRequested(t *testing.T) {
	s := migrated(t, func(old *Store) {
		if _, err := old.db.Exec(`ALTER TABLE builds DROP COLUMN cancel_requested`); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := s.CancelRequests(context.Background()); err != nil {
		t.Errorf("after migration: %v", err)
	}
}

func TestMigrateLogLines(t *testing.T) {
	ctx := context.Background()
	var b *build.Build
	s := migrated(t, func(old *Store) {
		b = newBuild(t, old, build.Finished)
		// The one-row-per-line table of earlier versions.
		if _, err := old.db.Exec(`CREATE TABLE logs (build_id INTEGER NOT NULL, seq INTEGER NOT NULL, step INTEGER NOT NULL,
		time INTEGER NOT NULL, text TEXT NOT NULL, PRIMARY KEY (build_id, seq))`); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			if _, err := old.db.Exec(`INSERT INTO logs VALUES ($1, $2, $3, $4, $5)`, b.ID, i, i%2, 1000*i, fmt.Sprintf("old line %d", i)); err != nil {
				t.Fatal(err)
			}
		}
	})
	lines, err := s.Logs(ctx, b.ID, 0, 10)
	if err != nil || len(lines) != 3 {
		t.Fatalf("after migration: %d lines, %v", len(lines), err)
	}
	for i, l := range lines {
		if l.Seq != int64(i+1) || l.Step != (i+1)%2 || l.Text != fmt.Sprintf("old line %d", i+1) || l.Time.UnixMilli() != int64(1000*(i+1)) {
			t.Errorf("line %d: %+v", i+1, l)
		}
	}
}

// TestFailInterrupted: builds a crashed server left running end failed,
// with no step left running and the reason as the log's last line; queued
// and ended builds are untouched.
func TestFailInterrupted(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		testFailInterrupted(t, db.open(t))
	})
}

func testFailInterrupted(t *testing.T, s *Store) {
	ctx := context.Background()
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	started := time.Now().Add(-time.Minute).UTC()
	running := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{
		{Name: "one", Status: build.StepSuccess, StartedAt: &started, FinishedAt: &started},
		{Name: "two", Status: build.StepRunning, StartedAt: &started},
		{Name: "three", Status: build.StepPending},
	}}
	queued := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{{Name: "one", Status: build.StepPending}}}
	for _, b := range []*build.Build{running, queued} {
		if err := s.CreateBuild(ctx, b, nil); err != nil {
			t.Fatal(err)
		}
	}
	running.Status = build.Building
	if ok, err := s.UpdateBuild(ctx, running); err != nil || !ok {
		t.Fatalf("update: %v %v", ok, err)
	}
	if err := s.AppendLog(ctx, running.ID, []build.LogChunk{{Seq: 1, Lines: 2, Step: 1, Time: started, Data: []byte("a\nb\n")}}); err != nil {
		t.Fatal(err)
	}
	n, err := s.FailInterrupted(ctx, "the server stopped")
	if err != nil || n != 1 {
		t.Fatalf("FailInterrupted: %d, %v; want 1", n, err)
	}
	got, err := s.Build(ctx, running.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != build.Failed || got.Message != "the server stopped" || got.FinishedAt == nil {
		t.Errorf("build: %s %q %v", got.Status, got.Message, got.FinishedAt)
	}
	want := []build.StepStatus{build.StepSuccess, build.StepFailed, build.StepSkipped}
	for i, st := range got.Steps {
		if st.Status != want[i] {
			t.Errorf("step %s: %s, want %s", st.Name, st.Status, want[i])
		}
	}
	if st := got.Steps[1]; st.FinishedAt == nil || st.DurationMS == nil || *st.DurationMS < 59000 {
		t.Errorf("the interrupted step's end: %v %v", st.FinishedAt, st.DurationMS)
	}
	lines, err := s.Logs(ctx, running.ID, 0, 10)
	if err != nil || len(lines) != 3 || lines[2].Text != "hangar: the server stopped" || lines[2].Seq != 3 || lines[2].Step != 1 {
		t.Errorf("log: %+v %v", lines, err)
	}
	if q, err := s.Build(ctx, queued.ID); err != nil || q.Status != build.Queued {
		t.Errorf("queued build: %v %v", q.Status, err)
	}
	if n, err := s.FailInterrupted(ctx, "again"); err != nil || n != 0 {
		t.Errorf("second FailInterrupted: %d %v", n, err)
	}
}

// TestLogChunksCompressed: output that repeats itself is stored smaller,
// output that does not is stored as it is, and both read back the same.
func TestLogChunksCompressed(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		testLogChunksCompressed(t, db.open(t))
	})
}

func testLogChunksCompressed(t *testing.T, s *Store) {
	ctx := context.Background()
	b := newBuild(t, s, build.Queued)
	var verbose []byte
	for i := 1; i <= 1000; i++ {
		verbose = fmt.Appendf(verbose, "Compiling module %d of 1000\n", i)
	}
	random := make([]byte, 3000)
	rand.Read(random)
	noise := []byte(base64.StdEncoding.EncodeToString(random) + "\n")
	// The last chunk came compressed (from the builder): it is stored as
	// it came.
	packed := []byte("line one\nline two\n")
	chunks := []build.LogChunk{
		{Seq: 1, Lines: 1000, Step: 1, Time: time.Now(), Data: verbose},
		{Seq: 1001, Lines: 1, Step: 1, Time: time.Now(), Data: noise},
		{Seq: 1002, Lines: 2, Step: 1, Time: time.Now(), Data: s2.Encode(nil, packed), Encoding: build.LogS2},
	}
	if err := s.AppendLog(ctx, b.ID, chunks); err != nil {
		t.Fatal(err)
	}
	bad := []build.LogChunk{{Seq: 1004, Lines: 1, Step: 1, Time: time.Now(), Data: []byte("x"), Encoding: "zip"}}
	if err := s.AppendLog(ctx, b.ID, bad); err == nil || !strings.Contains(err.Error(), `unknown encoding "zip"`) {
		t.Errorf("a chunk in an unknown encoding: %v", err)
	}
	for _, c := range []struct {
		first int64
		enc   string
		max   int
	}{{1, encodingS2, len(verbose) / 4}, {1001, "", len(noise)}, {1002, encodingS2, len(packed) + 4}} {
		var enc string
		var n int
		if err := s.db.QueryRow(`SELECT encoding, length(data) FROM log_chunks WHERE build_id = $1 AND first = $2`, b.ID, c.first).Scan(&enc, &n); err != nil {
			t.Fatal(err)
		}
		if enc != c.enc || n > c.max {
			t.Errorf("chunk at line %d stored as %q, %d bytes; want %q, at most %d", c.first, enc, n, c.enc, c.max)
		}
	}
	lines, err := s.Logs(ctx, b.ID, 0, 2000)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for _, l := range lines {
		got = append(append(got, l.Text...), '\n')
	}
	if want := append(append(bytes.Clone(verbose), noise...), packed...); !bytes.Equal(got, want) {
		t.Errorf("read back %d bytes in %d lines, want the %d bytes written", len(got), len(lines), len(want))
	}
}

func TestMigrateLogEncoding(t *testing.T) {
	var b *build.Build
	s := migrated(t, func(old *Store) {
		b = newBuild(t, old, build.Finished)
		// The uncompressed chunks of the version before.
		if _, err := old.db.Exec(`ALTER TABLE log_chunks DROP COLUMN encoding`); err != nil {
			t.Fatal(err)
		}
		if _, err := old.db.Exec(`INSERT INTO log_chunks (build_id, first, last, step, time, data) VALUES ($1, 1, 2, 0, 0, $2)`, b.ID, []byte("one\ntwo\n")); err != nil {
			t.Fatal(err)
		}
	})
	lines, err := s.Logs(context.Background(), b.ID, 0, 10)
	if err != nil || len(lines) != 2 || lines[0].Text != "one" || lines[1].Text != "two" {
		t.Fatalf("after migration: %+v, %v", lines, err)
	}
}

// migrated opens a new SQLite database, lets makeOld turn it into one an
// earlier version made, before versioned migrations (no
// schema_migrations), and opens it again (migrating it).
func migrated(t *testing.T, makeOld func(*Store)) *Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "old.db")
	old, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	makeOld(old)
	if _, err := old.db.Exec(`DROP TABLE schema_migrations`); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newBuild creates app "a" and a build of it with status.
func newBuild(t testing.TB, s *Store, status build.Status) *build.Build {
	t.Helper()
	ctx := context.Background()
	if err := s.CreateApp(ctx, &App{Name: "a", Repo: "/r"}); err != nil {
		t.Fatal(err)
	}
	b := &build.Build{App: "a", Status: status, Trigger: build.Manual, Steps: []build.Step{}}
	if err := s.CreateBuild(ctx, b, nil); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMigrateFromUnversioned opens a database made by the last release
// before versioned migrations, with its rows as that release wrote them.
func TestMigrateFromUnversioned(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hangar.db")
	old, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	schema, err := os.ReadFile("testdata/schema-unversioned.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		string(schema),
		`INSERT INTO apps (name, repo, next_number, created_at) VALUES ('a', '/r', 2, 1000)`,
		`INSERT INTO builds (app_id, number, workflow, workflow_name, branch, commit_sha, status, trigger, max_duration, created_at, ssh_enabled, cancel_requested)
			VALUES (1, 1, 'w', 'W', 'main', 'c', 'building', 'manual', 60, 1000, 1, 1)`,
		`INSERT INTO log_chunks (build_id, first, last, step, time, data) VALUES (1, 1, 2, 0, 1000, CAST('one' || char(10) || 'two' || char(10) AS BLOB))`,
		`INSERT INTO tokens (hash, name, admin, created_at) VALUES ('h', 'admin', 1, 1000)`,
	} {
		if _, err := old.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	old.Close()
	s, err := OpenSQLite(path)
	s = opened(t, s, err)
	var version int
	if err := s.db.QueryRow(`SELECT max(version) FROM schema_migrations`).Scan(&version); err != nil || version != migrations[len(migrations)-1].version {
		t.Errorf("schema version %d, %v; want %d", version, err, migrations[len(migrations)-1].version)
	}
	b, err := s.Build(ctx, 1)
	if err != nil || b.Status != build.Building || !b.SSH.Enabled || b.App != "a" {
		t.Fatalf("the old build: %+v, %v", b, err)
	}
	if ids, err := s.CancelRequests(ctx); err != nil || len(ids) != 1 || ids[0] != 1 {
		t.Errorf("the old cancel request: %v %v", ids, err)
	}
	if lines, err := s.Logs(ctx, 1, 0, 10); err != nil || len(lines) != 2 || lines[1].Text != "two" {
		t.Errorf("the old log: %+v %v", lines, err)
	}
	if tok, err := s.TokenByHash(ctx, "h"); err != nil || !tok.Admin || tok.NoSSH {
		t.Errorf("the old token: %+v %v", tok, err)
	}
	// The old SSH build has no URL nonce: no one-line URL is valid for it.
	if _, err := s.URLNonce(ctx, 1); !errors.Is(err, ErrNotFound) {
		t.Errorf("the old build's URL nonce: %v, want ErrNotFound", err)
	}
	next := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}}
	if err := s.CreateBuild(ctx, next, nil); err != nil || next.Number != 2 || next.ID != 2 {
		t.Errorf("a new build: number %d id %d, %v", next.Number, next.ID, err)
	}
}

// TestURLNonce: an SSH build gets a nonce of its own at creation, which
// DestroySSHKey erases; a build without SSH has none. Tokens keep NoSSH.
func TestURLNonce(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		first := newBuild(t, s, build.Queued) // app "a"
		if _, err := s.URLNonce(ctx, first.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("a build without SSH: %v", err)
		}
		mk := func() *build.Build {
			b := &build.Build{App: "a", Workflow: "w", Status: build.Queued, Trigger: build.Manual, MaxDuration: 60,
				Steps: []build.Step{}, SSH: build.SSH{Enabled: true, State: build.SSHPending}}
			if err := s.CreateBuild(ctx, b, nil); err != nil {
				t.Fatal(err)
			}
			return b
		}
		a, b := mk(), mk()
		na, err := s.URLNonce(ctx, a.ID)
		if err != nil || len(na) != urlNonceSize {
			t.Fatalf("nonce of %d: %x %v", a.ID, na, err)
		}
		if nb, err := s.URLNonce(ctx, b.ID); err != nil || bytes.Equal(na, nb) {
			t.Errorf("two builds' nonces: %x %x %v", na, nb, err)
		}
		if err := s.DestroySSHKey(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.URLNonce(ctx, a.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("after DestroySSHKey: %v", err)
		}
		if _, err := s.URLNonce(ctx, 9999); !errors.Is(err, ErrNotFound) {
			t.Errorf("an unknown build: %v", err)
		}
		if err := s.AddToken(ctx, "h", Token{Name: "dash", Apps: []string{"a"}, NoSSH: true}); err != nil {
			t.Fatal(err)
		}
		if tok, err := s.TokenByHash(ctx, "h"); err != nil || !tok.NoSSH {
			t.Errorf("token: %+v %v", tok, err)
		}
	})
}
