package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// blobsSchema keeps files in the database (migration 23), for servers
// that share it: every replica reads the artifacts and caches any of them
// kept. A blob is a row of blobs and its content in chunks of chunk_size
// bytes (the last one shorter), written and read one chunk at a time;
// written_at is when its last chunk was written (an upload in progress
// is not an orphan). artifacts.file and caches.file name a blob as
// "db:<id>".
const blobsSchema = `
CREATE TABLE IF NOT EXISTS blobs (
	id TEXT PRIMARY KEY,
	size {{int}} NOT NULL DEFAULT 0,
	chunk_size {{int}} NOT NULL,
	written_at {{int}} NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_chunks (
	blob_id TEXT NOT NULL REFERENCES blobs(id) ON DELETE CASCADE,
	seq {{int}} NOT NULL,
	data {{blob}} NOT NULL,
	PRIMARY KEY (blob_id, seq)
);
`

// ticketsSchema keeps tickets (migration 24): single-use, short-lived
// permissions that a browser presents in a URL (it cannot set headers),
// taken by whichever replica the request reaches. Only the ticket's
// SHA-256 is kept. kind says what a ticket opens (TicketDownload: an
// artifact, name; TicketTerminal: a build's terminal for user name).
const ticketsSchema = `
CREATE TABLE IF NOT EXISTS tickets (
	hash TEXT PRIMARY KEY,
	kind TEXT NOT NULL,
	build_id {{int}} NOT NULL,
	name TEXT NOT NULL,
	expires_at {{int}} NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_expires ON tickets(expires_at);
`

// Kinds of tickets.
const (
	TicketDownload = "download"
	TicketTerminal = "terminal"
)

// BlobFilePrefix starts the file of an artifact or cache kept as a blob.
const BlobFilePrefix = "db:"

// Blob is a file kept in the database.
type Blob struct {
	ID        string
	Size      int64
	ChunkSize int64
}

// CreateBlob starts blob id, whose chunks hold chunkSize bytes.
func (s *Store) CreateBlob(ctx context.Context, id string, chunkSize int64) error {
	if _, err := s.db.ExecContext(ctx, `INSERT INTO blobs (id, chunk_size, written_at) VALUES ($1, $2, $3)`,
		id, chunkSize, ms(time.Now())); err != nil {
		return fmt.Errorf("create blob: %w", err)
	}
	return nil
}

// PutBlobChunk writes chunk seq (from 0) of blob id (ErrNotFound: the
// blob is gone, deleted as an orphan after an hour without a chunk).
func (s *Store) PutBlobChunk(ctx context.Context, id string, seq int64, data []byte) error {
	res, err := s.db.ExecContext(ctx, `UPDATE blobs SET written_at = $2 WHERE id = $1`, id, ms(time.Now()))
	if err != nil {
		return fmt.Errorf("write blob chunk: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO blob_chunks (blob_id, seq, data) VALUES ($1, $2, $3)`, id, seq, data); err != nil {
		return fmt.Errorf("write blob chunk: %w", err)
	}
	return nil
}

// FinishBlob records blob id's size once its chunks are written.
func (s *Store) FinishBlob(ctx context.Context, id string, size int64) error {
	res, err := s.db.ExecContext(ctx, `UPDATE blobs SET size = $2 WHERE id = $1`, id, size)
	if err != nil {
		return fmt.Errorf("finish blob: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// BlobInfo returns blob id's size and chunk size.
func (s *Store) BlobInfo(ctx context.Context, id string) (Blob, error) {
	b := Blob{ID: id}
	err := s.db.QueryRowContext(ctx, `SELECT size, chunk_size FROM blobs WHERE id = $1`, id).Scan(&b.Size, &b.ChunkSize)
	if errors.Is(err, sql.ErrNoRows) {
		return b, ErrNotFound
	}
	if err != nil {
		return b, fmt.Errorf("blob: %w", err)
	}
	return b, nil
}

// BlobChunk reads chunk seq of blob id.
func (s *Store) BlobChunk(ctx context.Context, id string, seq int64) ([]byte, error) {
	var data []byte
	err := s.db.QueryRowContext(ctx, `SELECT data FROM blob_chunks WHERE blob_id = $1 AND seq = $2`, id, seq).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("blob chunk: %w", err)
	}
	return data, nil
}

// DeleteBlob deletes blob id and its chunks (none: no error).
func (s *Store) DeleteBlob(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM blob_chunks WHERE blob_id = $1`, id); err != nil {
		return fmt.Errorf("delete blob: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM blobs WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete blob: %w", err)
	}
	return nil
}

// orphanBlobs selects the blobs last written before $1 that no artifact
// or cache names: uploads that stopped, or whose row went with its build
// or app.
const orphanBlobs = `SELECT id FROM blobs WHERE written_at < $1
	AND '` + BlobFilePrefix + `' || id NOT IN (SELECT file FROM artifacts)
	AND '` + BlobFilePrefix + `' || id NOT IN (SELECT file FROM caches)`

// DeleteOrphanBlobs deletes the blobs last written before before that no
// artifact or cache names, and says how many.
func (s *Store) DeleteOrphanBlobs(ctx context.Context, before time.Time) (int, error) {
	rows, err := s.db.QueryContext(ctx, orphanBlobs, ms(before))
	if err != nil {
		return 0, fmt.Errorf("orphan blobs: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("orphan blobs: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("orphan blobs: %w", err)
	}
	for _, id := range ids {
		if err := s.DeleteBlob(ctx, id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

func ticketHash(ticket string) string {
	h := sha256.Sum256([]byte(ticket))
	return hex.EncodeToString(h[:])
}

// AddTicket records ticket (kept as its hash) of kind for build id and
// name until expires, and deletes the tickets that have expired.
func (s *Store) AddTicket(ctx context.Context, kind, ticket string, id int64, name string, expires time.Time) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM tickets WHERE expires_at <= $1`, ms(time.Now())); err != nil {
		return fmt.Errorf("add %s ticket: %w", kind, err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO tickets (hash, kind, build_id, name, expires_at) VALUES ($1, $2, $3, $4, $5)`,
		ticketHash(ticket), kind, id, name, ms(expires)); err != nil {
		return fmt.Errorf("add %s ticket: %w", kind, err)
	}
	return nil
}

// TakeTicket uses ticket of kind up: it returns the build and name it was
// issued for, or ErrNotFound if it does not exist (of that kind), was
// taken already or has expired.
func (s *Store) TakeTicket(ctx context.Context, kind, ticket string) (int64, string, error) {
	var id int64
	var name string
	var expires int64
	err := s.db.QueryRowContext(ctx, `DELETE FROM tickets WHERE hash = $1 AND kind = $2 RETURNING build_id, name, expires_at`,
		ticketHash(ticket), kind).Scan(&id, &name, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", ErrNotFound
	}
	if err != nil {
		return 0, "", fmt.Errorf("take %s ticket: %w", kind, err)
	}
	if expires <= ms(time.Now()) {
		return 0, "", ErrNotFound
	}
	return id, name, nil
}
