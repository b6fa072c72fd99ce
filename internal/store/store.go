// Package store persists apps, builds, their logs and API tokens, in
// SQLite (modernc.org/sqlite, pure Go; the embedded default, in the data
// directory) or PostgreSQL (pgx), with the same queries and versioned
// migrations (migrate.go). Writers notify subscribers so that live views
// (log streams, the runner's queue) wake up without polling: in-process
// at once, and on PostgreSQL also in every other process using the
// database (LISTEN/NOTIFY, postgres.go).
package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hangar-ci/hangar/internal/build"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// Errors callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
)

// App is a repository Hangar builds.
type App struct {
	ID            int64     `json:"id"`
	Name          string    `json:"name"`
	Repo          string    `json:"repo"`
	WebhookSecret string    `json:"-"`
	CreatedAt     time.Time `json:"created_at"`
	// RefuseUnsupported: a build of a workflow that uses keys Hangar does
	// not support (workflow.Report's Unsupported) is refused at start.
	RefuseUnsupported bool `json:"refuse_unsupported"`
}

// Token is an API token, stored by the hash of its secret only.
type Token struct {
	Name  string
	Admin bool
	Apps  []string // apps a non-admin token may use
	// NoSSH: the token may not have SSH access (keys, scripts, one-line
	// commands, terminals) to any build, on any driver.
	NoSSH bool
}

// Allows reports whether the token may use app.
func (t *Token) Allows(app string) bool {
	if t.Admin {
		return true
	}
	for _, a := range t.Apps {
		if a == app {
			return true
		}
	}
	return false
}

// Store is a database of apps, builds, logs and tokens.
type Store struct {
	db *sql.DB
	d  *dialect

	// PostgreSQL only: origin names this Store's writes in notifications
	// (see notifyTriggers); stopListening ends the listener and waits for
	// it; listenPID is the backend process of its connection (a test ends
	// it to see the listener recover).
	origin        string
	stopListening func()
	listenPID     atomic.Uint32

	mu   sync.Mutex
	subs map[int64]map[chan struct{}]bool // guarded by mu; key 0: every build
}

// OpenSQLite opens (creating if needed) the SQLite database at path.
func OpenSQLite(path string) (*Store, error) {
	q := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "journal_mode(WAL)", "foreign_keys(1)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	s, err := open(context.Background(), db, sqliteDialect)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	return s, nil
}

// Open opens the database named by a PostgreSQL URL
// (postgres://user:password@host/database?sslmode=...).
func Open(ctx context.Context, database string) (*Store, error) {
	if err := CheckURL(database); err != nil {
		return nil, err
	}
	return OpenPostgres(ctx, database)
}

// CheckURL says what is wrong with a database URL's form, without
// repeating it (it may hold a password).
func CheckURL(database string) error {
	if !strings.HasPrefix(database, "postgres://") && !strings.HasPrefix(database, "postgresql://") {
		return errors.New("database: want a PostgreSQL URL such as postgres://hangar@db.example.com/hangar (leave it out for SQLite in the data directory)")
	}
	return nil
}

// open migrates db and returns its Store; it closes db on error.
func open(ctx context.Context, db *sql.DB, d *dialect) (*Store, error) {
	db.SetMaxOpenConns(d.maxOpenConns)
	db.SetMaxIdleConns(d.maxOpenConns) // a PostgreSQL connection is a process: keep them
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := migrate(ctx, db, d); err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, d: d}, nil
}

// Close stops listening for other processes' changes and closes the
// database.
func (s *Store) Close() error {
	if s.stopListening != nil {
		s.stopListening()
		s.stopListening = nil
	}
	return s.db.Close()
}

// Subscribe returns a channel that receives a value after each change to
// build id (0: to any build). Notifications coalesce; re-read on wake.
func (s *Store) Subscribe(id int64) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	if s.subs == nil {
		s.subs = make(map[int64]map[chan struct{}]bool)
	}
	if s.subs[id] == nil {
		s.subs[id] = make(map[chan struct{}]bool)
	}
	s.subs[id][ch] = true
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.subs[id], ch)
		if len(s.subs[id]) == 0 {
			delete(s.subs, id)
		}
		s.mu.Unlock()
	}
}

func (s *Store) notify(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := []int64{id, 0}
	if id < 0 { // the gateways' keys: no build changed
		keys = keys[:1]
	}
	for _, key := range keys {
		for ch := range s.subs[key] {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := time.UnixMilli(v.Int64).UTC()
	return &t
}

func nullMS(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: ms(*t), Valid: true}
}

// CreateApp adds an app. A taken name gives ErrExists.
func (s *Store) CreateApp(ctx context.Context, a *App) error {
	a.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	err := s.db.QueryRowContext(ctx,
		`INSERT INTO apps (name, repo, webhook_secret, created_at, refuse_unsupported) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING RETURNING id`,
		a.Name, a.Repo, a.WebhookSecret, ms(a.CreatedAt), a.RefuseUnsupported).Scan(&a.ID)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrExists
	}
	if err != nil {
		return fmt.Errorf("create app: %w", err)
	}
	return nil
}

const appCols = `id, name, repo, webhook_secret, created_at, refuse_unsupported`

func scanApp(row interface{ Scan(...any) error }) (*App, error) {
	var a App
	var created int64
	if err := row.Scan(&a.ID, &a.Name, &a.Repo, &a.WebhookSecret, &created, &a.RefuseUnsupported); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, err
	}
	a.CreatedAt = time.UnixMilli(created).UTC()
	return &a, nil
}

// App returns the app called name.
func (s *Store) App(ctx context.Context, name string) (*App, error) {
	return scanApp(s.db.QueryRowContext(ctx, `SELECT `+appCols+` FROM apps WHERE name = $1`, name))
}

// Apps lists every app by name.
func (s *Store) Apps(ctx context.Context) ([]*App, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+appCols+` FROM apps ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	apps := []*App{}
	for rows.Next() {
		a, err := scanApp(rows)
		if err != nil {
			return nil, err
		}
		apps = append(apps, a)
	}
	return apps, rows.Err()
}

// SetRefuseUnsupported changes app name's RefuseUnsupported setting.
func (s *Store) SetRefuseUnsupported(ctx context.Context, name string, refuse bool) error {
	res, err := s.db.ExecContext(ctx, `UPDATE apps SET refuse_unsupported = $2 WHERE name = $1`, name, refuse)
	if err != nil {
		return fmt.Errorf("set refuse_unsupported: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteApp removes an app with its builds and logs.
func (s *Store) DeleteApp(ctx context.Context, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM apps WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete app: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// AddToken stores a token by the hash of its secret.
func (s *Store) AddToken(ctx context.Context, hash string, t Token) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO tokens (hash, name, admin, apps, created_at, no_ssh) VALUES ($1, $2, $3, $4, $5, $6)`,
		hash, t.Name, t.Admin, strings.Join(t.Apps, ","), ms(time.Now()), t.NoSSH)
	return err
}

// TokenByHash finds a token by the hash of its secret.
func (s *Store) TokenByHash(ctx context.Context, hash string) (*Token, error) {
	var t Token
	var apps string
	err := s.db.QueryRowContext(ctx, `SELECT name, admin, apps, no_ssh FROM tokens WHERE hash = $1`, hash).Scan(&t.Name, &t.Admin, &apps, &t.NoSSH)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if apps != "" {
		t.Apps = strings.Split(apps, ",")
	}
	return &t, err
}

// HasTokens reports whether any token exists.
func (s *Store) HasTokens(ctx context.Context) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM tokens`).Scan(&n)
	return n > 0, err
}

// DeleteTokens removes every token named name.
func (s *Store) DeleteTokens(ctx context.Context, name string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM tokens WHERE name = $1`, name)
	return err
}

// CreateBuild stores b with its spec (an opaque document for the runner),
// assigning b.ID and the app's next build number.
func (s *Store) CreateBuild(ctx context.Context, b *build.Build, spec []byte) error {
	steps, err := json.Marshal(b.Steps)
	if err != nil {
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create build: %w", err)
	}
	defer tx.Rollback()
	var appID int64
	err = tx.QueryRowContext(ctx, `UPDATE apps SET next_number = next_number + 1 WHERE name = $1 RETURNING id, next_number - 1`, b.App).Scan(&appID, &b.Number)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("create build: %w", err)
	}
	b.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	var nonce []byte
	if b.SSH.Enabled {
		nonce = make([]byte, urlNonceSize)
		_, _ = rand.Read(nonce)
	}
	err = tx.QueryRowContext(ctx, `INSERT INTO builds (app_id, number, workflow, workflow_name, branch, commit_sha, status, trigger,
		started_by, message, max_duration, spec, steps, created_at, started_at, finished_at, ssh_enabled, ssh_state, rerun_of, ssh_url_nonce,
		ssh_on_failure)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) RETURNING id`,
		appID, b.Number, b.Workflow, b.WorkflowName, b.Branch, b.Commit, b.Status, b.Trigger,
		b.StartedBy, b.Message, b.MaxDuration, string(spec), string(steps), ms(b.CreatedAt), nullMS(b.StartedAt), nullMS(b.FinishedAt),
		b.SSH.Enabled, b.SSH.State, b.RerunOf, nonce, b.SSH.Mode == build.SSHOnFailure).Scan(&b.ID)
	if err != nil {
		return fmt.Errorf("create build: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create build: %w", err)
	}
	s.notify(b.ID)
	if b.Status == build.Queued {
		s.notify(QueueChanges)
	}
	return nil
}

const buildCols = `b.id, a.name, b.number, b.workflow, b.workflow_name, b.branch, b.commit_sha, b.status, b.trigger,
	b.started_by, b.message, b.max_duration, b.steps, b.created_at, b.started_at, b.finished_at,
	b.ssh_enabled, b.ssh_state, b.ssh_expires_at, b.ssh_expires_because, b.ssh_closed_reason, b.ssh_connections, b.ssh_sessions, b.rerun_of,
	b.ssh_on_failure`

func scanBuild(row interface{ Scan(...any) error }) (*build.Build, error) {
	var b build.Build
	var steps, sessions string
	var created int64
	var started, finished, sshExpires, rerunOf sql.NullInt64
	var onFailure bool
	err := row.Scan(&b.ID, &b.App, &b.Number, &b.Workflow, &b.WorkflowName, &b.Branch, &b.Commit, &b.Status, &b.Trigger,
		&b.StartedBy, &b.Message, &b.MaxDuration, &steps, &created, &started, &finished,
		&b.SSH.Enabled, &b.SSH.State, &sshExpires, &b.SSH.ExpiresBecause, &b.SSH.ClosedReason, &b.SSH.Connections, &sessions, &rerunOf,
		&onFailure)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(steps), &b.Steps); err != nil {
		return nil, fmt.Errorf("build %d: bad steps: %w", b.ID, err)
	}
	if err := json.Unmarshal([]byte(sessions), &b.SSH.Sessions); err != nil {
		return nil, fmt.Errorf("build %d: bad sessions: %w", b.ID, err)
	}
	if b.SSH.Sessions == nil {
		b.SSH.Sessions = []build.SSHSession{}
	}
	b.CreatedAt = time.UnixMilli(created).UTC()
	b.StartedAt, b.FinishedAt, b.SSH.ExpiresAt = fromMS(started), fromMS(finished), fromMS(sshExpires)
	if rerunOf.Valid {
		b.RerunOf = &rerunOf.Int64
	}
	switch {
	case onFailure:
		b.SSH.Mode = build.SSHOnFailure
	case b.SSH.Enabled:
		b.SSH.Mode = build.SSHAlways
	}
	return &b, nil
}

// Build returns build id, with its reruns.
func (s *Store) Build(ctx context.Context, id int64) (*build.Build, error) {
	b, err := scanBuild(s.db.QueryRowContext(ctx, `SELECT `+buildCols+` FROM builds b JOIN apps a ON a.id = b.app_id WHERE b.id = $1`, id))
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM builds WHERE rerun_of = $1 ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r int64
		if err := rows.Scan(&r); err != nil {
			return nil, err
		}
		b.Reruns = append(b.Reruns, r)
	}
	return b, rows.Err()
}

// BuildSpec returns the spec stored with build id.
func (s *Store) BuildSpec(ctx context.Context, id int64) ([]byte, error) {
	var spec string
	err := s.db.QueryRowContext(ctx, `SELECT spec FROM builds WHERE id = $1`, id).Scan(&spec)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(spec), err
}

// Builds lists the newest builds, of one app if app is not empty.
func (s *Store) Builds(ctx context.Context, app string, limit int) ([]*build.Build, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+buildCols+` FROM builds b JOIN apps a ON a.id = b.app_id
		WHERE $1 = '' OR a.name = $1 ORDER BY b.id DESC LIMIT $2`, app, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	list := []*build.Build{}
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, b)
	}
	return list, rows.Err()
}

// ActiveBuilds counts builds of app that have not ended.
func (s *Store) ActiveBuilds(ctx context.Context, app string) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM builds b JOIN apps a ON a.id = b.app_id
		WHERE a.name = $1 AND b.status IN ('queued', 'preparing', 'building')`, app).Scan(&n)
	return n, err
}

// ClaimBuild moves the oldest queued build to preparing and returns it with
// its spec, or ErrNotFound when none is queued. Each build is claimed
// once, however many claimers (goroutines, processes) there are: SQLite
// runs one writer at a time; on PostgreSQL a claimer skips the rows that
// others are claiming rather than waiting for them.
func (s *Store) ClaimBuild(ctx context.Context) (*build.Build, []byte, error) {
	return s.ClaimBuildFor(ctx, Claim{})
}

// UpdateBuild writes b's status, message, steps and times. It never changes
// a build that has already ended, and reports whether it wrote.
func (s *Store) UpdateBuild(ctx context.Context, b *build.Build) (bool, error) {
	steps, err := json.Marshal(b.Steps)
	if err != nil {
		return false, err
	}
	sessions := b.SSH.Sessions
	if sessions == nil {
		sessions = []build.SSHSession{}
	}
	sess, err := json.Marshal(sessions)
	if err != nil {
		return false, err
	}
	res, err := s.db.ExecContext(ctx, `UPDATE builds SET status = $1, message = $2, steps = $3, started_at = $4, finished_at = $5,
		ssh_state = $6, ssh_expires_at = $7, ssh_expires_because = $8, ssh_closed_reason = $9, ssh_connections = $10, ssh_sessions = $11,
		ssh_enabled = $12
		WHERE id = $13 AND status NOT IN ('finished', 'failed', 'canceled', 'timeout')`,
		b.Status, b.Message, string(steps), nullMS(b.StartedAt), nullMS(b.FinishedAt),
		b.SSH.State, nullMS(b.SSH.ExpiresAt), b.SSH.ExpiresBecause, b.SSH.ClosedReason, b.SSH.Connections, string(sess), b.SSH.Enabled, b.ID)
	if err != nil {
		return false, fmt.Errorf("update build %d: %w", b.ID, err)
	}
	n, _ := res.RowsAffected()
	s.notify(b.ID)
	return n > 0, nil
}

// CancelBuild cancels build id in one statement: a queued build ends
// canceled at once, with message; a build a runner has claimed (preparing,
// building) is marked for its runner, which sees the mark through
// CancelRequests and ends the build itself (only a runner writes a running
// build). It reports false when the build had already ended, and ErrNotFound
// for no such build.
func (s *Store) CancelBuild(ctx context.Context, id int64, message string) (bool, error) {
	var st string
	err := s.db.QueryRowContext(ctx, `UPDATE builds SET
		status = CASE status WHEN 'queued' THEN 'canceled' ELSE status END,
		message = CASE status WHEN 'queued' THEN $1 ELSE message END,
		finished_at = CASE status WHEN 'queued' THEN $2 ELSE finished_at END,
		ssh_state = CASE WHEN status <> 'queued' THEN ssh_state WHEN ssh_enabled THEN 'closed' ELSE '' END,
		cancel_requested = CASE WHEN status IN ('preparing', 'building') THEN TRUE ELSE cancel_requested END
		WHERE id = $3 AND status IN ('queued', 'preparing', 'building')
		RETURNING status`, message, ms(time.Now()), id).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := s.BuildSpec(ctx, id); err != nil {
			return false, err
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("cancel build %d: %w", id, err)
	}
	s.notify(id)
	s.notify(QueueChanges)
	return true, nil
}

// CancelRequests returns the builds that have a cancel request and have
// not ended, oldest first.
func (s *Store) CancelRequests(ctx context.Context) ([]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM builds WHERE status IN ('preparing', 'building') AND cancel_requested = TRUE ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("cancel requests: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("cancel requests: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// FailInterrupted ends the builds a previous server left preparing or
// building (it stopped without ending them: a crash or SIGKILL): each
// becomes failed with message, its running step failed and its pending
// steps skipped, and its log gets a last line "hangar: <message>". Their
// SSH keys are erased. Call it only while no runner works on the store.
func (s *Store) FailInterrupted(ctx context.Context, message string) (int64, error) {
	ids, err := s.failBuilds(ctx, `TRUE`, nil, message)
	if err != nil {
		return 0, err
	}
	// The SSH keys and one-line URLs of every ended build go.
	if _, err := s.db.ExecContext(ctx, `UPDATE build_ssh SET private_key = NULL WHERE build_id IN
		(SELECT id FROM builds WHERE status IN ('finished', 'failed', 'canceled', 'timeout'))`); err != nil {
		return 0, err
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE builds SET ssh_url_nonce = NULL
		WHERE ssh_url_nonce IS NOT NULL AND status IN ('finished', 'failed', 'canceled', 'timeout')`); err != nil {
		return 0, err
	}
	return int64(len(ids)), nil
}

// endSteps ends the unfinished steps of an interrupted build at now: a
// running one failed, pending ones skipped. It returns the index of the
// last step that started (where the build's last log line belongs).
func endSteps(steps []build.Step, now time.Time) int {
	last := 0
	for i := range steps {
		switch steps[i].Status {
		case build.StepRunning:
			steps[i].Status = build.StepFailed
			steps[i].FinishedAt = &now
			if st := steps[i].StartedAt; st != nil {
				d := now.Sub(*st).Milliseconds()
				steps[i].DurationMS = &d
			}
		case build.StepPending:
			steps[i].Status = build.StepSkipped
		}
		if steps[i].Status != build.StepSkipped {
			last = i
		}
	}
	return last
}

// AppendLog stores chunks of build id's log. Line numbers are the
// caller's and follow on from the chunks stored before; a chunk whose
// first line is stored already is skipped.
func (s *Store) AppendLog(ctx context.Context, id int64, chunks []build.LogChunk) error {
	if len(chunks) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append log: %w", err)
	}
	defer tx.Rollback()
	// A chunk written again (a retry after an error) changes nothing.
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO log_chunks (build_id, first, last, step, time, data, encoding) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (build_id, first) DO NOTHING`)
	if err != nil {
		return fmt.Errorf("append log: %w", err)
	}
	defer stmt.Close()
	for _, c := range chunks {
		if c.Lines < 1 {
			continue
		}
		data, enc := c.Data, c.Encoding
		switch enc {
		case "":
			data, enc = encodeChunk(c.Data)
		case encodingS2:
			// Encoded already (by the builder), checked by the runner.
		default:
			return fmt.Errorf("append log: chunk at line %d: unknown encoding %q", c.Seq, enc)
		}
		if _, err := stmt.ExecContext(ctx, id, c.Seq, c.Seq+int64(c.Lines)-1, c.Step, ms(c.Time), data, enc); err != nil {
			return fmt.Errorf("append log: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append log: %w", err)
	}
	s.notify(id)
	return nil
}

// Logs returns up to limit lines of build id after line seq.
func (s *Store) Logs(ctx context.Context, id, after int64, limit int) ([]build.LogLine, error) {
	lines := []build.LogLine{}
	for len(lines) < limit {
		// The chunk holding line after+1 starts at the greatest first not
		// past it: start the range there (the primary key's order), not at
		// the build's first chunk.
		rows, err := s.db.QueryContext(ctx, `SELECT first, step, time, data, encoding FROM log_chunks
			WHERE build_id = $1 AND last > $2 AND first >= coalesce((SELECT max(first) FROM log_chunks WHERE build_id = $1 AND first <= $2 + 1), 0)
			ORDER BY first LIMIT 16`, id, after)
		if err != nil {
			return nil, err
		}
		got := 0
		for rows.Next() && len(lines) < limit {
			got++
			var first, t int64
			var step int
			var data []byte
			var enc string
			if err := rows.Scan(&first, &step, &t, &data, &enc); err != nil {
				rows.Close()
				return nil, err
			}
			if data, err = decodeChunk(data, enc); err != nil {
				rows.Close()
				return nil, fmt.Errorf("build %d: log chunk at line %d: %w", id, first, err)
			}
			tm := time.UnixMilli(t).UTC()
			seq := first
			for len(data) > 0 && len(lines) < limit {
				line := data
				if i := bytes.IndexByte(data, '\n'); i >= 0 {
					line, data = data[:i], data[i+1:]
				} else {
					data = nil
				}
				if seq > after {
					lines = append(lines, build.LogLine{Seq: seq, Step: step, Time: tm, Text: string(line)})
					after = seq
				}
				seq++
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
		if got == 0 {
			break
		}
	}
	return lines, nil
}

// BuildSSH is the stored credential of an SSH build.
type BuildSSH struct {
	PrivateKey  []byte // sealed; nil once the build has ended
	Certificate string // authorized_keys format
	PublicKey   string // authorized_keys format
	HostKey     string // the builder's host public key, authorized_keys format
}

// PutBuildSSH stores build id's credential.
func (s *Store) PutBuildSSH(ctx context.Context, id int64, c *BuildSSH) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO build_ssh (build_id, private_key, certificate, public_key, host_key) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (build_id) DO UPDATE SET private_key = $2, certificate = $3, public_key = $4, host_key = $5`,
		id, c.PrivateKey, c.Certificate, c.PublicKey, c.HostKey)
	return err
}

// GetBuildSSH returns build id's credential, or ErrNotFound.
func (s *Store) GetBuildSSH(ctx context.Context, id int64) (*BuildSSH, error) {
	var c BuildSSH
	err := s.db.QueryRowContext(ctx, `SELECT private_key, certificate, public_key, host_key FROM build_ssh WHERE build_id = $1`, id).
		Scan(&c.PrivateKey, &c.Certificate, &c.PublicKey, &c.HostKey)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &c, err
}

// DestroySSHKey erases build id's private key and the nonce of its
// one-line URL (see URLNonce): no URL of the build is valid from then on.
func (s *Store) DestroySSHKey(ctx context.Context, id int64) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE build_ssh SET private_key = NULL WHERE build_id = $1`, id); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `UPDATE builds SET ssh_url_nonce = NULL WHERE id = $1`, id)
	return err
}

// urlNonceSize is the size of a build's URL nonce in bytes.
const urlNonceSize = 32

// URLNonce returns the random secret that CreateBuild gave SSH build id, to
// which the server binds the build's one-line URLs: a URL of another build,
// or of a build of the same id in another database, never matches it. It
// returns ErrNotFound for an unknown build, one without SSH, or one whose
// SSH access has ended (DestroySSHKey).
func (s *Store) URLNonce(ctx context.Context, id int64) ([]byte, error) {
	var nonce []byte
	err := s.db.QueryRowContext(ctx, `SELECT ssh_url_nonce FROM builds WHERE id = $1`, id).Scan(&nonce)
	if errors.Is(err, sql.ErrNoRows) || err == nil && len(nonce) == 0 {
		return nil, ErrNotFound
	}
	return nonce, err
}

// AddEvent records an event of build id.
func (s *Store) AddEvent(ctx context.Context, id int64, ev build.Event) error {
	data, err := json.Marshal(ev.Data)
	if err != nil {
		return err
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO build_events (build_id, time, kind, data) VALUES ($1, $2, $3, $4)`, id, ms(ev.Time), ev.Kind, string(data))
	if err == nil {
		s.notify(id)
	}
	return err
}

// Events returns build id's events in order.
func (s *Store) Events(ctx context.Context, id int64) ([]build.Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT time, kind, data FROM build_events WHERE build_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	evs := []build.Event{}
	for rows.Next() {
		var ev build.Event
		var t int64
		var data string
		if err := rows.Scan(&t, &ev.Kind, &data); err != nil {
			return nil, err
		}
		ev.Time = time.UnixMilli(t).UTC()
		if err := json.Unmarshal([]byte(data), &ev.Data); err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
	return evs, rows.Err()
}
