package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// Runners: every process that runs builds has a row in runners, its
// identity. A server's own runner is named after the server's data dir and
// host; a runner on another host (`hangar runner`) is created with a token
// (`hangar runner token create`), which it authenticates with. A runner
// claims builds for itself (builds.runner_id), proves it is alive with
// heartbeats (last_seen), and at start fails only its own builds that an
// earlier run of it left running. Any server sweeps: the builds of a runner
// silent for longer than the stale bound fail, with a message naming it.

// QueueChanges wakes its subscribers when a build is queued, or a running
// build is asked to cancel, in any process (on PostgreSQL, queueNotify):
// what runners wait for, without waking at every change of every build.
const QueueChanges int64 = -4

// queueNotify (migration 21) notifies QueueChanges to other processes.
const queueNotify = `
CREATE TRIGGER builds_queue_notify AFTER INSERT OR UPDATE OF status, cancel_requested ON builds
	FOR EACH ROW WHEN (NEW.status = 'queued' OR NEW.cancel_requested) EXECUTE FUNCTION hangar_notify_gateways('-4');
`

// runnersSchema is migration 15.
const runnersSchema = `
CREATE TABLE IF NOT EXISTS runners (
	id {{serial}},
	name TEXT NOT NULL UNIQUE,
	-- The hash of a remote runner's token; NULL for a server's own runner
	-- and for a revoked one.
	token_hash TEXT UNIQUE,
	server {{bool}} NOT NULL DEFAULT FALSE,
	host TEXT NOT NULL DEFAULT '',
	labels TEXT NOT NULL DEFAULT '',
	capacity {{int}} NOT NULL DEFAULT 0,
	driver TEXT NOT NULL DEFAULT '',
	ssh {{bool}} NOT NULL DEFAULT FALSE,
	-- A random value per process run: a second process with the same
	-- identity is refused, and the first learns it was replaced.
	session TEXT NOT NULL DEFAULT '',
	started_at {{int}},
	last_seen {{int}},
	revoked_at {{int}},
	created_at {{int}} NOT NULL
);
`

// Runner is a runner's identity and what it last reported.
type Runner struct {
	ID     int64    `json:"id"`
	Name   string   `json:"name"`
	Server bool     `json:"server"` // a server's own runner (no token)
	Host   string   `json:"host"`
	Labels []string `json:"labels"` // the instance types it runs; none: every one
	// Capacity is how many builds it runs at once.
	Capacity  int        `json:"capacity"`
	Driver    string     `json:"driver"`
	SSH       bool       `json:"ssh"` // it runs SSH builds
	StartedAt *time.Time `json:"started_at"`
	LastSeen  *time.Time `json:"last_seen"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	// Running is how many of its builds have not ended.
	Running int `json:"running"`
	// Session is the session of the process that started as it last.
	Session string `json:"-"`
}

// RunnerInfo is what a runner reports of itself when it starts.
type RunnerInfo struct {
	Host     string
	Labels   []string
	Capacity int
	Driver   string
	SSH      bool
}

// RunnerInUseError is StartRunner's refusal: another process runs as the
// runner, on another host, and was seen lately.
type RunnerInUseError struct {
	Name, Host string
	LastSeen   time.Time
}

func (e *RunnerInUseError) Error() string {
	return fmt.Sprintf("runner %s is in use by a process on host %s (last seen %s): one process per runner; stop that one, or wait until it has been silent for the stale bound if it is gone",
		e.Name, e.Host, e.LastSeen.UTC().Format(time.RFC3339))
}

// ErrReplaced is RunnerHeartbeat's answer to a process whose runner
// identity another process has taken, or that was revoked: it must stop.
var ErrReplaced = errors.New("this runner was revoked, or another process started as it")

// nowMS is the database's clock in milliseconds: heartbeats and sweeps of
// processes on several hosts compare times of one clock.
func (d *dialect) nowMS() string {
	if d == postgresDialect {
		return `(extract(epoch from clock_timestamp()) * 1000)::bigint`
	}
	return `CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`
}

const runnerCols = `r.id, r.name, r.server, r.host, r.labels, r.capacity, r.driver, r.ssh, r.started_at, r.last_seen, r.revoked_at, r.created_at, r.session,
	(SELECT count(*) FROM builds b WHERE b.runner_id = r.id AND b.status IN ('preparing', 'building'))`

func scanRunner(row interface{ Scan(...any) error }) (*Runner, error) {
	var r Runner
	var labels string
	var started, seen, revoked sql.NullInt64
	var created int64
	err := row.Scan(&r.ID, &r.Name, &r.Server, &r.Host, &labels, &r.Capacity, &r.Driver, &r.SSH, &started, &seen, &revoked, &created, &r.Session, &r.Running)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	r.Labels = splitLabels(labels)
	r.StartedAt, r.LastSeen, r.RevokedAt = fromMS(started), fromMS(seen), fromMS(revoked)
	r.CreatedAt = time.UnixMilli(created).UTC()
	return &r, nil
}

func splitLabels(s string) []string {
	out := []string{}
	for _, l := range strings.Split(s, ",") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// CreateRunner adds a remote runner called name that authenticates with
// the token of hash tokenHash. A name in use by a runner that is not
// revoked gives ErrExists; a revoked runner's name is taken over (with its
// history of builds).
func (s *Store) CreateRunner(ctx context.Context, name, tokenHash string) (*Runner, error) {
	now := ms(time.Now())
	res, err := s.db.ExecContext(ctx, `UPDATE runners SET token_hash = $1, revoked_at = NULL, session = '', created_at = $2
		WHERE name = $3 AND revoked_at IS NOT NULL AND NOT server`, tokenHash, now, name)
	if err != nil {
		return nil, fmt.Errorf("create runner: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		_, err = s.db.ExecContext(ctx, `INSERT INTO runners (name, token_hash, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO NOTHING`, name, tokenHash, now)
		if err != nil {
			return nil, fmt.Errorf("create runner: %w", err)
		}
	}
	r, err := s.RunnerByToken(ctx, tokenHash)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrExists
	}
	return r, err
}

// RunnerByToken finds the runner, not revoked, whose token has hash hash.
func (s *Store) RunnerByToken(ctx context.Context, hash string) (*Runner, error) {
	return scanRunner(s.db.QueryRowContext(ctx, `SELECT `+runnerCols+` FROM runners r WHERE r.token_hash = $1`, hash))
}

// Runners lists every runner, by name.
func (s *Store) Runners(ctx context.Context) ([]*Runner, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+runnerCols+` FROM runners r ORDER BY r.name`)
	if err != nil {
		return nil, fmt.Errorf("list runners: %w", err)
	}
	defer rows.Close()
	list := []*Runner{}
	for rows.Next() {
		r, err := scanRunner(rows)
		if err != nil {
			return nil, err
		}
		list = append(list, r)
	}
	return list, rows.Err()
}

// RevokeRunner revokes remote runner name's token: it can no longer reach
// the server, and its builds that have not ended fail at once, with a
// message saying so. It returns ErrNotFound for no such runner (or a
// server's own, which has no token).
func (s *Store) RevokeRunner(ctx context.Context, name string) error {
	var id int64
	err := s.db.QueryRowContext(ctx, `UPDATE runners SET token_hash = NULL, revoked_at = coalesce(revoked_at, $1)
		WHERE name = $2 AND NOT server RETURNING id`, ms(time.Now()), name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("revoke runner %s: %w", name, err)
	}
	_, err = s.failBuilds(ctx, `runner_id = $1`, []any{id}, fmt.Sprintf("runner %s was revoked during the build", name))
	return err
}

// ServerRunner returns the id of the server's own runner called name,
// adding it on first use.
func (s *Store) ServerRunner(ctx context.Context, name string) (int64, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO runners (name, server, created_at) VALUES ($1, TRUE, $2)
		ON CONFLICT (name) DO UPDATE SET server = runners.server RETURNING id, server`, name, ms(time.Now())).Scan(&id, new(bool))
	if err != nil {
		return 0, fmt.Errorf("server runner %s: %w", name, err)
	}
	return id, nil
}

// StartRunner records that runner id started on info.Host, as the process
// of session (a random value of its own), and counts as its first
// heartbeat. It refuses with a *RunnerInUseError while another session on
// another host has been seen within staleAfter (on the same host, the
// caller's lock on its data dir shows the earlier process is gone).
func (s *Store) StartRunner(ctx context.Context, id int64, info RunnerInfo, session string, staleAfter time.Duration) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("start runner: %w", err)
	}
	defer tx.Rollback()
	var name, host, prev string
	var seen sql.NullInt64
	var fresh bool
	err = tx.QueryRowContext(ctx, `SELECT name, host, session, last_seen, coalesce(last_seen > `+s.d.nowMS()+` - $1, FALSE)
		FROM runners WHERE id = $2`+s.d.forUpdate, staleAfter.Milliseconds(), id).Scan(&name, &host, &prev, &seen, &fresh)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("start runner: %w", err)
	}
	if prev != "" && prev != session && host != info.Host && fresh {
		return &RunnerInUseError{Name: name, Host: host, LastSeen: *fromMS(seen)}
	}
	_, err = tx.ExecContext(ctx, `UPDATE runners SET host = $1, labels = $2, capacity = $3, driver = $4, ssh = $5, session = $6,
		started_at = `+s.d.nowMS()+`, last_seen = `+s.d.nowMS()+` WHERE id = $7`,
		info.Host, strings.Join(info.Labels, ","), info.Capacity, info.Driver, info.SSH, session, id)
	if err != nil {
		return fmt.Errorf("start runner: %w", err)
	}
	return tx.Commit()
}

// RunnerHeartbeat records that runner id's process of session is alive.
// It returns ErrReplaced if the runner now has another session (another
// process started as it) or was revoked.
func (s *Store) RunnerHeartbeat(ctx context.Context, id int64, session string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE runners SET last_seen = `+s.d.nowMS()+`
		WHERE id = $1 AND session = $2 AND revoked_at IS NULL`, id, session)
	if err != nil {
		return fmt.Errorf("runner heartbeat: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrReplaced
	}
	return nil
}

// FailRunnerBuilds ends the builds that runner id left preparing or
// building when its process stopped without ending them (a crash,
// SIGKILL), and those no runner has claimed for itself (claimed before
// runners had identities), like FailInterrupted. Call it when the runner
// starts, before it claims.
func (s *Store) FailRunnerBuilds(ctx context.Context, id int64, message string) (int64, error) {
	ids, err := s.failBuilds(ctx, `runner_id = $1 OR runner_id IS NULL`, []any{id}, message)
	return int64(len(ids)), err
}

// StaleRunner is a runner whose builds FailStaleRunners failed.
type StaleRunner struct {
	Name, Host string
	LastSeen   time.Time
	Builds     []int64
}

// StaleMessage is the message of the builds of a runner that stopped
// answering.
func StaleMessage(name, host string, lastSeen time.Time) string {
	return fmt.Sprintf("runner %s on host %s stopped answering at %s", name, host, lastSeen.UTC().Format(time.RFC3339))
}

// FailStaleRunners fails the builds of the runners not heard from within
// staleAfter, with StaleMessage. Any number of servers may sweep at once:
// each build fails once.
func (s *Store) FailStaleRunners(ctx context.Context, staleAfter time.Duration) ([]StaleRunner, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT r.id, r.name, r.host, coalesce(r.last_seen, r.created_at) FROM runners r
		JOIN builds b ON b.runner_id = r.id AND b.status IN ('preparing', 'building')
		WHERE coalesce(r.last_seen, r.created_at) < `+s.d.nowMS()+` - $1`, staleAfter.Milliseconds())
	if err != nil {
		return nil, fmt.Errorf("find stale runners: %w", err)
	}
	type stale struct {
		id   int64
		r    StaleRunner
		seen int64
	}
	var found []stale
	for rows.Next() {
		var st stale
		if err := rows.Scan(&st.id, &st.r.Name, &st.r.Host, &st.seen); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find stale runners: %w", err)
		}
		st.r.LastSeen = time.UnixMilli(st.seen).UTC()
		found = append(found, st)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find stale runners: %w", err)
	}
	var out []StaleRunner
	for _, st := range found {
		// Only if still silent: it may have answered since.
		ids, err := s.failBuilds(ctx, `runner_id = $1 AND runner_id IN (SELECT id FROM runners
			WHERE id = $1 AND coalesce(last_seen, created_at) < `+s.d.nowMS()+` - $2)`,
			[]any{st.id, staleAfter.Milliseconds()}, StaleMessage(st.r.Name, st.r.Host, st.r.LastSeen))
		if err != nil {
			return out, err
		}
		if len(ids) > 0 {
			st.r.Builds = ids
			out = append(out, st.r)
		}
	}
	return out, nil
}

// BuildRunner returns the runner that claimed build id (0: none).
func (s *Store) BuildRunner(ctx context.Context, id int64) (int64, error) {
	var r sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT runner_id FROM builds WHERE id = $1`, id).Scan(&r)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	return r.Int64, err
}

// Claim says which builds a runner takes.
type Claim struct {
	// Runner is the claiming runner's id, recorded with the build (0:
	// none).
	Runner int64
	// Labels are the instance types it runs (nil: every one). A build
	// whose spec names none is of build.DefaultInstanceType.
	Labels []string
	// NoSSH: it runs no SSH builds (SSH enabled or SSH on failure).
	NoSSH bool
}

// ClaimBuildFor is ClaimBuild for the runner and the builds of c: the
// oldest queued build that c takes.
func (s *Store) ClaimBuildFor(ctx context.Context, c Claim) (*build.Build, []byte, error) {
	args := []any{ms(time.Now().UTC()), nil}
	if c.Runner != 0 {
		args[1] = c.Runner
	}
	var filter string
	if c.Labels != nil {
		marks := make([]string, len(c.Labels))
		for i, l := range c.Labels {
			args = append(args, l)
			marks[i] = fmt.Sprintf("$%d", len(args))
		}
		if len(marks) == 0 {
			marks = []string{"NULL"}
		}
		args = append(args, build.DefaultInstanceType)
		filter += fmt.Sprintf(` AND coalesce(nullif(%s, ''), $%d) IN (%s)`, s.d.specInstanceType, len(args), strings.Join(marks, ", "))
	}
	if c.NoSSH {
		filter += ` AND NOT ssh_enabled AND NOT (` + s.d.specSSHOnFailure + `)`
	}
	var id int64
	var spec string
	err := s.db.QueryRowContext(ctx, `UPDATE builds SET status = 'preparing', started_at = $1, runner_id = $2
		WHERE id = (SELECT id FROM builds WHERE status = 'queued'`+filter+` ORDER BY id LIMIT 1`+s.d.skipLocked+`) AND status = 'queued'
		RETURNING id, spec`, args...).Scan(&id, &spec)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, ErrNotFound
	}
	if err != nil {
		return nil, nil, fmt.Errorf("claim build: %w", err)
	}
	s.notify(id)
	b, err := s.Build(ctx, id)
	return b, []byte(spec), err
}

// RunnerCancelRequests is CancelRequests of runner id's builds.
func (s *Store) RunnerCancelRequests(ctx context.Context, id int64) ([]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM builds WHERE status IN ('preparing', 'building') AND cancel_requested = TRUE
		AND runner_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("cancel requests: %w", err)
	}
	defer rows.Close()
	ids := []int64{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("cancel requests: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// RunnerEndedBuilds returns those of ids that have ended, among the builds
// of runner id (0: of any runner).
func (s *Store) RunnerEndedBuilds(ctx context.Context, runner int64, ids []int64) ([]int64, error) {
	out := []int64{}
	if len(ids) == 0 {
		return out, nil
	}
	args := []any{runner}
	marks := make([]string, len(ids))
	for i, id := range ids {
		args = append(args, id)
		marks[i] = fmt.Sprintf("$%d", len(args))
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM builds WHERE id IN (`+strings.Join(marks, ", ")+`)
		AND status IN ('finished', 'failed', 'canceled', 'timeout') AND ($1 = 0 OR runner_id = $1) ORDER BY id`, args...)
	if err != nil {
		return nil, fmt.Errorf("ended builds: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("ended builds: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// RunnerStore is the store as one runner uses it: it claims builds for
// the runner (see Claim) and sees the cancel requests of its builds only.
type RunnerStore struct {
	*Store
	claim Claim
}

// ForRunner returns the store as the runner of c uses it.
func (s *Store) ForRunner(c Claim) *RunnerStore { return &RunnerStore{Store: s, claim: c} }

// ClaimBuild claims the oldest queued build the runner takes.
func (rs *RunnerStore) ClaimBuild(ctx context.Context) (*build.Build, []byte, error) {
	return rs.ClaimBuildFor(ctx, rs.claim)
}

// CancelRequests lists the runner's builds that have a cancel request.
func (rs *RunnerStore) CancelRequests(ctx context.Context) ([]int64, error) {
	if rs.claim.Runner == 0 {
		return rs.Store.CancelRequests(ctx)
	}
	return rs.RunnerCancelRequests(ctx, rs.claim.Runner)
}

// EndedBuilds returns those of ids, the runner's builds, that have ended
// (see runner.EndedStore).
func (rs *RunnerStore) EndedBuilds(ctx context.Context, ids []int64) ([]int64, error) {
	return rs.RunnerEndedBuilds(ctx, rs.claim.Runner, ids)
}

// failBuilds ends the builds that are preparing or building and match
// cond (SQL over builds, with args as $1...): each becomes failed with
// message, its running step failed and its pending steps skipped, and its
// log gets a last line "hangar: <message>". Their SSH keys are erased. It
// returns the ids of the builds it ended; concurrent callers end each
// build once.
func (s *Store) failBuilds(ctx context.Context, cond string, args []any, message string) ([]int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("fail builds: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT id, steps FROM builds WHERE status IN ('preparing', 'building') AND (`+cond+`)
		ORDER BY id`+s.d.forUpdate, args...)
	if err != nil {
		return nil, fmt.Errorf("fail builds: %w", err)
	}
	type interrupted struct {
		id    int64
		steps string
	}
	var found []interrupted
	for rows.Next() {
		var b interrupted
		if err := rows.Scan(&b.id, &b.steps); err != nil {
			rows.Close()
			return nil, fmt.Errorf("fail builds: %w", err)
		}
		found = append(found, b)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("fail builds: %w", err)
	}
	now := time.Now().UTC()
	var ids []int64
	for _, b := range found {
		var steps []build.Step
		if err := json.Unmarshal([]byte(b.steps), &steps); err != nil {
			return nil, fmt.Errorf("build %d: bad steps: %w", b.id, err)
		}
		last := endSteps(steps, now)
		data, err := json.Marshal(steps)
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE builds SET status = 'failed', message = $1, finished_at = $2, steps = $3,
			ssh_state = CASE WHEN ssh_enabled THEN 'closed' ELSE '' END, ssh_url_nonce = NULL WHERE id = $4`,
			message, ms(now), string(data), b.id); err != nil {
			return nil, fmt.Errorf("fail build %d: %w", b.id, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO log_chunks (build_id, first, last, step, time, data)
			SELECT $1, n, n, $2, $3, $4 FROM (SELECT coalesce(max(last), 0) + 1 AS n FROM log_chunks WHERE build_id = $1) AS next`,
			b.id, last, ms(now), []byte("hangar: "+message+"\n")); err != nil {
			return nil, fmt.Errorf("fail build %d: log: %w", b.id, err)
		}
		// Its SSH key goes with it.
		if _, err := tx.ExecContext(ctx, `UPDATE build_ssh SET private_key = NULL WHERE build_id = $1`, b.id); err != nil {
			return nil, fmt.Errorf("fail build %d: %w", b.id, err)
		}
		ids = append(ids, b.id)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("fail builds: %w", err)
	}
	for _, id := range ids {
		s.notify(id)
	}
	return ids, nil
}
