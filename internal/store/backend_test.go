package store

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hangar-ci/hangar/internal/build"
	"github.com/hangar-ci/hangar/internal/store/pgtest"
)

// TestClaimConcurrent: claimers on two Stores of one database (as two
// runner processes would be) claim every queued build exactly once.
func TestClaimConcurrent(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		stores := []*Store{db.open(t), db.open(t)}
		const builds, claimers = 40, 8
		for i := 0; i < builds; i++ {
			if i == 0 {
				newBuild(t, stores[0], build.Queued)
				continue
			}
			b := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}}
			if err := stores[0].CreateBuild(ctx, b, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
		var mu sync.Mutex
		claims := map[int64]int{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := 0; i < claimers; i++ {
			wg.Add(1)
			go func(s *Store) {
				defer wg.Done()
				<-start
				for {
					b, _, err := s.ClaimBuild(ctx)
					if errors.Is(err, ErrNotFound) {
						return
					}
					if err != nil {
						t.Errorf("claim: %v", err)
						return
					}
					if b.Status != build.Preparing {
						t.Errorf("claimed build %d is %s", b.ID, b.Status)
					}
					mu.Lock()
					claims[b.ID]++
					mu.Unlock()
				}
			}(stores[i%2])
		}
		close(start)
		wg.Wait()
		if len(claims) != builds {
			t.Errorf("%d builds claimed, want %d", len(claims), builds)
		}
		for id, n := range claims {
			if n != 1 {
				t.Errorf("build %d claimed %d times", id, n)
			}
		}
		list, err := stores[1].Builds(ctx, "a", 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range list {
			if b.Status != build.Preparing {
				t.Errorf("build %d left %s", b.ID, b.Status)
			}
		}
	})
}

// TestNotifyAcrossStores: on PostgreSQL a Store's subscribers wake for
// the changes another Store (another process) or any other client makes,
// not twice for its own, and again after its listening connection is cut.
func TestNotifyAcrossStores(t *testing.T) {
	ctx := context.Background()
	url := pgtest.DB(t)
	a, err := OpenPostgres(ctx, url)
	a = opened(t, a, err)
	b, err := OpenPostgres(ctx, url)
	b = opened(t, b, err)

	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("no wake-up within 30 s: %s", what)
		}
	}
	anyB, unsub := b.Subscribe(0)
	defer unsub()
	first := newBuild(t, a, build.Queued)
	wait(anyB, "a build created by the other store")
	firstB, unsub := b.Subscribe(first.ID)
	defer unsub()

	first.Status = build.Building
	if _, err := a.UpdateBuild(ctx, first); err != nil {
		t.Fatal(err)
	}
	wait(firstB, "a build updated by the other store")
	if err := a.AppendLog(ctx, first.ID, []build.LogChunk{{Seq: 1, Lines: 1, Time: time.Now(), Data: []byte("x\n")}}); err != nil {
		t.Fatal(err)
	}
	wait(firstB, "a log appended by the other store")
	if err := a.AddEvent(ctx, first.ID, build.Event{Kind: "k", Data: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	wait(firstB, "an event added by the other store")

	// Another client, with no origin.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE builds SET message = 'by hand' WHERE id = $1`, first.ID); err != nil {
		t.Fatal(err)
	}
	wait(firstB, "a build updated by another client")

	// Its own change wakes b's subscribers once, at once; its listener
	// skips the notification. Notifications arrive in commit order: once
	// the second build's has woken b, the first one's has been read.
	drain(firstB)
	second := &build.Build{App: "a", Status: build.Queued, Trigger: build.Manual, Steps: []build.Step{}}
	if err := a.CreateBuild(ctx, second, nil); err != nil {
		t.Fatal(err)
	}
	secondB, unsub := b.Subscribe(second.ID)
	defer unsub()
	first.Message = "by b itself"
	if _, err := b.UpdateBuild(ctx, first); err != nil {
		t.Fatal(err)
	}
	wait(firstB, "b's own change")
	second.Status = build.Building
	if _, err := a.UpdateBuild(ctx, second); err != nil {
		t.Fatal(err)
	}
	wait(secondB, "the second build updated by the other store")
	select {
	case <-firstB:
		t.Error("b's own change woke its subscriber twice")
	default:
	}

	// Cut b's listening connection: b connects again and wakes every
	// subscriber (changes in between went unseen), then hears again.
	drain(anyB)
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, int64(b.listenPID.Load())); err != nil {
		t.Fatal(err)
	}
	wait(anyB, "the listener's reconnection")
	wait(firstB, "the listener's reconnection")
	first.Message = "after the reconnection"
	if _, err := a.UpdateBuild(ctx, first); err != nil {
		t.Fatal(err)
	}
	wait(firstB, "a change after the listener reconnected")
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func TestMigrations(t *testing.T) {
	// Versions increase; a branch may leave gaps for the versions given
	// to other branches (they are made consecutive when merged).
	for i, m := range migrations {
		if i > 0 && m.version <= migrations[i-1].version {
			t.Errorf("migration %q has version %d, after %d: versions increase in order", m.name, m.version, migrations[i-1].version)
		}
	}
	last := migrations[len(migrations)-1].version
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		// PostgreSQL: servers racing to open a new database; one migrates
		// it. (SQLite: one server per data dir, and two connections
		// turning a new file to WAL at once may fail with SQLITE_BUSY.)
		stores := make([]*Store, 1)
		if db.postgres {
			stores = make([]*Store, 3)
		}
		var wg sync.WaitGroup
		for i := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if stores[i], err = db.tryOpen(); err != nil {
					t.Errorf("open at the same time as others: %v", err)
				}
			}()
		}
		wg.Wait()
		for _, s := range stores {
			if s != nil {
				opened(t, s, nil)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		s := stores[0]
		var n, max int
		if err := s.db.QueryRow(`SELECT count(*), max(version) FROM schema_migrations`).Scan(&n, &max); err != nil {
			t.Fatal(err)
		}
		if n != len(migrations) || max != last {
			t.Errorf("schema_migrations: %d rows up to version %d, want %d up to %d", n, max, len(migrations), last)
		}
		// A database a newer Hangar migrated is refused, saying why.
		if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (1000, 'from the future', 0)`); err != nil {
			t.Fatal(err)
		}
		newer, err := db.tryOpen()
		if err == nil {
			newer.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "version 1000, newer than this Hangar's") {
			t.Errorf("open a newer database: %v", err)
		}
	})
}

// TestPostgresErrors: a bad database URL or an unreachable server is
// reported without the URL's password.
func TestPostgresErrors(t *testing.T) {
	ctx := context.Background()
	for _, url := range []string{
		"postgres://hangar:s3cret-pw@/hangar?host=/nonexistent-dir&connect_timeout=5",
		"postgres://hangar:s3cret-pw@localhost:notaport/hangar",
	} {
		_, err := OpenPostgres(ctx, url)
		if err == nil || strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("open %s: %v", strings.ReplaceAll(url, "s3cret-pw", "***"), err)
		}
	}
	if _, err := Open(ctx, "mysql://hangar:s3cret-pw@db/hangar"); err == nil || strings.Contains(err.Error(), "s3cret-pw") || !strings.Contains(err.Error(), "want a PostgreSQL URL") {
		t.Errorf("open a MySQL URL: %v", err)
	}
}
