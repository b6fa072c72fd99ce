package store

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hangar-ci/hangar/internal/build"
)

// TestBlobs: a blob's chunks are written and read back by number, with
// its size once finished; an artifact names it as "db:<id>", and the
// orphan sweep deletes only the old blobs that nothing names.
func TestBlobs(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		b := newBuild(t, s, build.Finished)
		big := bytes.Repeat([]byte{0, 1, 2, 0xff}, 300) // binary, NUL bytes
		for _, id := range []string{"kept", "orphan"} {
			if err := s.CreateBlob(ctx, id, 1000); err != nil {
				t.Fatal(err)
			}
			if err := s.PutBlobChunk(ctx, id, 0, big[:1000]); err != nil {
				t.Fatal(err)
			}
			if err := s.PutBlobChunk(ctx, id, 1, big[1000:]); err != nil {
				t.Fatal(err)
			}
			if err := s.FinishBlob(ctx, id, int64(len(big))); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutBlobChunk(ctx, "kept", 1, []byte("again")); err == nil {
			t.Error("a chunk written twice")
		}
		if err := s.FinishBlob(ctx, "nope", 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("finish no blob: %v", err)
		}
		if err := s.PutBlobChunk(ctx, "nope", 0, []byte("x")); !errors.Is(err, ErrNotFound) {
			t.Errorf("a chunk of no blob: %v", err)
		}
		info, err := s.BlobInfo(ctx, "kept")
		if err != nil || info.Size != 1200 || info.ChunkSize != 1000 {
			t.Errorf("BlobInfo = %+v, %v", info, err)
		}
		var got []byte
		for seq := int64(0); seq < 2; seq++ {
			data, err := s.BlobChunk(ctx, "kept", seq)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, data...)
		}
		if !bytes.Equal(got, big) {
			t.Errorf("read back %d bytes, not the %d written", len(got), len(big))
		}
		if _, err := s.BlobChunk(ctx, "kept", 2); !errors.Is(err, ErrNotFound) {
			t.Errorf("chunk past the end: %v", err)
		}
		now := time.Now()
		a := build.Artifact{Name: "app.apk", Size: 1200, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := s.AddArtifact(ctx, b.ID, a, BlobFilePrefix+"kept"); err != nil {
			t.Fatal(err)
		}
		// Blobs written lately may be uploads in progress: kept.
		if n, err := s.DeleteOrphanBlobs(ctx, now.Add(-time.Hour)); err != nil || n != 0 {
			t.Errorf("DeleteOrphanBlobs of an hour ago = %d, %v", n, err)
		}
		if n, err := s.DeleteOrphanBlobs(ctx, now.Add(time.Minute)); err != nil || n != 1 {
			t.Errorf("DeleteOrphanBlobs = %d, %v; want the orphan", n, err)
		}
		if _, err := s.BlobInfo(ctx, "orphan"); !errors.Is(err, ErrNotFound) {
			t.Errorf("the orphan: %v", err)
		}
		if _, err := s.BlobChunk(ctx, "orphan", 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("the orphan's chunk: %v", err)
		}
		if _, err := s.BlobInfo(ctx, "kept"); err != nil {
			t.Errorf("the named blob: %v", err)
		}
		if err := s.DeleteBlob(ctx, "kept"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.BlobChunk(ctx, "kept", 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("a deleted blob's chunk: %v", err)
		}
	})
}

// TestTickets: a ticket is taken once, by any store of the database, and
// only as the kind it was issued as; an expired one is not taken.
func TestTickets(t *testing.T) {
	eachBackend(t, func(t *testing.T, db testDB) {
		ctx := context.Background()
		s := db.open(t)
		now := time.Now()
		if err := s.AddTicket(ctx, TicketDownload, "t1", 7, "out/app.apk", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.AddTicket(ctx, TicketDownload, "old", 7, "x", now.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := s.AddTicket(ctx, TicketTerminal, "term", 8, "alice", now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.TakeTicket(ctx, TicketDownload, "term"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a terminal ticket taken as a download ticket: %v", err)
		}
		other := db.open(t) // another replica
		if id, name, err := other.TakeTicket(ctx, TicketTerminal, "term"); err != nil || id != 8 || name != "alice" {
			t.Errorf("another replica's TakeTicket = %d %q %v", id, name, err)
		}
		if _, _, err := s.TakeTicket(ctx, TicketDownload, "old"); !errors.Is(err, ErrNotFound) {
			t.Errorf("an expired ticket: %v", err)
		}
		id, name, err := s.TakeTicket(ctx, TicketDownload, "t1")
		if err != nil || id != 7 || name != "out/app.apk" {
			t.Errorf("TakeTicket = %d %q %v", id, name, err)
		}
		if _, _, err := s.TakeTicket(ctx, TicketDownload, "t1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a ticket taken twice: %v", err)
		}
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM tickets WHERE hash = 't1'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("a ticket kept in clear: %d, %v", n, err)
		}
	})
}
