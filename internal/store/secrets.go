package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Environment variable groups and keystores hold secrets: the store keeps
// their values as the caller gives them, sealed (encrypted) by package
// secrets, and never sees them in clear.

// Group is an environment variable group: an app's own, or a global one
// (App empty) that every app may use.
type Group struct {
	App       string    `json:"app,omitempty"`
	Name      string    `json:"name"`
	Keys      []string  `json:"keys"` // by name
	UpdatedAt time.Time `json:"updated_at"`
	// Vars are the sealed values, by key; only GroupValues fills them.
	Vars []SealedVar `json:"-"`
}

// SealedVar is one variable of a group, its value sealed.
type SealedVar struct {
	Name   string
	Sealed []byte
}

// groupsSchema holds environment variable groups (migration 10). A global
// group has no app; the unique index treats that as app 0.
const groupsSchema = `
CREATE TABLE IF NOT EXISTS env_groups (
	id {{serial}},
	app_id {{int}} REFERENCES apps(id) ON DELETE CASCADE,
	name TEXT NOT NULL,
	created_at {{int}} NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS env_groups_name ON env_groups ((coalesce(app_id, 0)), name);
CREATE TABLE IF NOT EXISTS env_vars (
	group_id {{int}} NOT NULL REFERENCES env_groups(id) ON DELETE CASCADE,
	name TEXT NOT NULL,
	value {{blob}} NOT NULL,
	updated_at {{int}} NOT NULL,
	PRIMARY KEY (group_id, name)
);
`

// keystoresSchema holds Android keystores (migration 11): the keystore
// file and its passwords, sealed together.
const keystoresSchema = `
CREATE TABLE IF NOT EXISTS keystores (
	app_id {{int}} NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
	ref TEXT NOT NULL,
	alias TEXT NOT NULL,
	data {{blob}} NOT NULL,
	created_at {{int}} NOT NULL,
	PRIMARY KEY (app_id, ref)
);
`

// appID returns the id of app, or 0 with a nil error for "" (global).
func appID(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, app string) (sql.NullInt64, error) {
	if app == "" {
		return sql.NullInt64{}, nil
	}
	var id int64
	err := q.QueryRowContext(ctx, `SELECT id FROM apps WHERE name = $1`, app).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return sql.NullInt64{}, ErrNotFound
	}
	return sql.NullInt64{Int64: id, Valid: true}, err
}

// groupScope is the SQL condition naming app's groups ($1: app id or NULL).
const groupScope = `coalesce(app_id, 0) = coalesce($1, 0)`

// SetGroupVars sets variables of app's group (app "": a global group),
// creating the group if needed; values are sealed. ErrNotFound: no such
// app.
func (s *Store) SetGroupVars(ctx context.Context, app, group string, vars []SealedVar) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("set group: %w", err)
	}
	defer tx.Rollback()
	id, err := appID(ctx, tx, app)
	if err != nil {
		return err
	}
	now := ms(time.Now())
	if _, err := tx.ExecContext(ctx, `INSERT INTO env_groups (app_id, name, created_at) VALUES ($1, $2, $3)
		ON CONFLICT ((coalesce(app_id, 0)), name) DO NOTHING`, id, group, now); err != nil {
		return fmt.Errorf("set group: %w", err)
	}
	var gid int64
	if err := tx.QueryRowContext(ctx, `SELECT id FROM env_groups WHERE `+groupScope+` AND name = $2`, id, group).Scan(&gid); err != nil {
		return fmt.Errorf("set group: %w", err)
	}
	for _, v := range vars {
		if _, err := tx.ExecContext(ctx, `INSERT INTO env_vars (group_id, name, value, updated_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (group_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
			gid, v.Name, v.Sealed, now); err != nil {
			return fmt.Errorf("set group: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("set group: %w", err)
	}
	return nil
}

// Groups lists app's groups (app "": the global ones) by name, with their
// keys and not their values. ErrNotFound: no such app.
func (s *Store) Groups(ctx context.Context, app string) ([]Group, error) {
	id, err := appID(ctx, s.db, app)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT g.name, g.created_at, v.name, v.updated_at FROM env_groups g
		LEFT JOIN env_vars v ON v.group_id = g.id WHERE coalesce(g.app_id, 0) = coalesce($1, 0)
		ORDER BY g.name, v.name`, id)
	if err != nil {
		return nil, fmt.Errorf("groups: %w", err)
	}
	defer rows.Close()
	groups := []Group{}
	for rows.Next() {
		var name string
		var created int64
		var key sql.NullString
		var updated sql.NullInt64
		if err := rows.Scan(&name, &created, &key, &updated); err != nil {
			return nil, fmt.Errorf("groups: %w", err)
		}
		if n := len(groups); n == 0 || groups[n-1].Name != name {
			groups = append(groups, Group{App: app, Name: name, Keys: []string{}, UpdatedAt: time.UnixMilli(created).UTC()})
		}
		g := &groups[len(groups)-1]
		if key.Valid {
			g.Keys = append(g.Keys, key.String)
			if t := time.UnixMilli(updated.Int64).UTC(); t.After(g.UpdatedAt) {
				g.UpdatedAt = t
			}
		}
	}
	return groups, rows.Err()
}

// GroupValues returns the group that a build of app gets for name: app's
// own group of that name, else the global one, with its sealed values.
// ErrNotFound: neither exists.
func (s *Store) GroupValues(ctx context.Context, app, name string) (*Group, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT g.id, coalesce(a.name, ''), v.name, v.value FROM env_groups g
		LEFT JOIN apps a ON a.id = g.app_id LEFT JOIN env_vars v ON v.group_id = g.id
		WHERE g.name = $2 AND (g.app_id IS NULL OR a.name = $1)
		ORDER BY coalesce(g.app_id, 0) DESC, v.name`, app, name)
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	defer rows.Close()
	var g *Group
	var first int64
	for rows.Next() {
		var id int64
		var owner string
		var key sql.NullString
		var value []byte
		if err := rows.Scan(&id, &owner, &key, &value); err != nil {
			return nil, fmt.Errorf("group %s: %w", name, err)
		}
		if g == nil {
			g, first = &Group{App: owner, Name: name, Keys: []string{}}, id
		}
		if id != first {
			break // the global group of the name, shadowed by the app's
		}
		if key.Valid {
			g.Keys = append(g.Keys, key.String)
			g.Vars = append(g.Vars, SealedVar{Name: key.String, Sealed: value})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	if g == nil {
		return nil, ErrNotFound
	}
	return g, nil
}

// DeleteGroup removes app's group (app "": a global one) with its
// variables. ErrNotFound: no such app or group.
func (s *Store) DeleteGroup(ctx context.Context, app, group string) error {
	id, err := appID(ctx, s.db, app)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM env_groups WHERE `+groupScope+` AND name = $2`, id, group)
	return affected(res, err, "delete group")
}

// DeleteGroupVar removes one variable of app's group; the group stays,
// empty or not. ErrNotFound: no such app, group or variable.
func (s *Store) DeleteGroupVar(ctx context.Context, app, group, key string) error {
	id, err := appID(ctx, s.db, app)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM env_vars WHERE name = $3 AND group_id =
		(SELECT id FROM env_groups WHERE `+groupScope+` AND name = $2)`, id, group, key)
	return affected(res, err, "delete group variable")
}

func affected(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// Keystore is an app's Android keystore: the file and its passwords,
// sealed together (Sealed), under a reference that workflows name in
// environment.android_signing.
type Keystore struct {
	App       string    `json:"app"`
	Ref       string    `json:"reference"`
	Alias     string    `json:"key_alias"`
	CreatedAt time.Time `json:"created_at"`
	Sealed    []byte    `json:"-"`
}

// PutKeystore adds app's keystore, replacing one of the same reference.
// ErrNotFound: no such app.
func (s *Store) PutKeystore(ctx context.Context, k *Keystore) error {
	id, err := appID(ctx, s.db, k.App)
	if err != nil {
		return err
	}
	if !id.Valid {
		return errors.New("put keystore: no app")
	}
	k.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)
	_, err = s.db.ExecContext(ctx, `INSERT INTO keystores (app_id, ref, alias, data, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (app_id, ref) DO UPDATE SET alias = excluded.alias, data = excluded.data, created_at = excluded.created_at`,
		id, k.Ref, k.Alias, k.Sealed, ms(k.CreatedAt))
	if err != nil {
		return fmt.Errorf("put keystore: %w", err)
	}
	return nil
}

// Keystores lists app's keystores by reference, without their contents.
// ErrNotFound: no such app.
func (s *Store) Keystores(ctx context.Context, app string) ([]Keystore, error) {
	id, err := appID(ctx, s.db, app)
	if err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT ref, alias, created_at FROM keystores WHERE app_id = $1 ORDER BY ref`, id)
	if err != nil {
		return nil, fmt.Errorf("keystores: %w", err)
	}
	defer rows.Close()
	list := []Keystore{}
	for rows.Next() {
		k := Keystore{App: app}
		var created int64
		if err := rows.Scan(&k.Ref, &k.Alias, &created); err != nil {
			return nil, fmt.Errorf("keystores: %w", err)
		}
		k.CreatedAt = time.UnixMilli(created).UTC()
		list = append(list, k)
	}
	return list, rows.Err()
}

// Keystore returns app's keystore ref with its sealed contents.
// ErrNotFound: no such app or keystore.
func (s *Store) Keystore(ctx context.Context, app, ref string) (*Keystore, error) {
	k := &Keystore{App: app, Ref: ref}
	var created int64
	err := s.db.QueryRowContext(ctx, `SELECT k.alias, k.data, k.created_at FROM keystores k JOIN apps a ON a.id = k.app_id
		WHERE a.name = $1 AND k.ref = $2`, app, ref).Scan(&k.Alias, &k.Sealed, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("keystore %s: %w", ref, err)
	}
	k.CreatedAt = time.UnixMilli(created).UTC()
	return k, nil
}

// DeleteKeystore removes app's keystore ref. ErrNotFound: no such app or
// keystore.
func (s *Store) DeleteKeystore(ctx context.Context, app, ref string) error {
	id, err := appID(ctx, s.db, app)
	if err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM keystores WHERE app_id = $1 AND ref = $2`, id, ref)
	return affected(res, err, "delete keystore")
}
