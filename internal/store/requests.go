package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Build requests carry what a user asks of a running build (Continue at a
// breakpoint, Extend its SSH access) from the server the user reached to
// the server whose runner runs the build: the asking server writes a
// request, the runner's server (woken by BuildRequestChanges, in any
// process) does it and writes the outcome, which wakes the asker. A
// runner on another host takes and answers its requests through the
// runner API.
const BuildRequestChanges int64 = -3

// Kinds of build requests.
const (
	RequestContinue = "continue"
	RequestExtend   = "extend"
)

// BuildRequest is one request to a build's runner.
type BuildRequest struct {
	ID      int64
	BuildID int64
	Kind    string
	By      time.Duration // Extend's
	Who     string
	// Done is set once the runner has answered; Err is its error ("" if
	// it did it).
	Done bool
	Err  string
}

// buildRequestsSchema (migration 19).
const buildRequestsSchema = `
CREATE TABLE IF NOT EXISTS build_requests (
	id {{serial}},
	build_id {{int}} NOT NULL REFERENCES builds(id) ON DELETE CASCADE,
	kind TEXT NOT NULL,
	by_ms {{int}} NOT NULL DEFAULT 0,
	who TEXT NOT NULL,
	created_at {{int}} NOT NULL,
	done_at {{int}},
	error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS build_requests_pending ON build_requests (build_id) WHERE done_at IS NULL;
`

// buildRequestsNotify wakes every process at each new request or answer.
const buildRequestsNotify = `
CREATE TRIGGER build_requests_notify AFTER INSERT OR UPDATE ON build_requests
	FOR EACH STATEMENT EXECUTE FUNCTION hangar_notify_gateways('-3');
`

// AddBuildRequest records a request and returns its id.
func (s *Store) AddBuildRequest(ctx context.Context, r BuildRequest) (int64, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, `INSERT INTO build_requests (build_id, kind, by_ms, who, created_at)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`, r.BuildID, r.Kind, r.By.Milliseconds(), r.Who, ms(time.Now())).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record a request to build %d: %w", r.BuildID, err)
	}
	s.notify(BuildRequestChanges)
	return id, nil
}

// BuildRequestOf returns request id as it stands.
func (s *Store) BuildRequestOf(ctx context.Context, id int64) (*BuildRequest, error) {
	r := BuildRequest{ID: id}
	var by int64
	var done sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT build_id, kind, by_ms, who, done_at, error FROM build_requests WHERE id = $1`, id).
		Scan(&r.BuildID, &r.Kind, &by, &r.Who, &done, &r.Err)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	r.By, r.Done = time.Duration(by)*time.Millisecond, done.Valid
	return &r, nil
}

// PendingBuildRequests returns the unanswered requests to the builds that
// runner claimed and that still run, oldest first.
func (s *Store) PendingBuildRequests(ctx context.Context, runner int64) ([]BuildRequest, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT q.id, q.build_id, q.kind, q.by_ms, q.who FROM build_requests q
		JOIN builds b ON b.id = q.build_id
		WHERE q.done_at IS NULL AND b.runner_id = $1 AND b.status IN ('preparing', 'building') ORDER BY q.id`, runner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BuildRequest
	for rows.Next() {
		var r BuildRequest
		var by int64
		if err := rows.Scan(&r.ID, &r.BuildID, &r.Kind, &by, &r.Who); err != nil {
			return nil, err
		}
		r.By = time.Duration(by) * time.Millisecond
		out = append(out, r)
	}
	return out, rows.Err()
}

// AnswerBuildRequest records the outcome of request id (errText "" if
// done), once: a request answered already is left as it is.
func (s *Store) AnswerBuildRequest(ctx context.Context, id int64, errText string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE build_requests SET done_at = $2, error = $3 WHERE id = $1 AND done_at IS NULL`,
		id, ms(time.Now()), errText); err != nil {
		return fmt.Errorf("answer build request %d: %w", id, err)
	}
	s.notify(BuildRequestChanges)
	return nil
}

// PruneBuildRequests drops the requests made before before.
func (s *Store) PruneBuildRequests(ctx context.Context, before time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM build_requests WHERE created_at < $1`, ms(before))
	return err
}
