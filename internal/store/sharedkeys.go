package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// sharedKeysSchema holds the keys that every server and gateway of one
// database must have alike (migration 18): the SSH user CA, the host CA,
// the sealer of builds' keys and the one-line URL key. The store keeps
// them sealed by the caller (package secrets' key, which the servers
// share) and never sees them in clear.
const sharedKeysSchema = `
CREATE TABLE IF NOT EXISTS shared_keys (
	name TEXT PRIMARY KEY,
	sealed {{blob}} NOT NULL,
	created_at {{int}} NOT NULL
);
`

// SharedKey returns the sealed key called name. If there is none yet, it
// stores sealed first: of processes starting together, the first insert
// wins and every one gets that key. With sealed nil it only reads
// (ErrNotFound if there is none).
func (s *Store) SharedKey(ctx context.Context, name string, sealed []byte) ([]byte, error) {
	if sealed == nil {
		// only read
	} else if _, err := s.db.ExecContext(ctx, `INSERT INTO shared_keys (name, sealed, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO NOTHING`, name, sealed, ms(time.Now())); err != nil {
		return nil, fmt.Errorf("store the shared key %s: %w", name, err)
	}
	var got []byte
	err := s.db.QueryRowContext(ctx, `SELECT sealed FROM shared_keys WHERE name = $1`, name).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read the shared key %s: %w", name, err)
	}
	return got, nil
}
