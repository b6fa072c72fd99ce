package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// artifactsSchema is the table of builds' artifacts (migration 13): the
// files themselves are on disk (internal/artifact), File names one.
const artifactsSchema = `
CREATE TABLE IF NOT EXISTS artifacts (
	build_id {{int}} NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
	name TEXT NOT NULL,
	file TEXT NOT NULL,
	size {{int}} NOT NULL,
	md5 TEXT NOT NULL,
	sha256 TEXT NOT NULL,
	created_at {{int}} NOT NULL,
	expires_at {{int}} NOT NULL,
	PRIMARY KEY (build_id, name)
);
CREATE INDEX IF NOT EXISTS artifacts_expires ON artifacts(expires_at);
`

// cachesSchema is the table of the apps' workflow caches (migration 14):
// one per app and workflow, its archive on disk.
const cachesSchema = `
CREATE TABLE IF NOT EXISTS caches (
	app_id {{int}} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
	workflow TEXT NOT NULL,
	file TEXT NOT NULL,
	size {{int}} NOT NULL,
	build_id {{int}} NOT NULL,
	created_at {{int}} NOT NULL,
	expires_at {{int}} NOT NULL,
	PRIMARY KEY (app_id, workflow)
);
CREATE INDEX IF NOT EXISTS caches_expires ON caches(expires_at);
`

// AddArtifact records artifact a of build id, kept on disk as file. A
// second artifact of the same name in a build is ErrExists.
func (s *Store) AddArtifact(ctx context.Context, id int64, a build.Artifact, file string) error {
	return s.AddArtifactWithin(ctx, id, a, file, 0)
}

// ErrFull is the error of an artifact that would take its build's
// artifacts past their bound.
var ErrFull = errors.New("the build's artifacts would pass their bound")

// AddArtifactWithin is AddArtifact, refused with ErrFull if the build's
// artifacts that have not expired would then take more than max bytes
// (0: no bound). Artifacts of a build added at once, through any server,
// are summed one after the other (the build's row is locked).
func (s *Store) AddArtifactWithin(ctx context.Context, id int64, a build.Artifact, file string, max int64) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("add artifact: %w", err)
	}
	defer tx.Rollback()
	if max > 0 {
		err := tx.QueryRowContext(ctx, `SELECT id FROM builds WHERE id = $1`+s.d.forUpdate, id).Scan(new(int64))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("add artifact: %w", err)
		}
		var total int64
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(sum(size), 0) FROM artifacts WHERE build_id = $1 AND expires_at > $2`,
			id, ms(time.Now())).Scan(&total); err != nil {
			return fmt.Errorf("add artifact: %w", err)
		}
		if total+a.Size > max {
			return ErrFull
		}
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO artifacts (build_id, name, file, size, md5, sha256, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (build_id, name) DO NOTHING`,
		id, a.Name, file, a.Size, a.MD5, a.SHA256, ms(a.CreatedAt), ms(a.ExpiresAt))
	if err != nil {
		if isForeignKey(err) {
			return ErrNotFound
		}
		return fmt.Errorf("add artifact: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrExists
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("add artifact: %w", err)
	}
	return nil
}

// isForeignKey reports whether err is a foreign key violation (the build
// or app is gone).
func isForeignKey(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "foreign key")
}

const artifactCols = `name, size, md5, sha256, created_at, expires_at`

func scanArtifact(row interface{ Scan(...any) error }, extra ...any) (build.Artifact, error) {
	var a build.Artifact
	var created, expires int64
	err := row.Scan(append([]any{&a.Name, &a.Size, &a.MD5, &a.SHA256, &created, &expires}, extra...)...)
	a.CreatedAt, a.ExpiresAt = time.UnixMilli(created).UTC(), time.UnixMilli(expires).UTC()
	return a, err
}

// Artifacts returns build id's artifacts that have not expired, by name.
func (s *Store) Artifacts(ctx context.Context, id int64) ([]build.Artifact, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+artifactCols+` FROM artifacts WHERE build_id = $1 AND expires_at > $2 ORDER BY name`,
		id, ms(time.Now()))
	if err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	defer rows.Close()
	out := []build.Artifact{}
	for rows.Next() {
		a, err := scanArtifact(rows)
		if err != nil {
			return nil, fmt.Errorf("artifacts: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Artifact returns build id's artifact name and its file, or ErrNotFound
// (also once it has expired).
func (s *Store) Artifact(ctx context.Context, id int64, name string) (build.Artifact, string, error) {
	var file string
	a, err := scanArtifact(s.db.QueryRowContext(ctx, `SELECT `+artifactCols+`, file FROM artifacts
		WHERE build_id = $1 AND name = $2 AND expires_at > $3`, id, name, ms(time.Now())), &file)
	if errors.Is(err, sql.ErrNoRows) {
		return a, "", ErrNotFound
	}
	if err != nil {
		return a, "", fmt.Errorf("artifact: %w", err)
	}
	return a, file, nil
}

// TakeExpiredArtifacts deletes the artifacts that expired at now and
// returns their files, for the caller to remove.
func (s *Store) TakeExpiredArtifacts(ctx context.Context, now time.Time) ([]string, error) {
	return s.takeFiles(ctx, `DELETE FROM artifacts WHERE expires_at <= $1 RETURNING file`, ms(now))
}

// ArtifactFiles returns every artifact's file (the sweep removes files that
// no row names: their build was deleted).
func (s *Store) ArtifactFiles(ctx context.Context) (map[string]bool, error) {
	return s.fileSet(ctx, `SELECT file FROM artifacts`)
}

// PutCache records c as app's cache of workflow, kept as file, replacing
// the one before; it returns the file of the one it replaced ("" if
// none).
func (s *Store) PutCache(ctx context.Context, c build.Cache, file string) (string, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("put cache: %w", err)
	}
	defer tx.Rollback()
	var appID int64
	if err := tx.QueryRowContext(ctx, `SELECT id FROM apps WHERE name = $1`, c.App).Scan(&appID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return "", ErrNotFound
		}
		return "", fmt.Errorf("put cache: %w", err)
	}
	var old string
	err = tx.QueryRowContext(ctx, `SELECT file FROM caches WHERE app_id = $1 AND workflow = $2`, appID, c.Workflow).Scan(&old)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("put cache: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO caches (app_id, workflow, file, size, build_id, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (app_id, workflow) DO UPDATE SET
		file = excluded.file, size = excluded.size, build_id = excluded.build_id,
		created_at = excluded.created_at, expires_at = excluded.expires_at`,
		appID, c.Workflow, file, c.Size, c.Build, ms(c.CreatedAt), ms(c.ExpiresAt)); err != nil {
		return "", fmt.Errorf("put cache: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("put cache: %w", err)
	}
	return old, nil
}

const cacheCols = `a.name, c.workflow, c.size, c.build_id, c.created_at, c.expires_at`

func scanCache(row interface{ Scan(...any) error }, extra ...any) (build.Cache, error) {
	var c build.Cache
	var created, expires int64
	err := row.Scan(append([]any{&c.App, &c.Workflow, &c.Size, &c.Build, &created, &expires}, extra...)...)
	c.CreatedAt, c.ExpiresAt = time.UnixMilli(created).UTC(), time.UnixMilli(expires).UTC()
	return c, err
}

// Cache returns app's cache of workflow and its file, or ErrNotFound
// (also once it has expired).
func (s *Store) Cache(ctx context.Context, app, workflow string) (build.Cache, string, error) {
	var file string
	c, err := scanCache(s.db.QueryRowContext(ctx, `SELECT `+cacheCols+`, c.file FROM caches c JOIN apps a ON a.id = c.app_id
		WHERE a.name = $1 AND c.workflow = $2 AND c.expires_at > $3`, app, workflow, ms(time.Now())), &file)
	if errors.Is(err, sql.ErrNoRows) {
		return c, "", ErrNotFound
	}
	if err != nil {
		return c, "", fmt.Errorf("cache: %w", err)
	}
	return c, file, nil
}

// Caches returns the caches of app ("": of every app) that have not
// expired, by app and workflow.
func (s *Store) Caches(ctx context.Context, app string) ([]build.Cache, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+cacheCols+` FROM caches c JOIN apps a ON a.id = c.app_id
		WHERE ($1 = '' OR a.name = $1) AND c.expires_at > $2 ORDER BY a.name, c.workflow`, app, ms(time.Now()))
	if err != nil {
		return nil, fmt.Errorf("caches: %w", err)
	}
	defer rows.Close()
	out := []build.Cache{}
	for rows.Next() {
		c, err := scanCache(rows)
		if err != nil {
			return nil, fmt.Errorf("caches: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// DeleteCaches deletes app's cache of workflow ("": all of app's) and
// returns their files, for the caller to remove.
func (s *Store) DeleteCaches(ctx context.Context, app, workflow string) ([]string, error) {
	return s.takeFiles(ctx, `DELETE FROM caches WHERE app_id = (SELECT id FROM apps WHERE name = $1)
		AND ($2 = '' OR workflow = $2) RETURNING file`, app, workflow)
}

// TakeExpiredCaches deletes the caches that expired at now and returns
// their files.
func (s *Store) TakeExpiredCaches(ctx context.Context, now time.Time) ([]string, error) {
	return s.takeFiles(ctx, `DELETE FROM caches WHERE expires_at <= $1 RETURNING file`, ms(now))
}

// CacheFiles returns every cache's file.
func (s *Store) CacheFiles(ctx context.Context) (map[string]bool, error) {
	return s.fileSet(ctx, `SELECT file FROM caches`)
}

// takeFiles runs a DELETE ... RETURNING file.
func (s *Store) takeFiles(ctx context.Context, query string, args ...any) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("delete files: %w", err)
	}
	defer rows.Close()
	var files []string
	for rows.Next() {
		var f string
		if err := rows.Scan(&f); err != nil {
			return nil, fmt.Errorf("delete files: %w", err)
		}
		files = append(files, f)
	}
	return files, rows.Err()
}

func (s *Store) fileSet(ctx context.Context, query string) (map[string]bool, error) {
	rows, err := s.db.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("files: %w", err)
	}
	defer rows.Close()
	set := map[string]bool{}
	for rows.Next() {
		var f string
		if err := rows.Scan(&f); err != nil {
			return nil, fmt.Errorf("files: %w", err)
		}
		set[f] = true
	}
	return set, rows.Err()
}
