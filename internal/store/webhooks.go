package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// LastSuccessfulCommit returns the commit and number of the newest build
// of app's workflow on branch that finished successfully, or ErrNotFound.
// It is what a when.changeset compares against.
func (s *Store) LastSuccessfulCommit(ctx context.Context, app, workflow, branch string) (string, int64, error) {
	var commit string
	var number int64
	err := s.db.QueryRowContext(ctx, `SELECT b.commit_sha, b.number FROM builds b JOIN apps a ON a.id = b.app_id
		WHERE a.name = $1 AND b.workflow = $2 AND b.branch = $3 AND b.status = 'finished' ORDER BY b.id DESC LIMIT 1`,
		app, workflow, branch).Scan(&commit, &number)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, ErrNotFound
	}
	if err != nil {
		return "", 0, fmt.Errorf("last successful build: %w", err)
	}
	return commit, number, nil
}

// ActiveWebhookBuilds returns the ids of app's webhook builds of workflow
// on branch that have not ended, oldest first (what cancel_previous_builds
// cancels).
func (s *Store) ActiveWebhookBuilds(ctx context.Context, app, workflow, branch string) ([]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT b.id FROM builds b JOIN apps a ON a.id = b.app_id
		WHERE a.name = $1 AND b.workflow = $2 AND b.branch = $3 AND b.trigger = 'webhook'
		AND b.status IN ('queued', 'preparing', 'building') ORDER BY b.id`, app, workflow, branch)
	if err != nil {
		return nil, fmt.Errorf("active webhook builds: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("active webhook builds: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// deliveriesSchema is the table of webhook deliveries (migration 7).
const deliveriesSchema = `
CREATE TABLE IF NOT EXISTS webhook_deliveries (
	app_id {{int}} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
	delivery TEXT NOT NULL,
	event TEXT NOT NULL,
	received_at {{int}} NOT NULL,
	result TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (app_id, delivery)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_time ON webhook_deliveries(received_at);
`

// deliveryRetention is how long webhook deliveries are remembered.
const deliveryRetention = 30 * 24 * time.Hour

// Delivery is a webhook delivery an app received.
type Delivery struct {
	ID         string    `json:"id"` // GitHub's X-GitHub-Delivery
	Event      string    `json:"event"`
	ReceivedAt time.Time `json:"received_at"`
	Result     string    `json:"result"` // what Hangar did with it
}

// AddDelivery records delivery id of app, and reports false when it was
// recorded before (a repeated delivery, to be ignored). Deliveries older
// than 30 days are forgotten.
func (s *Store) AddDelivery(ctx context.Context, app, id, event string) (bool, error) {
	now := time.Now()
	res, err := s.db.ExecContext(ctx, `INSERT INTO webhook_deliveries (app_id, delivery, event, received_at)
		SELECT id, $2, $3, $4 FROM apps WHERE name = $1 ON CONFLICT (app_id, delivery) DO NOTHING`, app, id, event, ms(now))
	if err != nil {
		return false, fmt.Errorf("add delivery: %w", err)
	}
	n, _ := res.RowsAffected()
	if n > 0 {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE received_at < $1`, ms(now.Add(-deliveryRetention))); err != nil {
			return true, fmt.Errorf("prune deliveries: %w", err)
		}
	}
	return n > 0, nil
}

// SetDeliveryResult records what was done with delivery id of app.
func (s *Store) SetDeliveryResult(ctx context.Context, app, id, result string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE webhook_deliveries SET result = $3
		WHERE app_id = (SELECT id FROM apps WHERE name = $1) AND delivery = $2`, app, id, result)
	return err
}

// Deliveries returns app's newest webhook deliveries, newest first.
func (s *Store) Deliveries(ctx context.Context, app string, limit int) ([]Delivery, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT d.delivery, d.event, d.received_at, d.result FROM webhook_deliveries d
		JOIN apps a ON a.id = d.app_id WHERE a.name = $1 ORDER BY d.received_at DESC, d.delivery DESC LIMIT $2`, app, limit)
	if err != nil {
		return nil, fmt.Errorf("deliveries: %w", err)
	}
	defer rows.Close()
	out := []Delivery{}
	for rows.Next() {
		var d Delivery
		var t int64
		if err := rows.Scan(&d.ID, &d.Event, &t, &d.Result); err != nil {
			return nil, fmt.Errorf("deliveries: %w", err)
		}
		d.ReceivedAt = time.UnixMilli(t).UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}

// ForgetDelivery removes delivery id of app, so that GitHub's redelivery
// of a delivery that failed on Hangar's side is acted on.
func (s *Store) ForgetDelivery(ctx context.Context, app, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM webhook_deliveries
		WHERE app_id = (SELECT id FROM apps WHERE name = $1) AND delivery = $2`, app, id)
	return err
}
