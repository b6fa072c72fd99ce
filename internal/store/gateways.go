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

// Gateways among several share three things through the store (package
// gateway/cluster): the access state of each SSH build, which the runner
// that owns the build writes and every gateway follows; the registry of
// which gateway holds each build's tunnel, with an expiry its holder
// renews; and the gateways' events (connect, channel, disconnect), which
// the runner owning the build follows. Subscribe to GatewayAccessChanges
// or GatewayEventChanges to be woken when they change, in any process
// (PostgreSQL's LISTEN/NOTIFY); these keys wake no subscriber of every
// build (key 0).
const (
	GatewayAccessChanges int64 = -1
	GatewayEventChanges  int64 = -2
)

// GatewayAccess is a build's SSH access as every gateway must apply it.
type GatewayAccess struct {
	Alias string
	// Key is the build's user public key (authorized_keys format).
	Key    string
	Open   bool
	Reason string // why access closed
	// Disconnects counts the runner's Disconnect calls: a gateway that
	// sees it grow closes the build's connections.
	Disconnects int64
}

// SetGatewayAccess opens alias's access for key (open) or closes it with
// reason, keeping its Disconnects count. Closing an alias the store does
// not know records nothing.
func (s *Store) SetGatewayAccess(ctx context.Context, alias, key string, open bool, reason string) error {
	var err error
	if open {
		_, err = s.db.ExecContext(ctx, `INSERT INTO gateway_access (alias, user_key, is_open, reason, disconnects, updated_at)
			VALUES ($1, $2, TRUE, '', 0, $3)
			ON CONFLICT (alias) DO UPDATE SET user_key = $2, is_open = TRUE, reason = '', updated_at = $3`, alias, key, ms(time.Now()))
	} else {
		_, err = s.db.ExecContext(ctx, `UPDATE gateway_access SET is_open = FALSE, reason = $2, updated_at = $3 WHERE alias = $1`,
			alias, reason, ms(time.Now()))
	}
	if err != nil {
		return fmt.Errorf("set gateway access of %s: %w", alias, err)
	}
	s.notify(GatewayAccessChanges)
	return nil
}

// DisconnectGateway asks every gateway to close alias's connections if
// its access is closed.
func (s *Store) DisconnectGateway(ctx context.Context, alias string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE gateway_access SET disconnects = disconnects + 1, updated_at = $2
		WHERE alias = $1 AND NOT is_open`, alias, ms(time.Now())); err != nil {
		return fmt.Errorf("disconnect %s at the gateways: %w", alias, err)
	}
	s.notify(GatewayAccessChanges)
	return nil
}

// ForgetGatewayAccess drops alias's access if it is closed and was for
// key.
func (s *Store) ForgetGatewayAccess(ctx context.Context, alias, key string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM gateway_access WHERE alias = $1 AND user_key = $2 AND NOT is_open`, alias, key); err != nil {
		return fmt.Errorf("forget %s at the gateways: %w", alias, err)
	}
	s.notify(GatewayAccessChanges)
	return nil
}

// CloseEndedGatewayAccess closes (with reason) and disconnects the open
// access of builds that have ended: what a runner that stopped without
// revoking (a crash) left open. It returns how many it closed.
func (s *Store) CloseEndedGatewayAccess(ctx context.Context, reason string) (int64, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE gateway_access SET is_open = FALSE, reason = $1, disconnects = disconnects + 1, updated_at = $2
		WHERE is_open AND alias IN (SELECT 'build-' || id FROM builds WHERE status IN ('finished', 'failed', 'canceled', 'timeout'))`,
		reason, ms(time.Now()))
	if err != nil {
		return 0, fmt.Errorf("close the gateway access of ended builds: %w", err)
	}
	n, err := res.RowsAffected()
	if n > 0 {
		s.notify(GatewayAccessChanges)
	}
	return n, err
}

// PruneGatewayAccess drops the access closed before before.
func (s *Store) PruneGatewayAccess(ctx context.Context, before time.Time) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM gateway_access WHERE NOT is_open AND updated_at < $1`, ms(before))
	if err != nil {
		return fmt.Errorf("prune gateway access: %w", err)
	}
	if n, _ := res.RowsAffected(); n > 0 {
		s.notify(GatewayAccessChanges)
	}
	return nil
}

// GatewayAccessOf returns alias's access, or ErrNotFound.
func (s *Store) GatewayAccessOf(ctx context.Context, alias string) (*GatewayAccess, error) {
	a := GatewayAccess{Alias: alias}
	err := s.db.QueryRowContext(ctx, `SELECT user_key, is_open, reason, disconnects FROM gateway_access WHERE alias = $1`, alias).
		Scan(&a.Key, &a.Open, &a.Reason, &a.Disconnects)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("gateway access of %s: %w", alias, err)
	}
	return &a, nil
}

// GatewayAccessAll returns every build's access that the store knows.
func (s *Store) GatewayAccessAll(ctx context.Context) ([]GatewayAccess, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT alias, user_key, is_open, reason, disconnects FROM gateway_access`)
	if err != nil {
		return nil, fmt.Errorf("gateway access: %w", err)
	}
	defer rows.Close()
	var out []GatewayAccess
	for rows.Next() {
		var a GatewayAccess
		if err := rows.Scan(&a.Alias, &a.Key, &a.Open, &a.Reason, &a.Disconnects); err != nil {
			return nil, fmt.Errorf("gateway access: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// GatewayRoute says which gateway holds a build's tunnel.
type GatewayRoute struct {
	Alias     string
	GatewayID string
	// PeerAddr is where the other gateways reach it (its peer link).
	PeerAddr  string
	ExpiresAt time.Time
}

// PutGatewayRoute records that gateway id (reached by peers at peerAddr)
// holds alias's tunnel until expires, replacing any other holder: the
// newest tunnel wins, as when a builder reconnects through another
// gateway.
func (s *Store) PutGatewayRoute(ctx context.Context, r GatewayRoute) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO gateway_routes (alias, gateway_id, peer_addr, expires_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (alias) DO UPDATE SET gateway_id = $2, peer_addr = $3, expires_at = $4`,
		r.Alias, r.GatewayID, r.PeerAddr, ms(r.ExpiresAt))
	if err != nil {
		return fmt.Errorf("register the tunnel of %s: %w", r.Alias, err)
	}
	return nil
}

// RenewGatewayRoutes extends to expires the routes of aliases that
// gateway id still holds (those another gateway took stay its).
func (s *Store) RenewGatewayRoutes(ctx context.Context, id string, aliases []string, expires time.Time) error {
	for _, a := range aliases {
		if _, err := s.db.ExecContext(ctx, `UPDATE gateway_routes SET expires_at = $3 WHERE alias = $1 AND gateway_id = $2`,
			a, id, ms(expires)); err != nil {
			return fmt.Errorf("renew the tunnel of %s: %w", a, err)
		}
	}
	return nil
}

// DeleteGatewayRoute removes alias's route if gateway id holds it.
func (s *Store) DeleteGatewayRoute(ctx context.Context, alias, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM gateway_routes WHERE alias = $1 AND gateway_id = $2`, alias, id); err != nil {
		return fmt.Errorf("unregister the tunnel of %s: %w", alias, err)
	}
	return nil
}

// GatewayRouteOf returns alias's route if it has not expired at now, or
// ErrNotFound.
func (s *Store) GatewayRouteOf(ctx context.Context, alias string, now time.Time) (*GatewayRoute, error) {
	r := GatewayRoute{Alias: alias}
	var exp int64
	err := s.db.QueryRowContext(ctx, `SELECT gateway_id, peer_addr, expires_at FROM gateway_routes WHERE alias = $1 AND expires_at > $2`,
		alias, ms(now)).Scan(&r.GatewayID, &r.PeerAddr, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("the tunnel of %s: %w", alias, err)
	}
	r.ExpiresAt = time.UnixMilli(exp).UTC()
	return &r, nil
}

// PruneGatewayRoutes removes the routes expired at now.
func (s *Store) PruneGatewayRoutes(ctx context.Context, now time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM gateway_routes WHERE expires_at <= $1`, ms(now))
	return err
}

// GatewayEvent is something that happened on a gateway for a build (see
// gateway.Event).
type GatewayEvent struct {
	ID        int64
	Time      time.Time
	GatewayID string
	Alias     string
	Kind      string
	Remote    string
	Client    string
	Detail    string
}

// AddGatewayEvent records ev (its ID and, if zero, Time are set).
func (s *Store) AddGatewayEvent(ctx context.Context, ev *GatewayEvent) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	err := s.db.QueryRowContext(ctx, `INSERT INTO gateway_events (time, gateway_id, alias, kind, remote, client, detail)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
		ms(ev.Time), ev.GatewayID, ev.Alias, ev.Kind, ev.Remote, ev.Client, ev.Detail).Scan(&ev.ID)
	if err != nil {
		return fmt.Errorf("record a gateway event of %s: %w", ev.Alias, err)
	}
	s.notify(GatewayEventChanges)
	return nil
}

// GatewayEventsSince returns the events recorded at since or later, in
// the order of their IDs. (Readers go by time, not by ID: on PostgreSQL
// an event may become visible after one with a higher ID.)
func (s *Store) GatewayEventsSince(ctx context.Context, since time.Time) ([]GatewayEvent, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, time, gateway_id, alias, kind, remote, client, detail FROM gateway_events
		WHERE time >= $1 ORDER BY id`, ms(since))
	if err != nil {
		return nil, fmt.Errorf("gateway events: %w", err)
	}
	defer rows.Close()
	var out []GatewayEvent
	for rows.Next() {
		var ev GatewayEvent
		var t int64
		if err := rows.Scan(&ev.ID, &t, &ev.GatewayID, &ev.Alias, &ev.Kind, &ev.Remote, &ev.Client, &ev.Detail); err != nil {
			return nil, fmt.Errorf("gateway events: %w", err)
		}
		ev.Time = time.UnixMilli(t).UTC()
		out = append(out, ev)
	}
	return out, rows.Err()
}

// RunnerGatewayEventsSince is GatewayEventsSince for the builds that
// runner claimed (by their aliases, build.Alias).
func (s *Store) RunnerGatewayEventsSince(ctx context.Context, runner int64, since time.Time) ([]GatewayEvent, error) {
	evs, err := s.GatewayEventsSince(ctx, since)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	// The few builds the events name, then which of them are runner's.
	args := []any{runner}
	var marks []string
	seen := map[int64]bool{}
	for _, ev := range evs {
		if id, err := build.ParseAlias(ev.Alias); err == nil && !seen[id] {
			seen[id] = true
			args = append(args, id)
			marks = append(marks, fmt.Sprintf("$%d", len(args)))
		}
	}
	if len(marks) == 0 {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM builds WHERE runner_id = $1 AND id IN (`+strings.Join(marks, ", ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("gateway events: %w", err)
	}
	defer rows.Close()
	mine := map[string]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("gateway events: %w", err)
		}
		mine[build.Alias(id)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("gateway events: %w", err)
	}
	var out []GatewayEvent
	for _, ev := range evs {
		if mine[ev.Alias] {
			out = append(out, ev)
		}
	}
	return out, nil
}

// PruneGatewayEvents removes the events recorded before before.
func (s *Store) PruneGatewayEvents(ctx context.Context, before time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM gateway_events WHERE time < $1`, ms(before))
	return err
}

// gatewaysSchema holds what gateways share (migration 17).
const gatewaysSchema = `
CREATE TABLE IF NOT EXISTS gateway_access (
	alias TEXT PRIMARY KEY,
	user_key TEXT NOT NULL,
	is_open {{bool}} NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	disconnects {{int}} NOT NULL DEFAULT 0,
	updated_at {{int}} NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_routes (
	alias TEXT PRIMARY KEY,
	gateway_id TEXT NOT NULL,
	peer_addr TEXT NOT NULL,
	expires_at {{int}} NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_events (
	id {{serial}},
	time {{int}} NOT NULL,
	gateway_id TEXT NOT NULL DEFAULT '',
	alias TEXT NOT NULL,
	kind TEXT NOT NULL,
	remote TEXT NOT NULL DEFAULT '',
	client TEXT NOT NULL DEFAULT '',
	detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS gateway_events_time ON gateway_events (time);
`

// gatewaysNotify makes changes to the gateways' access table and their
// events notify hangar_builds (see notifyTriggers) with the keys
// GatewayAccessChanges and GatewayEventChanges, once per statement.
const gatewaysNotify = `
CREATE FUNCTION hangar_notify_gateways() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('hangar_builds', TG_ARGV[0] || ' ' || coalesce(current_setting('hangar.origin', true), ''));
	RETURN NULL;
END $$;
CREATE TRIGGER gateway_access_notify AFTER INSERT OR UPDATE OR DELETE ON gateway_access
	FOR EACH STATEMENT EXECUTE FUNCTION hangar_notify_gateways('-1');
CREATE TRIGGER gateway_events_notify AFTER INSERT ON gateway_events
	FOR EACH STATEMENT EXECUTE FUNCTION hangar_notify_gateways('-2');
`
